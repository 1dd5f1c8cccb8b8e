"""The ping service: which configured hosts answer ICMP echo (SPEC section 5).

One ICMP socket per address family, read by the reactor, carries the echo requests to every
host; sending is paced evenly across the interval so thousands of hosts never burst. Replies
are matched to requests by identifier, sequence number and source address (the packet code,
checksums included, is in :mod:`rill.icmp`).

A host's state (see :class:`State`) changes with hysteresis: unresponsive after ``misses``
requests in a row went unanswered, responsive again on the first reply. Each change is logged,
published as ``[b"ping/<host>", {...}]`` and reported to observers (the taps).

Socket kinds, best first:

1. ``SOCK_RAW``: needs CAP_NET_RAW (root).
2. ``SOCK_DGRAM`` + ``IPPROTO_ICMP``, the unprivileged "ping socket": allowed when the process's
   group is inside ``net.ipv4.ping_group_range`` (default "1 0", nobody; it governs ICMPv6 too).
3. Neither: one warning, and the family's hosts are ``disabled``, which counts as responsive so
   taps keep connecting as if there were no ping service.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import random
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rill import icmp

SocketFactory = Callable[[int, int, int], socket.socket]
Publish = Callable[[bytes, dict], None]
Observer = Callable[[str, bool], None]

#: The echo identifier of this Rill process. Random rather than the pid: containers sharing a
#: network namespace often share pids (1, 7, ...), and raw sockets see each other's replies.
PROCESS_IDENTIFIER = random.SystemRandom().randrange(1, 0x10000)

MIN_TICK = 0.01  # seconds; finer pacing costs more wakeups than it saves in burst size
READS_PER_CALL = 256  # datagrams read per doRead, so one busy socket cannot starve the reactor
OUTSTANDING = 8  # requests per host kept for matching (late replies still count as replies)
RESOLVE_RETRY = 30.0  # seconds between lookups of a name that did not resolve
RESOLVE_REFRESH = 300.0  # seconds between lookups of a name that did: addresses move
RECEIVE_BUFFER = 1 << 20  # a whole interval of replies from thousands of hosts fits
SOL_RAW = 255  # <linux/socket.h>; Python does not export it
ICMP_FILTER = 1  # <linux/icmp.h>
ICMP6_FILTER = 1  # <netinet/icmp6.h>
SO_TIMESTAMPNS = 35  # <asm-generic/socket.h> (x86, arm and most others); not exported either
_TIMESPEC = struct.Struct("=qq")

_PROTOCOL: dict[int, int] = {
    socket.AF_INET: socket.IPPROTO_ICMP,
    socket.AF_INET6: socket.IPPROTO_ICMPV6,
}
_NAMES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


class State(enum.Enum):
    """A host's ping state.

    ``unknown`` -> ``responsive`` on a reply, -> ``unresponsive`` after ``misses`` misses;
    ``responsive`` <-> ``unresponsive`` the same way; ``disabled`` is final (no ICMP socket
    could be opened for the host's family). Only ``unresponsive`` counts as not responsive:
    before the first verdict taps should connect as usual.
    """

    UNKNOWN = "unknown"
    RESPONSIVE = "responsive"
    UNRESPONSIVE = "unresponsive"
    DISABLED = "disabled"


@dataclass(eq=False)
class _Host:
    name: str
    address: str  # as configured: a literal address or a name
    last_change: float
    family: int = 0
    sockaddr: tuple | None = None  # resolved, as sendto wants it
    key: str = ""  # resolved, as recvfrom reports it (see _key)
    state: State = State.UNKNOWN
    sequence: int = 0
    waiting: bool = False  # the latest request (or an unsendable slot) is still unanswered
    missed: int = 0  # in a row
    lost: int = 0  # in all: requests not answered by the time the next one was due
    rtt_ms: float | None = None
    sent: int = 0
    received: int = 0
    resolving: bool = False
    next_resolve: float = 0.0
    outstanding: deque[tuple[str, int]] = field(default_factory=deque)


def _key(address: str) -> str:
    """An address in the one spelling that requests and replies are matched on."""
    return ipaddress.ip_address(address.partition("%")[0]).compressed


def _iso(seconds: float) -> str:
    """UTC ISO 8601 with milliseconds and 'Z', e.g. 2026-11-26T02:24:39.123Z."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _lookup(address: str, flags: int = 0) -> tuple[int, tuple]:
    """(family, sockaddr) of ``address``, IPv4 or IPv6: the first in the system's order of
    preference (RFC 6724, /etc/gai.conf). Blocking for names: run in a thread."""
    family, _, _, _, sockaddr = socket.getaddrinfo(address, None, 0, socket.SOCK_RAW, 0, flags)[0]
    return family, sockaddr


def _numeric(address: str) -> tuple[int, tuple] | None:
    """(family, sockaddr) of a literal IP address, at once; None for a name."""
    try:
        return _lookup(address, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return None


def open_icmp_socket(
    factory: SocketFactory, family: int
) -> tuple[socket.socket | None, bool, str]:
    """(socket, is_raw, error): a raw ICMP socket, else an ICMP datagram socket, else None."""
    protocol = _PROTOCOL[family]
    try:
        sock, raw = factory(family, socket.SOCK_RAW, protocol), True
    except PermissionError as e:
        try:
            sock, raw = factory(family, socket.SOCK_DGRAM, protocol), False
        except OSError as e2:
            return None, False, f"raw socket: {e.strerror}; datagram socket: {e2.strerror}"
    except OSError as e:  # EAFNOSUPPORT: no IPv6 here; a datagram socket would not help
        return None, False, f"raw socket: {e.strerror}"
    sock.setblocking(False)
    _tune(sock, family, raw)
    return sock, raw, ""


def _tune(sock: socket.socket, family: int, raw: bool) -> None:
    """Best effort: a larger receive buffer; kernel receive times, so that rtts leave out the
    reactor's latency; on raw sockets, a kernel filter letting through echo replies only.

    Without the filter a raw socket is handed every ICMP packet the host receives, including
    a copy of each request Rill sends to a loopback address.
    """
    options: list[tuple[int, int, int | bytes]] = [
        (socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER),
        (socket.SOL_SOCKET, SO_TIMESTAMPNS, 1),
    ]
    if raw and family == socket.AF_INET:
        blocked = ~(1 << icmp.ECHO_REPLY) & 0xFFFFFFFF  # a set bit blocks that type
        options.append((SOL_RAW, ICMP_FILTER, struct.pack("=I", blocked)))
    elif raw:
        words = [0xFFFFFFFF] * 8  # Linux, unlike RFC 3542's BSD: here too a set bit blocks
        words[icmp.ECHO6_REPLY >> 5] &= ~(1 << (icmp.ECHO6_REPLY & 31))
        options.append((socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *words)))
    for level, name, value in options:
        try:
            sock.setsockopt(level, name, value)
        except OSError:  # each is an economy or a refinement; without it pinging still works
            pass


@implementer(IReadDescriptor)
class _Endpoint:
    """One non-blocking ICMP socket of one family, read by the reactor."""

    def __init__(
        self,
        sock: socket.socket,
        family: int,
        raw: bool,
        identifier: int,
        deliver: Callable[[str, icmp.Echo, float | None], None],
    ) -> None:
        self.sock, self.family, self.raw, self.deliver = sock, family, raw, deliver
        self.ip_header = raw and family == socket.AF_INET  # see rill.icmp's docstring
        # A raw socket sees every process's echo replies, so ours are told apart by identifier.
        # A datagram socket's kernel rewrites the identifier to the socket's own "port" and
        # delivers only replies carrying it: there, requests are matched by sequence and
        # source address alone.
        self.identifier: int | None = identifier if raw else None

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "ping"

    def connectionLost(self, reason: object) -> None:
        pass

    def doRead(self) -> None:
        for _ in range(READS_PER_CALL):
            try:
                data, ancillary, _, source = self.sock.recvmsg(1024, 64)
            except OSError:  # BlockingIOError: drained, for now
                return None
            echo = icmp.parse_echo_reply(data, self.family, self.ip_header)
            if echo is None or echo.payload != icmp.PAYLOAD:
                continue
            if self.identifier is not None and echo.identifier != self.identifier:
                continue
            self.deliver(source[0], echo, _kernel_time(ancillary))
        return None

    def send(self, sockaddr: tuple, packet: bytes) -> None:
        try:
            self.sock.sendto(packet, sockaddr)
        except OSError:
            # EPERM (a firewall), ENETUNREACH, ENOBUFS...: to the service, just a missed reply.
            pass


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """When the kernel received a datagram (SO_TIMESTAMPNS; wall-clock seconds), if it says."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds + nanoseconds / 1e9
    return None


class PingService(Service):
    """Pings ``targets`` ((host name, address or DNS name) pairs) and tracks who answers.

    ``socket_factory`` (``socket.socket`` by default) lets tests force socket failures;
    ``identifier`` defaults to the process's :data:`PROCESS_IDENTIFIER`.
    """

    log = Logger()

    def __init__(
        self,
        targets: Sequence[tuple[str, str]],
        interval: float = 1.0,
        misses: int = 3,
        publish: Publish | None = None,
        reactor: Any = None,
        *,
        socket_factory: SocketFactory = socket.socket,
        identifier: int = PROCESS_IDENTIFIER,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._interval, self._misses, self._publish = interval, max(1, misses), publish
        self._socket_factory, self._identifier = socket_factory, identifier & 0xFFFF
        now = reactor.seconds()
        self._hosts = {name: _Host(name, address, now) for name, address in targets}
        self._order = list(self._hosts.values())
        self._pending: dict[tuple[str, int], tuple[_Host, float]] = {}
        self._endpoints: dict[int, _Endpoint | None] = {}  # None: no socket for the family
        self._observers: list[Observer] = []
        self._lookups: set[Deferred[tuple[int, tuple]]] = set()
        self._warned = False
        self._loop: LoopingCall | None = None
        self._cycle_start, self._position = now, 0

    # -- the API the rest of Rill uses ----------------------------------------------------

    def add_observer(self, callback: Observer) -> None:
        """Call ``callback(host_name, responsive)`` on every change of a host's state.

        The first verdict on a host (responsive or not) is reported too.
        """
        self._observers.append(callback)

    def remove_observer(self, callback: Observer) -> None:
        self._observers.remove(callback)

    def is_responsive(self, host_name: str) -> bool:
        """False only for a host known to be down; names not pinged count as responsive."""
        host = self._hosts.get(host_name)
        return host is None or host.state is not State.UNRESPONSIVE

    def status(self) -> dict[str, dict[str, Any]]:
        """Per host: state, rtt_ms (last measured), sent, received, lost, last_change, address.

        ``lost`` counts requests unanswered when the next was due (a late reply still counts
        as received), so ``sent - received`` also includes the request in flight.
        """
        return {
            host.name: {
                "state": host.state.value,
                "rtt_ms": host.rtt_ms,
                "sent": host.sent,
                "received": host.received,
                "lost": host.lost,
                "last_change": _iso(host.last_change),
                "address": host.address,
            }
            for host in self._order
        }

    # -- lifecycle --------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        now = self._reactor.seconds()
        for host in self._order:
            host.waiting = False  # a restart does not count the requests of the last run
            host.outstanding.clear()
            self._resolve(host, now)
        if not self._order:
            return
        self._cycle_start, self._position = now, 0
        tick = min(self._interval, max(MIN_TICK, self._interval / len(self._order)))
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(tick, now=True)

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for lookup in list(self._lookups):
            lookup.cancel()
        for endpoint in self._endpoints.values():
            if endpoint is not None:
                self._reactor.removeReader(endpoint)
                endpoint.sock.close()
        self._endpoints.clear()
        self._pending.clear()
        return super().stopService()

    # -- addresses and sockets --------------------------------------------------------------

    def _resolve(self, host: _Host, now: float) -> None:
        numeric = _numeric(host.address)
        if numeric is not None:
            host.next_resolve = math.inf
            self._set_address(host, *numeric)
        elif not host.resolving and now >= host.next_resolve:
            # getaddrinfo, for both families, in the reactor's thread pool (as Twisted's own
            # resolver does); a lookup cancelled at stopService ignores its late result.
            host.resolving = True
            pool = self._reactor.getThreadPool()
            lookup = deferToThreadPool(self._reactor, pool, _lookup, host.address)
            self._lookups.add(lookup)
            lookup.addCallbacks(self._resolved, self._lookup_failed, callbackArgs=(host,),
                                errbackArgs=(host,))
            lookup.addBoth(lambda _: self._lookups.discard(lookup))

    def _resolved(self, resolved: tuple[int, tuple], host: _Host) -> None:
        host.resolving = False
        host.next_resolve = self._reactor.seconds() + RESOLVE_REFRESH
        self._set_address(host, *resolved)

    def _lookup_failed(self, failure: Failure, host: _Host) -> None:
        host.resolving = False
        if not failure.check(CancelledError):  # cancelled: the service stopped
            host.next_resolve = self._reactor.seconds() + RESOLVE_RETRY
            self.log.warn("ping: cannot resolve {host}'s address {address}: {error}",
                          host=host.name, address=host.address, error=failure.getErrorMessage())

    def _set_address(self, host: _Host, family: int, sockaddr: tuple) -> None:
        host.family, host.sockaddr, host.key = family, sockaddr, _key(sockaddr[0])
        # Disabled counts as responsive, like unknown: no change to tell anyone about.
        if self._endpoint(family) is None:
            host.state = State.DISABLED
        elif host.state is State.DISABLED:  # restarted, and a socket can be had now
            host.state = State.UNKNOWN

    def _endpoint(self, family: int) -> _Endpoint | None:
        if family in self._endpoints:
            return self._endpoints[family]
        sock, raw, error = open_icmp_socket(self._socket_factory, family)
        endpoint = None
        if sock is None and not self._warned:  # one warning, whichever families fail
            self._warned = True
            self.log.warn(
                "ping: cannot open an ICMP socket for {family} ({error}); raw sockets need "
                "CAP_NET_RAW, datagram ones a group in net.ipv4.ping_group_range; "
                "treating those hosts as responsive", family=_NAMES[family], error=error)
        elif sock is not None:
            endpoint = _Endpoint(sock, family, raw, self._identifier, self._deliver)
            self._reactor.addReader(endpoint)
            self.log.info("ping: {kind} ICMP socket for {family}", family=_NAMES[family],
                          kind="raw" if raw else "unprivileged datagram")
        self._endpoints[family] = endpoint
        return endpoint

    # -- sending ----------------------------------------------------------------------------

    def _tick(self) -> None:
        """Probe every host whose slot in the current cycle has come (host i at i/n of it).

        A host's request is judged at its next slot, one interval later, so a reactor that
        stalls costs each host at most one miss, not one per interval it slept through.
        (The 1e-9s absorb float rounding: a fake clock lands exactly on slot times.)
        """
        now, count = self._reactor.seconds(), len(self._order)
        while True:
            elapsed = now - self._cycle_start
            due = min(count, int(elapsed * count / self._interval + 1e-9) + 1)
            while self._position < due:
                self._probe(self._order[self._position], now)
                self._position += 1
            if self._position < count or elapsed + 1e-9 < self._interval:
                return
            self._position = 0
            self._cycle_start += self._interval
            if now - self._cycle_start >= self._interval:
                # The reactor fell a whole cycle behind: start afresh rather than catch up
                # with a burst.
                self._cycle_start = now

    def _probe(self, host: _Host, now: float) -> None:
        """The host's slot: judge its previous request, then send the next one."""
        if host.state is State.DISABLED:
            return
        if host.waiting:
            self._missed(host, now)
        if self._can_send(host, now):
            self._send(host)

    def _can_send(self, host: _Host, now: float) -> bool:
        if host.sockaddr is None or now >= host.next_resolve:
            self._resolve(host, now)
        if host.state is State.DISABLED:  # resolved to a family without a socket
            return False
        if host.sockaddr is None:
            # A slot without an address counts as a miss, except while the first lookup of
            # the name is still going (next_resolve is set only after one has failed).
            host.waiting = not (host.resolving and host.next_resolve == 0.0)
        return host.sockaddr is not None

    def _send(self, host: _Host) -> None:
        endpoint = self._endpoints[host.family]
        assert endpoint is not None and host.sockaddr is not None  # else disabled or unresolved
        sequence = self._next_sequence(host)
        host.sent += 1
        host.waiting = True
        # A fresh time for each request: with thousands of hosts a tick sends several.
        self._remember(host, sequence, self._reactor.seconds())
        packet = icmp.build_echo_request(self._identifier, sequence, family=host.family)
        endpoint.send(host.sockaddr, packet)

    def _next_sequence(self, host: _Host) -> int:
        """The host's next sequence number, skipping any in use for the same address."""
        for _ in range(OUTSTANDING * 2 + 1):
            host.sequence = (host.sequence + 1) & 0xFFFF
            if (host.key, host.sequence) not in self._pending:
                break
        return host.sequence

    def _remember(self, host: _Host, sequence: int, now: float) -> None:
        self._pending[(host.key, sequence)] = (host, now)
        host.outstanding.append((host.key, sequence))
        if len(host.outstanding) > OUTSTANDING:
            oldest = host.outstanding.popleft()
            if self._pending.get(oldest, (None,))[0] is host:
                del self._pending[oldest]

    # -- receiving and verdicts -------------------------------------------------------------

    def _deliver(self, source: str, echo: icmp.Echo, received_at: float | None) -> None:
        # The kernel spells addresses canonically (inet_ntop), as _key does; only a scope
        # (fe80::1%eth0) needs dropping. Cheaper than _key, which shows at 1,000 replies/s.
        key = source.partition("%")[0]
        entry = self._pending.pop((key, echo.sequence), None)
        if entry is None:  # a duplicate, or a reply to a request not ours
            return
        host, sent_at = entry
        now = self._reactor.seconds()
        # The kernel's receive time, unless it is off the reactor's clock (a test's fake one).
        if received_at is None or not sent_at <= received_at <= now:
            received_at = now
        host.received += 1
        host.rtt_ms = round((received_at - sent_at) * 1000.0, 3)
        host.missed = 0
        if echo.sequence == host.sequence:  # a late reply to an older request leaves this one
            host.waiting = False
        if host.state is not State.RESPONSIVE:
            self._change(host, State.RESPONSIVE, now)

    def _missed(self, host: _Host, now: float) -> None:
        host.waiting = False
        host.missed += 1
        host.lost += 1
        if host.missed >= self._misses and host.state is not State.UNRESPONSIVE:
            self._change(host, State.UNRESPONSIVE, now)

    def _change(self, host: _Host, state: State, now: float) -> None:
        first = host.state is State.UNKNOWN
        host.state, host.last_change = state, now
        responsive = state is State.RESPONSIVE
        rtt_ms = host.rtt_ms if responsive else None
        if responsive:
            # At start-up every host answering is routine: thousands of lines would hide news.
            emit = self.log.debug if first else self.log.info
            emit("ping: {host} ({address}) is responsive, rtt {rtt_ms} ms",
                 host=host.name, address=host.address, rtt_ms=rtt_ms)
        else:
            self.log.info("ping: {host} ({address}) is unresponsive: {misses} replies missed",
                          host=host.name, address=host.address, misses=host.missed)
        if self._publish is not None:
            message = {"host": host.name, "state": state.value, "rtt_ms": rtt_ms,
                       "datetime": _iso(now)}
            try:
                self._publish(b"ping/" + host.name.encode("utf-8"), message)
            except Exception:
                self.log.failure("ping: publishing {host}'s change failed", host=host.name)
        for observer in list(self._observers):
            try:
                observer(host.name, responsive)
            except Exception:
                self.log.failure("ping: observer failed on {host}", host=host.name)
