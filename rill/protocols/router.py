"""A ZeroMQ ROUTER endpoint speaking the seed's signalling protocol.

Frames in: ``[identity, (routing frames..., empty delimiter — REQ clients), payload]``.
The reply goes out with the same envelope, so a REQ client, a DEALER that
emulates REQ and a plain DEALER each get a reply they can read, and every reply
reaches the identity that sent the request however many clients talk at once.

Every request gets exactly one reply.  Malformed JSON, non-object JSON, missing
or wrongly typed fields, stale or future-dated requests, unknown commands,
oversized messages and wrong numbers of frames get a ``failed`` reply with the
reason; each is logged once, rate limited per kind.  A message with no
identity (impossible on a ROUTER) or addressed to a client that has gone away
is dropped and logged.

Two size limits: ``max_message_size`` (default 256 KiB) is checked here and
earns a ``failed`` reply; ``ZMQ_MAXMSGSIZE`` is set to four times that, above
which libzmq drops the sender's connection without delivering anything (no
reply is possible, and memory stays bounded).

High-water marks are finite (txzmq's default is 0, unlimited), and sends use
the factory's reactor rather than the global one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import zmq
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from txzmq import ZmqFactory
from txzmq.connection import ZmqConnection

from rill.protocols import signalling
from rill.protocols.signalling import RequestError
from rill.ratelimit import RateLimitedLog

Handler = Callable[[dict[str, Any]], "dict[str, Any] | defer.Deferred[dict[str, Any]]"]

DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024
DEFAULT_HIGH_WATER_MARK = 1000
READ_BATCH = 64


class ReactorConnection(ZmqConnection):
    """A txzmq connection that schedules on its factory's reactor and reads in batches.

    txzmq's ``send`` reaches for the global reactor and its ``doRead`` drains
    the socket in one go (starving the reactor under a flood); these do neither.
    """

    highWaterMark = DEFAULT_HIGH_WATER_MARK

    def send(self, message: list[bytes] | bytes) -> None:
        self.socket.send_multipart([message] if isinstance(message, bytes) else message, zmq.NOBLOCK)
        if self.read_scheduled is None:
            self.read_scheduled = self.factory.reactor.callLater(0, self.doRead)

    def doRead(self) -> None:
        if self.read_scheduled is not None:
            if not self.read_scheduled.called:
                self.read_scheduled.cancel()
            self.read_scheduled = None
        for _ in range(READ_BATCH):
            if self.factory is None or not self.socket.get(zmq.EVENTS) & zmq.POLLIN:
                return
            try:
                message = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.messageReceived(message)
        if self.factory is not None:
            self.read_scheduled = self.factory.reactor.callLater(0, self.doRead)

    def messageReceived(self, message: list[bytes]) -> None:
        pass


class _RouterConnection(ReactorConnection):
    socketType = zmq.ROUTER
    log = Logger()

    def __init__(self, factory: ZmqFactory, on_message: Callable[[list[bytes]], None]) -> None:
        self._on_message = on_message
        super().__init__(factory)

    def messageReceived(self, message: list[bytes]) -> None:
        try:
            self._on_message(message)
        except Exception:  # noqa: BLE001 -- a bug must not take the socket out of the reactor
            self.log.failure("signalling ROUTER: unexpected error handling a message")


class RouterEndpoint(Service):
    """A ROUTER bound to ``endpoint``, dispatching JSON requests to ``handlers`` by ``command``.

    A handler takes the validated request and returns the reply's own fields (a
    dict, or a Deferred of one); it raises :class:`RequestError` for a
    ``failed`` reply.  Any other exception becomes a ``failed`` reply saying
    "internal error" and is logged with its traceback.
    """

    log = Logger()

    def __init__(
        self,
        factory: ZmqFactory,
        endpoint: str,
        handlers: Mapping[str, Handler],
        max_request_age: float,
        clock: IReactorTime,
        *,
        future_skew: float = signalling.DEFAULT_FUTURE_SKEW,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        high_water_mark: int = DEFAULT_HIGH_WATER_MARK,
    ) -> None:
        self.factory = factory
        self.endpoint = endpoint
        self.handlers = dict(handlers)
        self.max_request_age = max_request_age
        self.clock = clock
        self.future_skew = future_skew
        self.max_message_size = max_message_size
        self.high_water_mark = high_water_mark
        self.bound_endpoint: str | None = None
        self.counts = {"requests": 0, "ok": 0, "failed": 0, "dropped": 0}
        self._connection: _RouterConnection | None = None
        self._rate_limited = RateLimitedLog(self.log, clock)

    # -- lifecycle -----------------------------------------------------------

    def startService(self) -> None:
        connection = _RouterConnection(self.factory, self._message_received)
        try:
            socket = connection.socket
            socket.setsockopt(zmq.MAXMSGSIZE, 4 * self.max_message_size)
            socket.setsockopt(zmq.SNDHWM, self.high_water_mark)
            socket.setsockopt(zmq.RCVHWM, self.high_water_mark)
            socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            socket.bind(self.endpoint)
        except zmq.ZMQError as e:
            connection.shutdown()
            raise ValueError(f"cannot bind the signalling ROUTER to {self.endpoint}: {e}") from None
        self.bound_endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._connection = connection
        super().startService()
        self.log.info("signalling ROUTER listening on {endpoint}", endpoint=self.bound_endpoint)

    def stopService(self) -> None:
        super().stopService()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.shutdown()

    # -- requests ------------------------------------------------------------

    def _message_received(self, frames: list[bytes]) -> None:
        self.counts["requests"] += 1
        envelope, body = signalling.split_envelope(frames)
        request: object = None
        try:
            request = signalling.parse_json_object(signalling.body_payload(body, self.max_message_size))
            handler = self._handler_for(signalling.validate_request(request, *self._freshness()))
        except RequestError as e:
            self._rate_limited.warn("bad-request", "rejected a request: {reason}", reason=e.reason)
            self._send(envelope, signalling.failed_reply(request, self.clock.seconds(), e.reason, e.fields))
            return
        d = defer.maybeDeferred(handler, request)
        d.addCallback(self._succeeded, request)
        d.addErrback(self._failed, request)
        d.addCallback(lambda reply: self._send(envelope, reply))
        d.addErrback(lambda f: self._rate_limited.warn("internal", "reply not sent", failure=f))

    def _freshness(self) -> tuple[float, float, float]:
        return self.clock.seconds(), self.max_request_age, self.future_skew

    def _handler_for(self, request: dict[str, Any]) -> Handler:
        handler = self.handlers.get(request["command"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            raise RequestError(f"unknown command {request['command']!r}; this endpoint knows: {known}")
        return handler

    def _succeeded(self, fields: object, request: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(fields, dict):
            raise TypeError(f"handler for {request['command']!r} returned {type(fields).__name__}, not dict")
        return signalling.ok_reply(request, self.clock.seconds(), fields)

    def _failed(self, failure: Failure, request: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.seconds()
        if failure.check(RequestError):
            error = failure.value
            return signalling.failed_reply(request, now, error.reason, error.fields)
        self._rate_limited.warn(
            "handler:" + request["command"], "handler for {command} failed", failure=failure, command=request["command"]
        )
        reason = f"internal error in {request['command']}: {failure.getErrorMessage()}"
        return signalling.failed_reply(request, now, reason)

    def _send(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        connection = self._connection
        if not envelope or connection is None:
            self.counts["dropped"] += 1
            return
        try:
            connection.send([*envelope, signalling.encode_reply(reply)])
        except zmq.ZMQError as e:
            self.counts["dropped"] += 1
            self._rate_limited.warn("undeliverable", "reply dropped, client unreachable: {error}", error=str(e))
            return
        self.counts[reply["status"]] += 1
