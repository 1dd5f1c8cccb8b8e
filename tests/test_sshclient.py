"""The SSH connection's keepalive deadline, on a fake clock (the real silent network is in the chaos test)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from rill.config import HostConfig
from rill.sshclient import SECOND_LOOK, RillConnection


class FakeSocket:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class FakeTransport:
    """What RillConnection uses of its SSH transport."""

    def __init__(self, clock: task.Clock) -> None:
        self.last_received = clock.seconds()
        self.transport = FakeSocket()
        self.failure: Any = None

    def connection_ready(self, connection: RillConnection) -> None:
        pass


class KeepaliveTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        host = HostConfig(name="h", address="127.0.0.1", keepalive_interval=1.0, keepalive_count=3)
        self.connection = RillConnection(host, self.clock)
        self.transport = FakeTransport(self.clock)
        self.connection.transport = self.transport  # type: ignore[assignment]
        self.requests: list[bytes] = []
        self.connection.sendGlobalRequest = self._request  # type: ignore[method-assign]
        self.connection.serviceStarted()
        self.addCleanup(self.connection.serviceStopped)

    def _request(self, name: bytes, data: bytes, wantReply: int = 0) -> defer.Deferred[Any]:
        self.requests.append(name)
        return defer.Deferred()

    def test_silence_drops_the_connection(self) -> None:
        """Nothing received for interval x count: keepalives went out, then the connection is aborted."""
        self.clock.pump([1.0, 1.0])
        self.assertEqual(self.requests, [b"keepalive@openssh.com"] * 2)
        self.assertFalse(self.transport.transport.aborted)
        self.clock.advance(1.0)
        self.assertTrue(self.transport.transport.aborted)
        self.assertEqual(self.transport.failure.kind, "timeout")

    def test_traffic_keeps_it(self) -> None:
        for _ in range(20):
            self.clock.advance(0.5)
            self.transport.last_received = self.clock.seconds()
        self.assertFalse(self.transport.transport.aborted)
        self.assertEqual(self.requests, [])

    def test_late_check_looks_again_after_reading(self) -> None:
        """A check the busy reactor ran late does not count the time it could not read as silence."""
        self.clock.advance(5.0)  # the reactor was blocked for 5 s: the 1 s check runs 4 s late
        self.assertFalse(self.transport.transport.aborted)
        self.transport.last_received = self.clock.seconds()  # the bytes that waited in the socket
        self.clock.advance(SECOND_LOOK)
        self.assertFalse(self.transport.transport.aborted)
        self.clock.pump([1.0] * 5)  # and real silence is still caught
        self.assertTrue(self.transport.transport.aborted)

    def test_late_check_with_nothing_waiting(self) -> None:
        """The second look, on time, drops a connection that really went silent."""
        self.clock.advance(5.0)
        self.assertFalse(self.transport.transport.aborted)
        self.clock.advance(SECOND_LOOK)
        self.assertTrue(self.transport.transport.aborted)
