"""Log hygiene: a refusing host logs a bounded number of lines; library chatter is filtered out."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from twisted.conch.ssh import transport as ssh_transport
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import (
    LogEvent,
    Logger,
    LogLevel,
    PredicateResult,
    capturedLogs,
    eventsFromJSONLogFile,
    formatEvent,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from rill import logs
from rill.conch_tap import HostTap
from rill.config import HostConfig, HostKeyPolicy, Secret
from rill.logs import RillLogFilter, is_rill_event, log_level
from rill.sshclient import RillClientTransport

PASSWORD = "correct-horse-battery-staple"


def shown(events: Sequence[LogEvent], level: LogLevel = LogLevel.info) -> list[str]:
    """The lines an operator sees at ``level`` through Rill's log filter."""
    keep = RillLogFilter(level)
    return [formatEvent(event) for event in events if keep(event) is not PredicateResult.no]


def ssh_transport_of(protocol: Any) -> RillClientTransport:
    """The RillClientTransport inside the endpoint's and ClientService's wrapping protocols."""
    while not isinstance(protocol, RillClientTransport):
        protocol = getattr(protocol, "_wrappedProtocol", None) or getattr(protocol, "wrappedProtocol", None) \
            or protocol._protocol
    return protocol


def refuse_tcp(reactor: MemoryReactorClock, index: int) -> None:
    """The host answers the TCP SYN with RST."""
    _, _, factory, _, _ = reactor.tcpClients[index]
    factory.clientConnectionFailed(reactor.connectors[index], Failure(ConnectionRefusedError()))


def refuse_login(reactor: MemoryReactorClock, index: int) -> None:
    """The host accepts TCP, then refuses every authentication method and disconnects."""
    _, _, factory, _, _ = reactor.tcpClients[index]
    wrapper = factory.buildProtocol(None)
    wrapper.makeConnection(StringTransport())
    ssh_transport_of(wrapper).sendDisconnect(
        ssh_transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE, b"no more authentication methods available"
    )
    wrapper.connectionLost(Failure(ConnectionDone()))


