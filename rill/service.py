"""``twistd rill -c config.ini``: build Rill's named service tree.

    rill                       MultiService
    ├── publish                the data PUB socket (lines, ping changes)
    ├── host:<name>            one per host: SSH connections + file taps
    ├── sessions:<name>        interactive shell sessions on that host's connection
    ├── signal:<name>          the host's own ROUTER (``signal =``), the seed's protocol
    ├── index                  the inverted-term index over the mirror; search
    ├── retention              drops the oldest generations per tap (age, size)
    ├── control                the global ROUTER: sessions by host, search, status
    ├── ping                   ICMP echo; pauses and resumes the host taps
    ├── metrics                Prometheus text at /metrics (``metrics =``)
    ├── manhole                telnet manhole on loopback (``manhole =``)
    └── store-sync             fsyncs the mirrors once a second
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application import internet, service
from twisted.logger import Logger
from twisted.python import usage
from txzmq import ZmqFactory

from rill.conch_tap import HostTap
from rill.config import ConfigError, HostConfig, RillConfig, TapConfig, find_config, read_config
from rill.filetap import FileTap
from rill.lines import BACKLOG, MirrorFollower
from rill.parsers import external_endpoint
from rill.parsers.external import ExternalParser
from rill.pipeline import LinePipeline
from rill.index import IndexService, QueryError, parser_for_config
from rill.manhole import manhole_service
from rill.metrics import MetricsService
from rill.ping import PingService
from rill.protocols.data import DataPublisher, line_topic
from rill.protocols.router import RouterEndpoint
from rill.protocols.signalling import RequestError
from rill.sessions import SessionManager, control_handlers, session_handlers
from rill.status import status_handler
from rill.store.mirror import MirroredFile, MirrorStore
from rill.timefmt import iso_utc
from rill.watch import is_glob

log = Logger()

INDEX_SLICE = 1 << 18  # mirror bytes indexed per turn of the reactor (~0.1 s of CPU)


class Options(usage.Options):
    optParameters = [["config", "c", None, "Rill's config file (default: $RILL_CONFIG, ./config.ini, /etc/rill/config.ini)"]]


class RillService(service.MultiService):
    """The root of the tree; its named children are the parts of Rill."""

    def __init__(self, config: RillConfig, reactor: Any) -> None:
        super().__init__()
        self.setName("rill")
        self.config = config
        self.reactor = reactor
        os.makedirs(config.data_dir, exist_ok=True)
        self.store = MirrorStore(config.data_dir)
        self.zmq = ZmqFactory()
        self.zmq.reactor = reactor
        self.publisher = DataPublisher(self.zmq, config.publish, config.publish_hwm)
        self.publisher.setServiceParent(self)
        self.followers: dict[tuple[str, str], MirrorFollower] = {}
        self.pipelines: dict[tuple[str, str], LinePipeline] = {}
        self.external_parsers: dict[str, ExternalParser] = {}
        self.hosts: dict[str, HostTap] = {}
        self.append_observers: list[Any] = []
        self._build_taps()
        self.index = IndexService(config.data_dir, self.store, parser_for_config(config), reactor, threaded_merges=True)
        self.index.setServiceParent(self)
        self._index_pending: dict[tuple[str, str, int], Any] = {}
        self.append_observers.append(self._index_appended)
        retention = internet.TimerService(60.0, self._apply_retention)
        retention.setName("retention")
        retention.setServiceParent(self)
        self.sessions: dict[str, SessionManager] = {}
        self._build_sessions()
        self.control: RouterEndpoint | None = None
        if config.control:
            handlers = {**control_handlers(self.sessions), "status": status_handler(self), "search": self._search}
            self.control = RouterEndpoint(self.zmq, config.control, handlers, config.max_request_age, reactor)
            self.control.setName("control")
            self.control.setServiceParent(self)
        self.ping = self._build_ping()
        if config.metrics:
            MetricsService(self, config.metrics, reactor, control=self.control).setServiceParent(self)
        if config.manhole:
            manhole_service(self, config.manhole, config.manhole_passwd).setServiceParent(self)
        store_sync = internet.TimerService(1.0, self.store.sync)
        store_sync.setName("store-sync")
        store_sync.setServiceParent(self)

    def _host_tap(self, host: HostConfig) -> HostTap:
        host_tap = self.hosts.get(host.name)
        if host_tap is None:
            host_tap = self.hosts[host.name] = HostTap(host, self.config.data_dir, self.reactor)
            host_tap.setServiceParent(self)
        return host_tap

    def _build_taps(self) -> None:
        for host, tap, pattern in self.config.watches():
            host_tap = self._host_tap(host)
            host_tap.watch_interval = self.config.watch_interval
            host_tap.add_pattern(pattern, tap.name)
            host_tap.file_tap_factory = lambda path, tap_name, h=host_tap: self._add_file_tap(h, path, tap_name)
            if not is_glob(pattern):
                self._add_file_tap(host_tap, pattern, tap.name)
        for mirrored in self.store.files():  # files a glob matched in an earlier run
            host_tap = self.hosts.get(mirrored.host)
            known = (mirrored.host, mirrored.path) in self.followers
            if host_tap is not None and not known and mirrored.tap in {t for t in host_tap.patterns.values()}:
                self._add_file_tap(host_tap, mirrored.path, mirrored.tap)

    def _add_file_tap(self, host_tap: HostTap, path: str, tap_name: str) -> FileTap:
        tap = self.config.taps[tap_name]
        mirrored = self.store.file(host_tap.host.name, path, tap.name)
        key = (host_tap.host.name, path)
        publish = lambda generation, offset, record, m=mirrored: self._publish_record(m, generation, offset, record)
        self.pipelines[key] = LinePipeline(tap, self.reactor, publish, self._external_parser(tap))
        self.followers[key] = MirrorFollower(mirrored, self._follow_line, self.reactor)
        file_tap = FileTap(host_tap, mirrored, self.config.watch_interval, self._appended)
        host_tap.add_file_tap(file_tap)
        return file_tap

    def _index_appended(self, mirrored: MirroredFile, generation: int | None, remote_size: int) -> None:
        """Index new lines soon; while a file is catching up on a big backlog, in
        bounded slices at a slower pace, so the mirror keeps the reactor (as the
        live stream does, see rill.lines)."""
        if generation is None or not self.index.running:
            return
        key = (mirrored.host, mirrored.path, generation)
        if key in self._index_pending:
            return
        catching_up = remote_size - mirrored.length(generation) > BACKLOG
        self._index_pending[key] = self.reactor.callLater(1.0 if catching_up else 0, self._index_step, mirrored, generation, remote_size)

    def _index_step(self, mirrored: MirroredFile, generation: int, remote_size: int) -> None:
        key = (mirrored.host, mirrored.path, generation)
        del self._index_pending[key]
        if not self.index.running:
            return
        self.index.notify(mirrored.host, mirrored.path, generation, max_bytes=INDEX_SLICE)
        if mirrored.length(generation) - self.index.indexed_to(*key) > 65536:
            self._index_appended(mirrored, generation, remote_size)

    def _apply_retention(self) -> None:
        self.index.apply_retention_all(self.config.taps.values())

    def _search(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control ROUTER's ``search``: ``query``, optional ``cursor``, ``limit``, ``count``, ``histogram``."""
        query = request.get("query")
        if not isinstance(query, str):
            raise RequestError("search needs a string field 'query'")
        limit = request.get("limit", 100)
        if not isinstance(limit, int) or not 0 < limit <= 10000:
            raise RequestError("'limit' must be a whole number from 1 to 10000")
        try:
            return self.index.search(query, request.get("cursor"), limit, bool(request.get("count")), request.get("histogram"))
        except QueryError as e:
            raise RequestError(f"bad query: {e}") from None

    def _build_sessions(self) -> None:
        """A session manager per host on its tap's connection; a warm pool where a
        ``signal =`` endpoint invites clients, sessions on demand (through
        ``control``) elsewhere -- five idle shells on every host of a fleet would
        be a heavy footprint nobody asked for."""
        for host in self.config.hosts.values():
            if host.name not in self.hosts and host.signal is None:
                continue
            host_tap = self._host_tap(host)
            manager = SessionManager(
                host_tap.open_channel,
                self.config.session_pool if host.signal else 0,
                self.config.max_sessions,
                self.reactor,
                host.name,
                zmq_factory=self.zmq,
                channel_closed=host_tap.channel_closed,
                is_connected=lambda tap=host_tap: tap.connected,
            )
            manager.setName(f"sessions:{host.name}")
            host_tap.when_connected(manager.host_connected)
            manager.setServiceParent(self)
            self.sessions[host.name] = manager
            if host.signal:
                router = RouterEndpoint(self.zmq, host.signal, session_handlers(manager), self.config.max_request_age, self.reactor)
                router.setName(f"signal:{host.name}")
                router.setServiceParent(self)

    def _build_ping(self) -> PingService | None:
        targets = [(name, tap.host.address) for name, tap in self.hosts.items() if tap.host.ping]
        if not targets:
            return None
        ping = PingService(targets, self.config.ping_interval, self.config.ping_misses, self.publisher.publish, self.reactor)
        ping.setName("ping")
        ping.add_observer(lambda host, responsive: self.hosts[host].set_reachable(responsive))
        ping.setServiceParent(self)
        return ping

    def file_taps(self) -> list[FileTap]:
        return [ft for host in self.hosts.values() for ft in host.file_taps]

    def _appended(self, mirrored: MirroredFile, remote_size: int, generation: int | None = None) -> None:
        self.followers[(mirrored.host, mirrored.path)].poke(remote_size)
        for observer in self.append_observers:
            observer(mirrored, generation, remote_size)

    def _external_parser(self, tap: TapConfig) -> ExternalParser | None:
        """One ZeroMQ client per ``parser = zmq:...`` tap, shared by its files."""
        endpoint = external_endpoint(tap.parser)
        if endpoint is None:
            return None
        if tap.name not in self.external_parsers:
            self.external_parsers[tap.name] = ExternalParser(endpoint, self.reactor)
        return self.external_parsers[tap.name]

    def _follow_line(self, mirrored: MirroredFile, generation: int, offset: int, line: bytes, received: float) -> None:
        self.pipelines[(mirrored.host, mirrored.path)].line(generation, offset, line, received)

    def _publish_record(self, mirrored: MirroredFile, generation: int, offset: int, record: dict[str, Any]) -> None:
        record = dict(record)
        message = {
            "host": mirrored.host,
            "path": mirrored.path,
            "generation": generation,
            "offset": offset,
            "datetime": record.pop("datetime"),
            "line": record.pop("contents"),
            **record,
        }
        self.publisher.publish(line_topic(mirrored.host, mirrored.path), message)

    def status(self) -> dict[str, Any]:
        """Everything an operator asks "what is it doing?" about, as plain data.

        Used by ``rill status`` (through the control ROUTER), the metrics
        collector and the manhole; cheap enough to call on every scrape.
        """
        taps = []
        for host_tap in self.hosts.values():
            for file_tap in host_tap.file_taps:
                row = file_tap.status()
                follower = self.followers.get((host_tap.host.name, file_tap.path))
                row["lines"] = follower.lines if follower else 0
                row["tap"] = file_tap.mirrored.tap
                row["reconnects"] = host_tap.stats["reconnects"]
                row["last_error"] = host_tap.last_error
                if not host_tap.connected:
                    row["state"] = host_tap.state
                row["gaps"] = len(file_tap.mirrored.gaps())
                taps.append(row)
        hosts = {name: host_tap.status() for name, host_tap in self.hosts.items()}
        extra: dict[str, Any] = {}
        if self.ping is not None:
            extra["ping"] = self.ping.status()
        if self.index.running:
            extra["index"] = self.index.status()
        if self.control is not None:
            extra["control"] = {"endpoint": self.control.bound_endpoint, "requests": dict(self.control.counts)}
        return {
            "datetime": iso_utc(self.reactor.seconds()),
            "taps": taps,
            "hosts": hosts,
            "publish": {"endpoint": self.publisher.bound_endpoint, "sent": self.publisher.sent, "failed": self.publisher.failed},
            **extra,
        }

    def stopService(self) -> Any:
        for follower in self.followers.values():
            follower.stop()
        for pipeline in self.pipelines.values():
            pipeline.stop()
        for external in self.external_parsers.values():
            external.close()
        for call in self._index_pending.values():
            if call.active():
                call.cancel()
        self._index_pending.clear()
        d = super().stopService()
        self.store.sync()
        self.zmq.shutdown()
        return d


def makeService(options: dict[str, Any]) -> service.IService:
    """twistd's entry point: read the config (one clear line per problem) and build the tree."""
    from twisted.internet import reactor

    path = find_config(options.get("config"))
    try:
        config = read_config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None
    return RillService(config, reactor)
