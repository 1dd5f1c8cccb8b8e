"""The telnet manhole: a real telnet login, an expression read from the service tree."""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.application.service import MultiService
from twisted.conch.telnet import ECHO, LINEMODE, NAWS, SGA, TelnetProtocol, TelnetTransport
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import ClientFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txzmq import ZmqFactory

from rill.cli.status import ask_status
from rill.manhole import loopback_endpoint, manhole_service, namespace
from rill.protocols.router import RouterEndpoint
from rill.status import status_handler
from tests.helpers import wait_for, with_timeout


class FakeTap:
    """A FileTap's public face: the attributes status rows are made of."""

    def __init__(self, host: str, path: str, offset: int) -> None:
        self.host, self.path, self.offset = host, path, offset
        self.label = f"{host}:{path}"
        self.generation, self.remote_size, self.state = 1, offset, "streaming"

    def status(self) -> dict[str, Any]:
        return {"host": self.host, "path": self.path, "tap": "t", "state": self.state, "generation": self.generation,
                "offset": self.offset, "remote_size": self.remote_size, "lag_bytes": 0, "lag_seconds": 0.0,
                "lines": self.offset // 10, "bytes": self.offset, "streams": 1, "generations_started": 1,
                "reconnects": 0, "last_error": None, "gaps": 0}


class FakeRill(MultiService):
    """The root service's surface the manhole and status use: hosts, store, file_taps(), status()."""

    def __init__(self, taps: list[FakeTap]) -> None:
        super().__init__()
        self.setName("rill")
        self.taps = taps
        self.hosts = {tap.host: f"<HostTap {tap.host}>" for tap in taps}
        self.store = "<MirrorStore>"

    def file_taps(self) -> list[FakeTap]:
        return list(self.taps)

    def status(self) -> dict[str, Any]:
        return {"datetime": "2026-11-26T03:00:00.000Z", "taps": [t.status() for t in self.taps],
                "hosts": {h: {"state": "connected", "last_error": None} for h in self.hosts},
                "publish": {"endpoint": "tcp://127.0.0.1:1", "sent": 0, "failed": 0}}


