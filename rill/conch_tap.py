"""One Conch SSH client service per host, with the channels of its watched files.

A :class:`HostTap` (service name ``host:<name>``) owns one or more
:class:`ConnectionSlot` -- each a ``ClientService`` with capped exponential
backoff and jitter -- and hands out channels on them.  OpenSSH refuses more
than ``MaxSessions`` (default 10) channels per connection, so channels are
spread over slots of at most ``max_channels`` each, and a refused open marks
the slot full and moves on to another connection.

The ping service can pause a host (:meth:`HostTap.set_reachable`): while paused
no connection attempt is made (an open connection stays until its keepalives
decide), and when the host answers again the tap reconnects at once, skipping
whatever backoff was left.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.application.internet import ClientService
from twisted.conch.ssh.channel import SSHChannel
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rill.channels import ChannelOpenFailed
from rill.config import HostConfig
from rill.ratelimit import RepeatSuppressor
from rill.sshclient import LoginFailure, RillClientTransport, RillConnection, SSHClientFactory, classify

log = Logger()

# Conch's SSH_OPEN_CONNECT_FAILED / ADMINISTRATIVELY_PROHIBITED: how sshd says
# "no more sessions on this connection" (MaxSessions).
_REFUSED_CODES = (1, 2)


def _glob_match(pattern: str, path: str) -> bool:
    import fnmatch
    import os

    return os.path.dirname(pattern) == os.path.dirname(path) and fnmatch.fnmatchcase(
        os.path.basename(path), os.path.basename(pattern)
    )


def retry_policy(initial: float, maximum: float) -> Callable[[int], float]:
    """Capped exponential backoff with up to 25% jitter, so a fleet does not reconnect in step."""

    def delay(attempt: int) -> float:
        return min(initial * 2 ** min(attempt - 1, 60), maximum) * random.uniform(1.0, 1.25)

    return delay


class GatedEndpoint:
    """An endpoint that makes no attempt while its host is known unreachable."""

    def __init__(self, inner: Any, tap: HostTap) -> None:
        self.inner = inner
        self.tap = tap

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        if self.tap.reachable:
            return self._attempt(factory)
        waiting: defer.Deferred[None] = defer.Deferred()
        self.tap._gate_waiters.append(waiting)
        return waiting.addCallback(lambda _: self._attempt(factory))

    def _attempt(self, factory: Any) -> defer.Deferred[Any]:
        self.tap.stats["connection_attempts"] += 1
        return self.inner.connect(factory).addErrback(self._failed)

    def _failed(self, failure: Failure) -> Failure:
        """A TCP-level failure (refused, unreachable, timeout): the host tap reports it."""
        self.tap._login_failed(None, classify(failure))
        return failure

    def __repr__(self) -> str:
        return f"<ssh {self.tap.host.username}@{self.tap.host.address}:{self.tap.host.port}>"


class ConnectionSlot:
    """One SSH connection to the host, kept up by a ClientService.

    ClientService counts a TCP connection as success, but a login can still
    fail after it (wrong password, host key): those failures are counted here
    and fed to the backoff policy, so a refused login backs off exponentially
    instead of retrying at a fixed pace.  (prepareConnection is not used for
    this: a prepare that fails as the connection drops trips ClientService's
    state machine with NoTransition in Twisted 24-26.)
    """

    def __init__(self, tap: HostTap, number: int) -> None:
        self.tap = tap
        self.number = number
        self.connection: RillConnection | None = None
        self.capacity = tap.host.max_channels
        self.channels: set[SSHChannel] = set()
        self.login_failures = 0
        host = tap.host
        endpoint = HostnameEndpoint(tap.reactor, host.address.encode(), host.port, timeout=host.connect_timeout)
        backoff = retry_policy(host.retry_initial, host.retry_max)
        factory = SSHClientFactory(host, tap.data_dir, tap.reactor)
        factory.observer = self
        self.service = ClientService(
            GatedEndpoint(endpoint, tap),
            factory,
            retryPolicy=lambda attempt: backoff(max(attempt, self.login_failures)),
            clock=tap.reactor,
        )

    # SSHClientFactory observer interface
    def login_succeeded(self, proto: RillClientTransport, conn: RillConnection) -> None:
        self.connection = conn
        self.login_failures = 0
        self.capacity = self.tap.host.max_channels
        self.tap._slot_connected(self)

    def login_failed(self, proto: RillClientTransport, failure: LoginFailure) -> None:
        self.login_failures += 1
        self.tap._login_failed(self, failure)

    def connection_lost(self, proto: RillClientTransport, why: str) -> None:
        if proto.connection is not None and self.connection is proto.connection:
            self.connection = None
            self.channels.clear()
            self.tap._slot_lost(self, why)

    @property
    def free(self) -> int:
        return self.capacity - len(self.channels) if self.connection is not None else 0

    def reconnect_now(self) -> None:
        """Skip the remaining backoff: restart the ClientService if it is not connected."""
        if self.connection is None and self.service.running:
            self.login_failures = 0
            self.service.stopService().addCallback(lambda _: self.service.startService())


class HostTap(service.MultiService):
    """Everything Rill does on one host: its SSH connections and file taps."""

    def __init__(self, host: HostConfig, data_dir: str, reactor: Any) -> None:
        super().__init__()
        self.setName(f"host:{host.name}")
        self.host = host
        self.data_dir = data_dir
        self.reactor: IReactorTime = reactor
        self.slots: list[ConnectionSlot] = []
        self.reachable = True
        self._gate_waiters: list[defer.Deferred[None]] = []
        self._pending: list[tuple[SSHChannel, defer.Deferred[SSHChannel]]] = []
        self._connection_observers: list[Callable[[], None]] = []
        self.state = "connecting"
        self.last_error: str | None = None
        self.stats = {"connection_attempts": 0, "reconnects": 0, "logins": 0}
        self._errors = RepeatSuppressor(log, reactor)
        self.file_taps: list[Any] = []
        self.patterns: dict[str, str] = {}  # path or glob -> tap name
        self.file_tap_factory: Callable[[str, str], Any] | None = None
        self.watch_interval = 1.0
        self._watch: Any = None
        self._watch_retry: Any = None

    def add_file_tap(self, file_tap: Any) -> None:
        self.file_taps.append(file_tap)
        if self.running:
            file_tap.start()

    def add_pattern(self, pattern: str, tap_name: str) -> None:
        """Watch ``pattern`` (a path, or a glob whose matches become file taps as they appear)."""
        self.patterns[pattern] = tap_name

    # ------------------------------------------------------------ the watch channel

    def _start_watch(self) -> None:
        from rill.watch import WatchChannel, watch_command

        if self._watch is not None or not self.patterns or not self.running:
            return
        self._watch = WatchChannel(self, watch_command(list(self.patterns), self.watch_interval))
        self.open_channel(self._watch).addErrback(lambda _: self._watch_ended(None))

    def _watch_ended(self, channel: Any) -> None:
        if channel is not None and channel is not self._watch:
            return
        self._watch = None
        for file_tap in self.file_taps:
            file_tap.disconnected() if not self.connected else None
        if self.running and self.connected and self._watch_retry is None:
            self._watch_retry = self.reactor.callLater(self.watch_interval, self._retry_watch)

    def _retry_watch(self) -> None:
        self._watch_retry = None
        self._start_watch()

    def poll_received(self, snapshots: list[Any]) -> None:
        """One poll of every watched path: hand each snapshot to its file tap."""
        from rill.rotation import rotation_base
        from rill.watch import is_glob

        by_path = {ft.path: ft for ft in self.file_taps}
        literal = [p for p in self.patterns if not is_glob(p)]
        for snapshot in snapshots:
            file_tap = by_path.get(snapshot.path)
            if file_tap is None:
                if rotation_base(snapshot.path, [*literal, *by_path]) is not None or self.file_tap_factory is None:
                    continue  # a rotated name of a watched file, not a file of its own
                tap_name = next((t for p, t in self.patterns.items() if is_glob(p) and _glob_match(p, snapshot.path)), "")
                file_tap = self.file_tap_factory(snapshot.path, tap_name)
                by_path[snapshot.path] = file_tap
            file_tap.on_snapshot(snapshot)

    # ------------------------------------------------------------ lifecycle

    def startService(self) -> None:
        super().startService()
        self._add_slot()
        for file_tap in self.file_taps:
            file_tap.start()

    def stopService(self) -> defer.Deferred[None]:
        for file_tap in self.file_taps:
            file_tap.stop()
        if self._watch_retry is not None and self._watch_retry.active():
            self._watch_retry.cancel()
        self._watch_retry = None
        if self._watch is not None:
            self._watch.stop()
        for _, waiting in self._pending:
            waiting.errback(ChannelOpenFailed(f"{self.host.name}: stopping"))
        self._pending = []
        for waiter in self._gate_waiters:
            waiter.cancel()
        self._gate_waiters = []
        stops = [slot.service.stopService() for slot in self.slots]
        parent = super().stopService()
        return defer.DeferredList([*stops, defer.maybeDeferred(lambda: parent)]).addCallback(lambda _: None)

    def _add_slot(self) -> ConnectionSlot:
        slot = ConnectionSlot(self, len(self.slots))
        self.slots.append(slot)
        if self.running:
            slot.service.startService()
        return slot

    # ------------------------------------------------------------ ping

    def set_reachable(self, reachable: bool) -> None:
        """The ping service's verdict: pause connection attempts, or resume at once."""
        if reachable == self.reachable:
            return
        self.reachable = reachable
        if not reachable:
            if not self.connected:
                self.state = "paused by ping"
            log.info("{host}: unreachable by ping; connection attempts paused", host=self.host.name)
            return
        log.info("{host}: answers ping again; reconnecting now", host=self.host.name)
        waiters, self._gate_waiters = self._gate_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        for slot in self.slots:
            slot.reconnect_now()

    # ------------------------------------------------------------ channels

    @property
    def connected(self) -> bool:
        return any(slot.connection is not None for slot in self.slots)

    def when_connected(self, observer: Callable[[], None]) -> None:
        """Call ``observer`` every time a connection to the host becomes usable."""
        self._connection_observers.append(observer)

    def open_channel(self, channel: SSHChannel) -> defer.Deferred[SSHChannel]:
        """Open ``channel`` on a connection with room; fires once the server accepted it."""
        def cancel(d: defer.Deferred[SSHChannel]) -> None:
            self._pending = [(c, w) for c, w in self._pending if w is not d]

        waiting: defer.Deferred[SSHChannel] = defer.Deferred(cancel)
        self._pending.append((channel, waiting))
        self._pump()
        return waiting

    def _pump(self) -> None:
        while self._pending and self.slots:
            slot = max(self.slots, key=lambda s: s.free)
            if slot.free <= 0:
                if all(s.connection is not None for s in self.slots):
                    self._add_slot()
                return
            channel, waiting = self._pending.pop(0)
            self._open_on(slot, channel, waiting)

    def _open_on(self, slot: ConnectionSlot, channel: SSHChannel, waiting: defer.Deferred[SSHChannel]) -> None:
        conn = slot.connection
        assert conn is not None
        slot.channels.add(channel)
        opened: defer.Deferred[None] = defer.Deferred()
        channel._rill_opened = opened  # the channel fires it from channelOpen/openFailed
        channel._rill_slot = slot
        conn.openChannel(channel)
        opened.addCallbacks(lambda _: waiting.callback(channel), lambda f: self._open_failed(slot, channel, waiting, f))

    def _open_failed(
        self, slot: ConnectionSlot, channel: SSHChannel, waiting: defer.Deferred[SSHChannel], failure: Failure
    ) -> None:
        slot.channels.discard(channel)
        code = getattr(failure.value, "data", None)
        if slot.connection is not None and code in _REFUSED_CODES and slot.channels:
            slot.capacity = len(slot.channels)
            log.info(
                "{host}: server refused channel {n} on connection {slot}; using another connection",
                host=self.host.name,
                n=len(slot.channels) + 1,
                slot=slot.number,
            )
            self._pending.insert(0, (channel, waiting))
            self._pump()
            return
        waiting.errback(ChannelOpenFailed(f"{self.host.name}: channel refused: {failure.getErrorMessage()}"))

    def channel_closed(self, channel: SSHChannel) -> None:
        slot = getattr(channel, "_rill_slot", None)
        if slot is not None:
            slot.channels.discard(channel)
        if self._pending:
            self._pump()

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "address": f"{self.host.address}:{self.host.port}",
            "username": self.host.username,
            "connections": sum(1 for slot in self.slots if slot.connection is not None),
            "channels": sum(len(slot.channels) for slot in self.slots),
            "last_error": self.last_error,
            "reachable": self.reachable,
            **self.stats,
        }

    # ------------------------------------------------------------ slot events

    def _slot_connected(self, slot: ConnectionSlot) -> None:
        self.stats["logins"] += 1
        if self.stats["logins"] > 1:
            self.stats["reconnects"] += 1
        if self.state != "connected":
            log.info(
                "{host}: connected as {user} (connection {slot})",
                host=self.host.name,
                user=self.host.username,
                slot=slot.number,
            )
        self.state = "connected"
        self.last_error = None
        self._errors.reset(self.host.name)
        self._pump()
        self._start_watch()
        for observer in list(self._connection_observers):
            observer()

    def _slot_lost(self, slot: ConnectionSlot, why: str) -> None:
        if self._watch is not None and getattr(self._watch, "_rill_slot", None) is slot:
            self._watch = None
        for file_tap in self.file_taps:
            file_tap.readers = {n: r for n, r in file_tap.readers.items() if getattr(r, "_rill_slot", None) is not slot}
            if not file_tap.readers and not self.connected:
                file_tap.disconnected()
        if self.connected:
            self._start_watch()
        if not self.connected:
            self.state = "connecting" if self.reachable else "paused by ping"
        log.info("{host}: connection {slot} lost ({why})", host=self.host.name, slot=slot.number, why=why)

    def _login_failed(self, slot: ConnectionSlot | None, failure: LoginFailure) -> None:
        if not self.connected:
            self.state = failure.kind if failure.kind in ("auth failed", "host key mismatch") else "backing off"
        self.last_error = str(failure)
        self._errors.report(
            self.host.name,
            str(failure),
            "{host}: login failed: {error}",
            host=self.host.name,
        )
