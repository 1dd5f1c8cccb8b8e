"""External parsers: a separate process that parses lines, reached over ZeroMQ.

``parser = zmq:tcp://host:port``.  Rill connects a DEALER socket to the endpoint; the parser
process binds a ROUTER (or REP) socket there.

Wire format (one request per line, JSON, UTF-8):

    request  frames: [b"", {"id": 7, "line": "<the line>", "received": "2026-11-26T02:21:33.123Z"}]
    reply    frames: [b"", {"id": 7, "datetime": "2026-11-26T02:21:33.000Z", ...fields}]

- The empty first frame is the REQ/REP envelope delimiter, so a plain REP server works
  (one request at a time); a ROUTER server may answer many at once and in any order.
- ``line`` is the line as text; bytes that are not UTF-8 arrive as lone surrogates
  ``\\udc80``-``\\udcff`` (Python's ``surrogateescape``; ``json.loads`` gives them back).
- The reply must echo ``id`` and carry ``datetime`` (ISO 8601; without a zone it is UTC).
  Every other key is a field of the record, except ``contents`` (always the line Rill
  sent: the mirror is line-exact, a parser cannot rewrite it) and the keys of Rill's
  messages (``host``, ``path``, ``generation``, ``offset``, ``line``, ``parser_fault``),
  which are ignored.  A reply may set ``"parse_error": true``.

A reply that is late (after ``timeout`` seconds), is not JSON, lacks ``id`` or has no usable
``datetime`` is a fault: the line gets its fallback (``raw``) record with ``"parser_fault"``
set to ``timeout``, ``garbage``, ``overload`` (too many lines in flight), ``reset`` (in
flight when the connection was replaced) or ``closed``.  Faults are counted (``faults``,
``fault_counts``) and logged at most once per ``log_interval``.  The tap is never stalled:
each line waits at most ``timeout``.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from rill.parsers._time import ISO_RE, TimeResolver, format_ms
from rill.parsers.base import RESERVED_FIELDS, LineParser, Record, receipt_stamp
from rill.parsers.jsonlines import loads_strict


# A reply may flag parse_error; it may not set Rill's own keys or spoof the message's envelope.
_IGNORED_REPLY_KEYS = (RESERVED_FIELDS - {"parse_error"}) | {"id"}


class Channel(Protocol):
    """What the parser needs of a socket: send frames, be shut down."""

    def send(self, frames: list[bytes]) -> None: ...

    def shutdown(self) -> None: ...


Connect = Callable[[str, Callable[[list[bytes]], None]], Channel]


class _Pending:
    __slots__ = ("rid", "line", "received", "fallback", "deferred", "deadline", "result")

    def __init__(self, rid: int, line: bytes, received: float, fallback: LineParser, deadline: float):
        self.rid = rid
        self.line = line
        self.received = received
        self.fallback = fallback
        self.deferred: Deferred[Record] = Deferred()
        self.deadline = deadline
        self.result: Record | None = None


class ExternalParser:
    """A client of one external parser process; results come back in the order asked.

    DEALER with request ids, not REQ: a REQ socket allows one request in flight (so a
    round trip per line caps a tap at a few thousand lines/s) and is stuck for good once a
    reply is lost.  With ids, replies may come in any order and a late one is just dropped.
    The socket is still replaced after a timeout, so requests queued for a dead or wedged
    peer are discarded (linger 0) instead of flooding it when it returns, and a half-dead
    TCP connection is re-dialled.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: str,
        reactor: IReactorTime,
        timeout: float = 1.0,
        *,
        high_water_mark: int = 1000,
        log_interval: float = 10.0,
        connect: Connect | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.clock = reactor
        self.timeout = timeout
        self.max_in_flight = high_water_mark
        self.log_interval = log_interval
        self.faults = 0
        self.fault_counts: Counter[str] = Counter()
        self.reconnects = 0
        self._connect = connect or ZmqConnector(reactor, high_water_mark)
        self._queue: deque[_Pending] = deque()  # every line not yet handed back, in order
        self._in_flight: dict[int, _Pending] = {}  # sent and unanswered, oldest first
        self._next_id = 0
        self._timer: IDelayedCall | None = None
        self._log_call: IDelayedCall | None = None
        self._next_log_at = 0.0
        self._unlogged: Counter[str] = Counter()
        self._failing = False
        self._draining = False
        self._closed = False
        self._times = TimeResolver()
        self._channel: Channel | None = self._connect(endpoint, self._message_received)

    # ------------------------------------------------------------------ requests

    def parse(self, line: bytes, received: float, fallback: LineParser) -> Deferred[Record]:
        """The record for ``line``; fires after every earlier line's, never fails."""
        self._next_id += 1
        entry = _Pending(self._next_id, line, received, fallback, self.clock.seconds() + self.timeout)
        self._queue.append(entry)
        if self._closed:
            self._fault(entry, "closed")
        elif len(self._in_flight) >= self.max_in_flight:
            self._fault(entry, "overload")
        else:
            self._send(entry)
        self._drain()
        return entry.deferred

    def _send(self, entry: _Pending) -> None:
        request = {"id": entry.rid, "line": _text(entry.line), "received": receipt_stamp(entry.received)}
        try:
            assert self._channel is not None
            self._channel.send([b"", json.dumps(request).encode("ascii")])
        except Exception:  # noqa: BLE001 - zmq.Again at the high-water mark, or a closed socket
            self._fault(entry, "overload")
            return
        self._in_flight[entry.rid] = entry
        if self._timer is None:
            self._timer = self.clock.callLater(self.timeout, self._expire)

    # ------------------------------------------------------------------ replies

    def _message_received(self, frames: list[bytes]) -> None:
        try:
            reply = loads_strict(frames[-1])
        except Exception:  # noqa: BLE001 - not JSON, not UTF-8, nested too deep: garbage all the same
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("id"), int):
            self._garbage_without_id()
            return
        entry = self._in_flight.pop(reply["id"], None)
        if entry is None:
            return  # the answer to a line that already went out raw
        if not self._in_flight and self._timer is not None:
            self._timer.cancel()  # nothing left to time out: leave no timer behind
            self._timer = None
        record = self._record(entry, reply)
        if record is None:
            self._fault(entry, "garbage")
        else:
            entry.result = record
            self._recovered()
        self._drain()

    def _garbage_without_id(self) -> None:
        # A reply we cannot match: charge it to the oldest line in flight.  A REP server
        # answers in order, so that is its line; a ROUTER server's line would time out anyway.
        if self._in_flight:
            rid = next(iter(self._in_flight))
            self._fault(self._in_flight.pop(rid), "garbage")
            self._drain()
        else:
            self._count("garbage")

    def _record(self, entry: _Pending, reply: dict[str, Any]) -> Record | None:
        stamp = reply.get("datetime")
        m = ISO_RE.fullmatch(stamp) if isinstance(stamp, str) else None
        if m is None:
            return None
        try:
            ms = self._times.iso(*m.groups())
            record = {"datetime": format_ms(ms), "contents": _text(entry.line)}
        except (ValueError, OverflowError, OSError):
            return None
        for key, value in reply.items():
            if key not in _IGNORED_REPLY_KEYS:
                record[key] = value
        return record

    # ------------------------------------------------------------------ faults

    def _expire(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        expired = [e for e in self._in_flight.values() if e.deadline <= now]
        if expired:
            for entry in expired:
                self._fault(self._in_flight.pop(entry.rid), "timeout")
            self._reset()
        if self._in_flight:
            head = next(iter(self._in_flight.values()))
            self._timer = self.clock.callLater(max(0.0, head.deadline - now), self._expire)
        self._drain()

    def _reset(self) -> None:
        """Replace the socket; what was in flight on the old one can no longer come back."""
        for entry in list(self._in_flight.values()):
            self._fault(entry, "reset")
        self._in_flight.clear()
        if self._channel is not None:
            self._channel.shutdown()
            self.reconnects += 1
            self._channel = self._connect(self.endpoint, self._message_received)

    def _fault(self, entry: _Pending, kind: str) -> None:
        record = entry.fallback.parse(entry.line, entry.received)
        record["parser_fault"] = kind
        entry.result = record
        self._count(kind)

    def _count(self, kind: str) -> None:
        self.faults += 1
        self.fault_counts[kind] += 1
        self._unlogged[kind] += 1
        self._failing = True
        self._log_faults()

    def _log_faults(self) -> None:
        if self._closed:
            return  # close() wrote the last summary; a stopped tap needs no timers
        now = self.clock.seconds()
        if now >= self._next_log_at:
            self._write_fault_log()
            self._next_log_at = now + self.log_interval
        elif self._log_call is None:
            self._log_call = self.clock.callLater(self._next_log_at - now, self._log_later)

    def _log_later(self) -> None:
        self._log_call = None
        if self._unlogged:
            self._write_fault_log()
            self._next_log_at = self.clock.seconds() + self.log_interval

    def _write_fault_log(self) -> None:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self._unlogged.items()))
        self.log.warn(
            "external parser {endpoint}: {count} lines published raw ({kinds})",
            endpoint=self.endpoint,
            count=sum(self._unlogged.values()),
            kinds=kinds,
        )
        self._unlogged.clear()

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            self.log.info("external parser {endpoint} is answering again", endpoint=self.endpoint)

    # ------------------------------------------------------------------ order, shutdown

    def _drain(self) -> None:
        """Hand back finished records from the front of the queue, in order."""
        if self._draining:
            return  # a callback asked for another line; the outer loop carries on
        self._draining = True
        try:
            while self._queue and self._queue[0].result is not None:
                entry = self._queue.popleft()
                entry.deferred.callback(entry.result)  # type: ignore[arg-type]  # not None: checked above
        finally:
            self._draining = False

    def close(self) -> None:
        """Shut the socket and timers; lines still waiting go out raw (``closed``)."""
        self._closed = True
        for entry in self._in_flight.values():
            self._fault(entry, "closed")
        self._in_flight.clear()
        for call in (self._timer, self._log_call):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._log_call = None
        if self._unlogged:
            self._write_fault_log()
        if self._channel is not None:
            self._channel.shutdown()
            self._channel = None
        close_connector = getattr(self._connect, "close", None)
        if close_connector is not None:
            close_connector()
        self._drain()