class RefusingHostTests(SynchronousTestCase):
    """The real HostTap on a MemoryReactorClock, every connection attempt refused."""

    def make_tap(self) -> tuple[HostTap, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        host = HostConfig(name="web1", address="192.0.2.10", username="ops",
                          password=Secret("literal", "", PASSWORD), host_key=HostKeyPolicy("tofu"),
                          retry_initial=1.0, retry_max=60.0)
        tap = HostTap(host, self.mktemp(), reactor)
        os.makedirs(tap.data_dir)
        tap.startService()
        self.addCleanup(lambda: self.assertEqual(reactor.getDelayedCalls(), []))
        self.addCleanup(tap.stopService)
        return tap, reactor

    def refuse_for(self, seconds: float, refuse: Callable[[MemoryReactorClock, int], None]) -> tuple[
            HostTap, list[LogEvent]]:
        tap, reactor = self.make_tap()
        handled = 0
        with capturedLogs() as events:
            for _ in range(int(seconds * 10)):
                while handled < len(reactor.tcpClients):
                    refuse(reactor, handled)
                    handled += 1
                reactor.advance(0.1)
        self.assertEqual(tap.stats["connection_attempts"], handled)
        return tap, list(events)

    def test_auth_refused_for_a_minute(self) -> None:
        """A minute of refused logins: six attempts or more, one line naming the host and why, no secret."""
        tap, events = self.refuse_for(60, refuse_login)
        self.assertGreaterEqual(tap.stats["connection_attempts"], 6)
        lines = shown(events)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("web1: login failed: auth failed", lines[0])
        self.assertEqual(tap.state, "auth failed")
        self.assertFalse([formatEvent(e) for e in events if PASSWORD in formatEvent(e)])

    def test_auth_refused_for_ten_minutes(self) -> None:
        """Ten minutes of refused logins: at most the first line and one summary a minute, with a count."""
        tap, events = self.refuse_for(600, refuse_login)
        lines = shown(events)
        self.assertLessEqual(len(lines), 11, lines)
        self.assertTrue(all("web1: login failed: auth failed" in line for line in lines), lines)
        self.assertTrue(any("repeated" in line for line in lines[1:]), lines)
        self.assertGreater(tap.stats["connection_attempts"], len(lines))

    def test_unfiltered_chatter(self) -> None:
        """Without the filter the same minute is several lines per attempt (what the filter saves)."""
        tap, events = self.refuse_for(60, refuse_login)
        self.assertGreaterEqual(len(events), 3 * tap.stats["connection_attempts"])

    def test_tcp_refused_for_a_minute(self) -> None:
        """A minute of refused TCP connections: retries go on, and the lines shown stay bounded."""
        tap, events = self.refuse_for(60, refuse_tcp)
        self.assertGreaterEqual(tap.stats["connection_attempts"], 6)
        self.assertLessEqual(len(shown(events)), 2, shown(events))

    def test_tcp_refused_is_reported(self) -> None:
        """A host refusing TCP is named in one log line and its status carries the error."""
        tap, events = self.refuse_for(60, refuse_tcp)
        lines = shown(events)
        self.assertTrue(any("web1" in line and "refused" in line for line in lines), lines)
        self.assertIsNotNone(tap.last_error)


class FilterTests(SynchronousTestCase):
    def event(self, namespace: str, level: LogLevel = LogLevel.info, **fields: Any) -> LogEvent:
        return {"log_namespace": namespace, "log_level": level, "log_format": "x", **fields}

    def test_rill_info_shown(self) -> None:
        """Rill's own info lines pass (module loggers and loggers Rill classes declare)."""
        import rill.protocols.router  # noqa: F401  (its RouterEndpoint declares a logger)

        keep = RillLogFilter(LogLevel.info)
        self.assertIsNot(keep(self.event("rill.conch_tap")), PredicateResult.no)
        self.assertIsNot(keep(self.event("rill.protocols.router.RouterEndpoint")), PredicateResult.no)

    def test_library_info_hidden(self) -> None:
        """Conch and ClientService info lines are hidden, even when logged under a Rill subclass's name."""
        import rill.filetap  # noqa: F401

        keep = RillLogFilter(LogLevel.info)
        for namespace in ("twisted.conch.ssh.channel.SSHChannel", "rill.filetap.StreamChannel",
                          "rill.sshclient.RillClientTransport", "twisted.application._client_service.ClientService",
                          "log_legacy"):
            self.assertIs(keep(self.event(namespace)), PredicateResult.no, namespace)
            self.assertFalse(is_rill_event(self.event(namespace)))

    def test_library_warnings_shown(self) -> None:
        """A library's warnings and errors still pass."""
        keep = RillLogFilter(LogLevel.info)
        self.assertIsNot(keep(self.event("twisted.conch.ssh.transport", LogLevel.warn)), PredicateResult.no)
        self.assertIsNot(keep(self.event("log_legacy", LogLevel.critical)), PredicateResult.no)

    def test_twistd_startup_shown(self) -> None:
        """twistd's start-up and shutdown lines pass at info."""
        keep = RillLogFilter(LogLevel.info)
        self.assertIsNot(keep(self.event("twisted.scripts._twistd_unix.UnixAppLogger")), PredicateResult.no)
        self.assertIsNot(keep(self.event("twisted.internet.base")), PredicateResult.no)

    def test_debug_shows_everything(self) -> None:
        """At debug, library debug chatter passes too."""
        keep = RillLogFilter(LogLevel.debug)
        self.assertIsNot(keep(self.event("twisted.conch.ssh.transport", LogLevel.debug)), PredicateResult.no)

    def test_level_from_environment(self) -> None:
        """$RILL_LOG_LEVEL names the level; unset or unknown means info."""
        self.assertEqual(log_level({}), LogLevel.info)
        self.assertEqual(log_level({"RILL_LOG_LEVEL": "debug"}), LogLevel.debug)
        self.assertEqual(log_level({"RILL_LOG_LEVEL": "WARNING"}), LogLevel.warn)
        self.assertEqual(log_level({"RILL_LOG_LEVEL": "chatty"}), LogLevel.info)


class ObserverTests(SynchronousTestCase):
    def emit(self, observer: Any) -> None:
        log = Logger(namespace="rill.conch_tap", observer=observer)
        log.info("{host}: connected as {user}", host="web1", user="ops")
        Logger(namespace="twisted.conch.ssh.channel", observer=observer).info("channel open")
        log.debug("{host}: hidden at info", host="web1")

    def test_text_observer_to_file(self) -> None:
        """text_observer writes Rill's line to $RILL_LOG_FILE and leaves the rest out."""
        path = self.mktemp()
        self.patch(os, "environ", {**os.environ, "RILL_LOG_FILE": path, "RILL_LOG_LEVEL": "info"})
        observer = logs.text_observer()
        self.emit(observer)
        with open(path) as f:
            text = f.read()
        self.assertIn("web1: connected as ops", text)
        self.assertNotIn("channel open", text)
        self.assertNotIn("hidden at info", text)

    def test_json_observer_to_stdout(self) -> None:
        """json_observer writes JSON events that twisted.logger reads back, fields intact."""
        out = io.StringIO()
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k not in ("RILL_LOG_FILE", "RILL_LOG_LEVEL")})
        self.patch(logs.sys, "stdout", out)
        self.emit(logs.json_observer())
        events = list(eventsFromJSONLogFile(io.StringIO(out.getvalue())))
        self.assertEqual([(e["host"], e["user"]) for e in events], [("web1", "ops")])
        self.assertEqual(json.loads(out.getvalue().strip("\x1e\n"))["log_namespace"], "rill.conch_tap")