class TelnetClient(TelnetProtocol):
    """Collects what the server sends; agrees to the options the manhole negotiates."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def enableRemote(self, option: bytes) -> bool:
        return option in (ECHO, SGA)

    def enableLocal(self, option: bytes) -> bool:
        return option in (LINEMODE, NAWS, SGA)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)

    def text(self) -> str:
        return self.received.decode("utf-8", "replace")


def _connect(port: int) -> defer.Deferred[TelnetClient]:
    factory = ClientFactory()
    factory.protocol = lambda: TelnetTransport(TelnetClient)  # type: ignore[assignment]
    d = TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    return d.addCallback(lambda transport: transport.protocol)


class ManholeTests(TestCase):
    def setUp(self) -> None:
        self.rill = FakeRill([FakeTap("web1", "/var/log/syslog", 123457), FakeTap("db1", "/var/log/auth.log", 99)])
        self.passwd = self.mktemp()
        with open(self.passwd, "w") as f:
            f.write("admin:s3cret\n")
        os.chmod(self.passwd, 0o600)

    @defer.inlineCallbacks
    def start_manhole(self) -> defer.Generator[Any, Any, int]:
        service = manhole_service(self.rill, "tcp:0", self.passwd)
        service.startService()
        self.addCleanup(service.stopService)
        # manhole_tap builds a strports service; its port is only reachable through this attribute
        # (observed through a copy: stopService needs the original's result).
        listening: defer.Deferred[Any] = defer.Deferred()
        service.services[0]._waitingForPort.addCallback(lambda p: (listening.callback(p), p)[1])
        port = yield with_timeout(listening, 5, "the manhole port")
        self.assertEqual(port.getHost().host, "127.0.0.1")
        return port.getHost().port

    @defer.inlineCallbacks
    def login(self, password: str) -> defer.Generator[Any, Any, TelnetClient]:
        port = yield self.start_manhole()
        client = yield with_timeout(_connect(port), 5, "a telnet connection")
        self.addCleanup(lambda: self.disconnect(client))
        yield wait_for(lambda: b"Username: " in client.received, 10, "the Username prompt")
        client.transport.write(b"admin\n")
        yield wait_for(lambda: b"Password: " in client.received, 10, "the Password prompt")
        client.transport.write(password.encode() + b"\n")
        return client

    def disconnect(self, client: TelnetClient) -> defer.Deferred[None]:
        client.transport.loseConnection()
        return with_timeout(client.lost, 5, "the telnet connection to close")

    @defer.inlineCallbacks
    def evaluate(self, client: TelnetClient, expression: str) -> defer.Generator[Any, Any, str]:
        """``expression``'s value, between markers that the echo of the input does not contain."""
        start = len(client.received)
        client.transport.write(f'"{{0}}{{1}}{{0}}".format("@@", ({expression}))\n'.encode())
        pattern = re.compile(r'@@([^"\r\n]*?)@@')
        match = yield wait_for(lambda: pattern.search(client.received[start:].decode("utf-8", "replace")), 10,
                               f"the value of {expression}")
        return match.group(1)

    @defer.inlineCallbacks
    def test_offset_over_telnet(self) -> None:
        """With the right password, taps[0].offset evaluates to the tap's offset."""
        client = yield self.login("s3cret")
        yield wait_for(lambda: b">>> " in client.received, 10, "the Python prompt")
        value = yield self.evaluate(client, "taps[0].offset")
        self.assertEqual(int(value), 123457)

    @defer.inlineCallbacks
    def test_namespace_holds_the_tree(self) -> None:
        """rill, hosts, store and status are in the namespace; taps follows the service's taps."""
        client = yield self.login("s3cret")
        yield wait_for(lambda: b">>> " in client.received, 10, "the Python prompt")
        value = yield self.evaluate(client, "rill.name, sorted(hosts), store, len(status()['taps'])")
        self.assertEqual(value, "('rill', ['db1', 'web1'], '<MirrorStore>', 2)")
        self.rill.taps.append(FakeTap("web2", "/var/log/new.log", 7))
        value = yield self.evaluate(client, "len(taps), taps[-1].offset")
        self.assertEqual(value, "(3, 7)")

    @defer.inlineCallbacks
    def test_wrong_password_refused(self) -> None:
        """A wrong password is refused: 'Authentication failed', the Username prompt again, no Python prompt."""
        client = yield self.login("wrong")
        yield wait_for(lambda: b"Authentication failed" in client.received, 10, "the refusal")
        yield wait_for(lambda: client.received.count(b"Username: ") == 2, 10, "a second Username prompt")
        self.assertNotIn(b">>> ", client.received)

    @defer.inlineCallbacks
    def test_same_offset_as_rill_status_json(self) -> None:
        """The manhole's taps[0].offset equals the offset `rill status --json` gets from the control ROUTER."""
        factory = ZmqFactory()
        self.addCleanup(factory.shutdown)
        router = RouterEndpoint(factory, "tcp://127.0.0.1:*", {"status": status_handler(self.rill)}, 30.0, reactor)
        router.startService()
        self.addCleanup(router.stopService)
        client = yield self.login("s3cret")
        yield wait_for(lambda: b">>> " in client.received, 10, "the Python prompt")
        value = yield self.evaluate(client, "taps[0].offset")
        report = yield threads.deferToThread(ask_status, router.bound_endpoint, 10.0)
        first = next(row for row in report["taps"] if row["path"] == self.rill.taps[0].path)
        self.assertEqual(int(value), first["offset"])


class EndpointTests(SynchronousTestCase):
    def test_loopback_added(self) -> None:
        """An endpoint without an interface is bound to loopback."""
        self.assertEqual(loopback_endpoint("tcp:6023"), "tcp:6023:interface=127.0.0.1")
        self.assertEqual(loopback_endpoint("6023"), "tcp:6023:interface=127.0.0.1")
        self.assertEqual(loopback_endpoint(r"tcp6:6023"), r"tcp6:6023:interface=\:\:1")

    def test_loopback_kept(self) -> None:
        """Loopback interfaces and unix sockets are accepted as they are."""
        for description in ("tcp:6023:interface=127.0.0.1", r"tcp6:6023:interface=\:\:1", "unix:/run/rill.manhole",
                            "tcp:6023:interface=localhost"):
            self.assertEqual(loopback_endpoint(description), description)

    def test_public_interface_refused(self) -> None:
        """A telnet manhole on a public interface is refused, saying why."""
        for description in ("tcp:6023:interface=0.0.0.0", "tcp:6023:interface=10.0.0.5", "ssl:6023"):
            self.assertRaises(ValueError, loopback_endpoint, description)

    def test_missing_passwd_file(self) -> None:
        """A password file that cannot be read is a clear error naming it."""
        error = self.assertRaises(ValueError, manhole_service, FakeRill([]), "tcp:0", "/nonexistent/manhole.passwd")
        self.assertIn("/nonexistent/manhole.passwd", str(error))

    def test_namespace(self) -> None:
        """The namespace names the parts of the tree; index is None when there is none."""
        rill = FakeRill([FakeTap("web1", "/a", 1)])
        names = namespace(rill)
        self.assertIs(names["rill"], rill)
        self.assertIs(names["hosts"], rill.hosts)
        self.assertIsNone(names["index"])
        self.assertEqual([t.offset for t in names["taps"]], [1])