def _text(line: bytes) -> str:
    return line.decode("utf-8", "surrogateescape")


class ZmqConnector:
    """Dials an endpoint with a txzmq DEALER socket in ``reactor``; owns the ZeroMQ context."""

    def __init__(self, reactor: IReactorTime, high_water_mark: int) -> None:
        from txzmq import ZmqFactory

        self.factory = ZmqFactory()
        self.factory.reactor = reactor
        self.factory.lingerPeriod = 0  # a replaced socket drops what it holds for a dead peer
        self.high_water_mark = high_water_mark

    def __call__(self, endpoint: str, on_message: Callable[[list[bytes]], None]) -> Channel:
        from txzmq import ZmqEndpoint, ZmqEndpointType

        dealer = _dealer_class()(self.factory, on_message, self.high_water_mark)
        dealer.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, endpoint)])
        return dealer  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close every socket and terminate the context."""
        self.factory.shutdown()


@functools.cache
def _dealer_class() -> type:
    # txzmq is imported late: importing it installs the default global reactor, which must
    # not happen before twistd (or a test) has chosen one.
    from txzmq.router_dealer import ZmqDealerConnection

    class Dealer(ZmqDealerConnection):  # type: ignore[misc]
        def __init__(self, factory: Any, on_message: Callable[[list[bytes]], None], hwm: int) -> None:
            self.on_message = on_message
            self.highWaterMark = hwm  # txzmq's default, 0, means unlimited memory
            super().__init__(factory)

        def messageReceived(self, message: list[bytes]) -> None:
            self.on_message(message)

    return Dealer
