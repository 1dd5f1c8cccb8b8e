"""A real pyzmq DEALER client of the signalling protocol, for tests.

Used from the reactor thread (``request`` polls the socket between reactor
turns, with a deadline) or from a worker thread (``request_blocking``).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer

from rill.protocols import signalling as sig
from rill.protocols.signalling import format_datetime
from tests.helpers import wait_for


class SignallingClient:
    """One DEALER socket; ``req_style`` puts the REQ empty delimiter before each payload."""

    def __init__(self, endpoint: str, *, req_style: bool = False, context: zmq.Context | None = None) -> None:
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.req_style = req_style
        self.client_id = str(uuid.uuid4())

    def make(self, command: str, sent: float | None = None, **fields: Any) -> dict[str, Any]:
        """A well-formed request for ``command``, dated ``sent`` (default: now)."""
        return {
            "unique_id": str(uuid.uuid4()),
            "client_id": self.client_id,
            "datetime": format_datetime(time.time() if sent is None else sent),
            "command": command,
            **fields,
        }

    def send(self, message: dict[str, Any] | bytes) -> None:
        payload = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.send_frames([payload])

    def send_frames(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(([b""] if self.req_style else []) + frames)

    def receive(self, timeout: float = 15.0) -> defer.Deferred[list[bytes]]:
        """The next message, polled from the reactor thread."""

        def ready() -> list[bytes] | None:
            return self.socket.recv_multipart() if self.socket.poll(0) else None

        return wait_for(ready, timeout, "a reply on the signalling socket", poll=0.005)

    @defer.inlineCallbacks
    def request(self, command: str, **fields: Any) -> defer.Generator[defer.Deferred[Any], Any, dict[str, Any]]:
        """Send ``command`` and return its reply (which must echo the ids)."""
        message = self.make(command, **fields)
        self.send(message)
        frames = yield self.receive()
        return self.check(message, frames)

    def request_blocking(self, command: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        """As ``request``, blocking: for worker threads."""
        message = self.make(command, **fields)
        self.send(message)
        if not self.socket.poll(int(timeout * 1000)):
            raise AssertionError(f"no reply to {command} within {timeout}s")
        return self.check(message, self.socket.recv_multipart())

    def check(self, message: dict[str, Any], frames: list[bytes]) -> dict[str, Any]:
        expected_frames = 2 if self.req_style else 1
        assert len(frames) == expected_frames, frames
        assert not self.req_style or frames[0] == b"", frames
        reply = json.loads(frames[-1])
        assert (reply["unique_id"], reply["client_id"]) == (message["unique_id"], message["client_id"]), reply
        return reply

    def close(self) -> None:
        self.socket.close(linger=0)


# -- fuzzing (acceptance 5) ------------------------------------------------------

_FIELDS = ["unique_id", "client_id", "datetime", "command", "session_id", "contents", "value", "host"]
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.sampled_from(["NOW", "STALE"]))


def _frames(commands: list[str]) -> st.SearchStrategy[list[object]]:
    """Raw frames and JSON objects that are near misses of (or sometimes exactly) valid requests."""
    plausible = st.dictionaries(st.sampled_from(_FIELDS), _VALUES | st.sampled_from(commands))
    valid = st.fixed_dictionaries(
        {"unique_id": st.text(min_size=1), "client_id": st.text(min_size=1), "datetime": st.just("NOW"),
         "command": st.sampled_from(commands)},
        optional={"session_id": st.text() | _VALUES, "contents": st.text() | _VALUES, "host": _VALUES},
    )
    frame = st.one_of(st.binary(max_size=64), st.just(b""), plausible, valid)
    return st.one_of(valid.map(lambda request: [request]), st.lists(frame, min_size=1, max_size=4))


def _materialize(frame: object) -> bytes:
    """A generated frame as bytes, the NOW/STALE placeholders dated at send time."""
    if isinstance(frame, bytes):
        return frame
    dates = {"NOW": format_datetime(time.time()), "STALE": format_datetime(time.time() - 3600)}
    return json.dumps({k: dates.get(v, v) if isinstance(v, str) else v for k, v in frame.items()}).encode()  # type: ignore[union-attr]


def fuzz_router(endpoint: str, commands: list[str], max_examples: int) -> int:
    """Throw Hypothesis-generated frames at a ROUTER (blocking: run it in a thread).

    Asserts that every example gets exactly one reply, on the envelope it was
    sent with, and that the reply is well formed.  Returns the examples run.
    """
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    seen = [0]

    @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(_frames(commands))
    def one(raw: list[object]) -> None:
        frames = [_materialize(frame) for frame in raw]
        socket.send_multipart(frames)
        assert socket.poll(30_000), f"no reply to {frames!r}"
        reply_frames = socket.recv_multipart()
        envelope, _ = sig.split_envelope([b"identity", *frames])
        assert reply_frames[:-1] == envelope[1:], (frames, reply_frames)
        assert sig.is_well_formed_reply(json.loads(reply_frames[-1])), reply_frames
        assert socket.poll(0) == 0, "more than one reply"
        seen[0] += 1

    try:
        one()
    finally:
        socket.close()
        context.term()
    return seen[0]
