"""``twistd rill -c config.ini``: build Rill's named service tree.

    rill                       MultiService
    ├── publish                the data PUB socket
    ├── host:<name>            one per host: SSH connections + file taps
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
from rill.config import ConfigError, RillConfig, find_config, read_config
from rill.filetap import FileTap
from rill.lines import MirrorFollower
from rill.parsers import make_parser
from rill.protocols.data import DataPublisher, line_topic
from rill.store.mirror import MirroredFile, MirrorStore

log = Logger()


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
        self.parsers: dict[tuple[str, str], Any] = {}
        self.hosts: dict[str, HostTap] = {}
        self.append_observers: list[Any] = []
        self._build_taps()
        internet.TimerService(1.0, self.store.sync).setServiceParent(self)

    def _build_taps(self) -> None:
        for host, tap, path in self.config.watches():
            host_tap = self.hosts.get(host.name)
            if host_tap is None:
                host_tap = self.hosts[host.name] = HostTap(host, self.config.data_dir, self.reactor)
                host_tap.setServiceParent(self)
            mirrored = self.store.file(host.name, path, tap.name)
            self.parsers[(host.name, path)] = make_parser(tap)
            self.followers[(host.name, path)] = MirrorFollower(mirrored, self._publish_line, self.reactor)
            host_tap.add_file_tap(FileTap(host_tap, mirrored, self.config.watch_interval, self._appended))

    def file_taps(self) -> list[FileTap]:
        return [ft for host in self.hosts.values() for ft in host.file_taps]

    def _appended(self, mirrored: MirroredFile) -> None:
        self.followers[(mirrored.host, mirrored.path)].poke()
        for observer in self.append_observers:
            observer(mirrored)

    def _publish_line(self, mirrored: MirroredFile, generation: int, offset: int, line: bytes, received: float) -> None:
        record = self.parsers[(mirrored.host, mirrored.path)].parse(line, received)
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

    def stopService(self) -> Any:
        for follower in self.followers.values():
            follower.stop()
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
