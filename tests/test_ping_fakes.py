"""Fakes for rill.ping's unit tests: sockets that record and replay, on a MemoryReactorClock.

No tests here; tests.test_ping uses them.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque
from typing import Any, cast

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from rill import icmp
from rill.ping import SO_TIMESTAMPNS, PingService, SocketFactory
from tests.test_icmp import ipv4_packet

ID = 0x5151


class FakeSocket:
    """Records what is sent; hands back queued datagrams, then EAGAIN."""

    def __init__(self, family: int, kind: int, protocol: int) -> None:
        self.family, self.kind, self.protocol = family, kind, protocol
        self.sent: list[tuple[bytes, tuple]] = []
        self.inbox: deque[tuple[bytes, tuple, list]] = deque()
        self.options: dict[tuple[int, int], object] = {}
        self.send_error: OSError | None = None
        self.closed = False

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def setsockopt(self, level: int, name: int, value: object) -> None:
        self.options[(level, name)] = value

    def fileno(self) -> int:
        return 1000 + self.family

    def sendto(self, data: bytes, address: tuple) -> int:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append((data, address))
        return len(data)

    def recvmsg(self, size: int, ancillary_size: int) -> tuple[bytes, list, int, tuple]:
        if not self.inbox:
            raise BlockingIOError(errno.EAGAIN, "empty")
        data, source, ancillary = self.inbox.popleft()
        return data, ancillary, 0, source

    def close(self) -> None:
        self.closed = True


class FakeSockets:
    """A socket factory refusing the socket kinds in ``refuse`` with EPERM/EACCES."""

    def __init__(self, refuse: tuple[int, ...] = ()) -> None:
        self.refuse = refuse
        self.made: dict[int, FakeSocket] = {}

    def __call__(self, family: int, kind: int, protocol: int) -> FakeSocket:
        if kind in self.refuse:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.made[family] = FakeSocket(family, kind, protocol)
        return self.made[family]


class ServiceTestCase(SynchronousTestCase):
    def make(self, targets: list[tuple[str, str]], refuse: tuple[int, ...] = (),
             **kwargs: Any) -> PingService:
        self.reactor = MemoryReactorClock()
        self.sockets = FakeSockets(refuse)
        self.published: list[tuple[bytes, dict]] = []
        self.changes: list[tuple[str, bool]] = []
        kwargs.setdefault("interval", 1.0)
        service = PingService(targets, publish=lambda t, m: self.published.append((t, m)),
                              reactor=self.reactor,
                              socket_factory=cast(SocketFactory, self.sockets),
                              identifier=ID, **kwargs)
        service.add_observer(lambda host, up: self.changes.append((host, up)))
        service.startService()
        self.addCleanup(self.stop, service)
        return service

    def stop(self, service: PingService) -> None:
        if service.running:
            service.stopService()
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(set(self.reactor.readers), set())

    def answer(self, family: int = socket.AF_INET, *, identifier: int | None = None,
               index: int = -1, source: str | None = None, delay: float = 0.0,
               kernel_time: float | None = None) -> None:
        """Reply to the ``index``-th request sent, as the kernel would hand it to the socket."""
        sock = self.sockets.made[family]
        request, address = sock.sent[index]
        echo = icmp.parse_echo(request, family)
        assert echo is not None
        reply = icmp.build_echo_reply(echo.identifier if identifier is None else identifier,
                                      echo.sequence, echo.payload, family)
        source = source or address[0]
        if sock.kind == socket.SOCK_RAW and family == socket.AF_INET:
            reply = ipv4_packet(source, "127.0.0.1", reply)
        self.reactor.advance(delay)
        self.deliver(sock, reply, source, kernel_time)

    def deliver(self, sock: FakeSocket, data: bytes, source: str,
                kernel_time: float | None = None) -> None:
        ancillary = []
        if kernel_time is not None:  # as SO_TIMESTAMPNS hands it over: a struct timespec
            whole = int(kernel_time)
            timespec = struct.pack("=qq", whole, round((kernel_time - whole) * 1e9))
            ancillary.append((socket.SOL_SOCKET, SO_TIMESTAMPNS, timespec))
        sock.inbox.append((data, (source, 0), ancillary))
        for reader in self.reactor.getReaders():
            if reader.fileno() == sock.fileno():
                reader.doRead()

    def advance_to(self, moment: float, step: float = 0.01) -> None:
        """Advance the clock in small steps to just after ``moment`` (floats drift)."""
        while self.reactor.seconds() < moment:
            self.reactor.advance(min(step, moment - self.reactor.seconds()) + 1e-7)
