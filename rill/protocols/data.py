"""The data PUB socket: one multipart message ``[topic, json]`` per line.

Topics are ``line/<host>/<path>`` (so SUB prefix filters select a host or a
file) and ``ping/<host>``.  The send high-water mark is finite: a slow
subscriber loses messages, Rill's memory stays bounded.
"""

from __future__ import annotations

import json
from typing import Any

import zmq
from twisted.application import service
from twisted.logger import Logger
from txzmq import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPubConnection

log = Logger()


def line_topic(host: str, path: str) -> bytes:
    return f"line/{host}/{path}".encode("utf-8", "surrogateescape")


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)  # enum arithmetic per message costs more than the send
_LAST = int(zmq.NOBLOCK)


def encode(message: dict[str, Any]) -> bytes:
    """JSON, ASCII-only: undecodable bytes travel as ``\\udcXX`` escapes (surrogateescape)."""
    return _ENCODER.encode(message).encode("ascii")


class _Pub(ZmqPubConnection):
    def __init__(self, factory: ZmqFactory, endpoint: ZmqEndpoint, hwm: int) -> None:
        self.highWaterMark = hwm  # txzmq's default 0 means unlimited memory
        super().__init__(factory, endpoint)


class DataPublisher(service.Service):
    """Owns the PUB socket bound at ``endpoint``."""

    name = "publish"

    def __init__(self, factory: ZmqFactory, endpoint: str, hwm: int = 10000) -> None:
        self.factory = factory
        self.endpoint = endpoint
        self.hwm = hwm
        self._pub: _Pub | None = None
        self.sent = 0
        self.failed = 0

    def startService(self) -> None:
        super().startService()
        self._pub = _Pub(self.factory, ZmqEndpoint(ZmqEndpointType.bind, self.endpoint), self.hwm)
        log.info("publishing lines on {endpoint}", endpoint=self.bound_endpoint)

    def stopService(self) -> None:
        super().stopService()
        if self._pub is not None:
            self._pub.shutdown()
            self._pub = None

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound (useful when the port was ``*`` or 0)."""
        if self._pub is None:
            return self.endpoint
        return self._pub.socket.getsockopt(zmq.LAST_ENDPOINT).decode()

    def publish(self, topic: bytes, message: dict[str, Any]) -> None:
        if self._pub is None:
            return
        try:
            socket = self._pub.socket
            socket.send(topic, _MORE)
            socket.send(encode(message), _LAST)
            self.sent += 1
        except zmq.ZMQError as e:  # PUB drops at the HWM silently; anything else is counted
            self.failed += 1
            log.debug("publish failed: {error}", error=e)
