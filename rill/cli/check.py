"""``rill check``: validate the config, then try every login and say which failed and why."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.conch.ssh.channel import SSHChannel
from twisted.internet import defer, task
from twisted.internet.endpoints import HostnameEndpoint

from rill.cli.common import load_config
from rill.config import HostConfig, RillConfig
from rill.remote import probe_command
from rill.sshclient import SSHClientFactory, classify, exec_request

CONCURRENT_LOGINS = 10  # sshd's default MaxStartups drops bursts of handshakes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check", help="validate the config and try every login")
    parser.add_argument("--no-login", action="store_true", help="only validate the config")
    parser.set_defaults(func=run)


class _Probe(SSHChannel):
    name = b"session"

    def __init__(self) -> None:
        super().__init__()
        self.output = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def channelOpen(self, data: bytes) -> None:
        exec_request(self.conn, self, probe_command()).addErrback(self.done.errback)

    def openFailed(self, reason: Any) -> None:
        self.done.errback(reason)

    def dataReceived(self, data: bytes) -> None:
        self.output += data

    def closed(self) -> None:
        if not self.done.called:
            self.done.callback(self.output)


@defer.inlineCallbacks
def check_login(reactor: Any, host: HostConfig, data_dir: str) -> Any:
    """One line saying whether ``host`` lets Rill in and has the tools it needs."""
    endpoint = HostnameEndpoint(reactor, host.address.encode(), host.port, timeout=host.connect_timeout)
    try:
        proto = yield endpoint.connect(SSHClientFactory(host, data_dir, reactor))
        conn = yield proto.ready
        probe = _Probe()
        conn.openChannel(probe)
        output = yield probe.done.addTimeout(host.connect_timeout, reactor)
        proto.transport.loseConnection()
    except Exception:
        failure = classify(defer.Failure())
        return False, f"{host.name}: {failure}"
    lacks = [line.split()[1].decode() for line in output.splitlines() if line.startswith(b"RILL-LACKS")]
    if b"RILL-OK" not in output:
        return False, f"{host.name}: logged in, but the probe command printed nothing"
    if lacks:
        return False, f"{host.name}: logged in, but the target lacks {', '.join(lacks)}"
    return True, f"{host.name}: ok ({host.username}@{host.address}:{host.port})"


def check_all(reactor: Any, config: RillConfig) -> defer.Deferred[list[tuple[bool, str]]]:
    semaphore = defer.DeferredSemaphore(CONCURRENT_LOGINS)
    used = {h for tap in config.taps.values() for h in tap.hosts}
    hosts = [config.hosts[name] for name in sorted(config.hosts) if name in used or not config.taps]
    return defer.gatherResults([semaphore.run(check_login, reactor, h, config.data_dir) for h in hosts])


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    print(f"{config.source}: configuration ok ({len(config.hosts)} hosts, {len(config.taps)} taps)")
    if args.no_login:
        return 0
    results: list[tuple[bool, str]] = []

    def main(reactor: Any) -> defer.Deferred[None]:
        return check_all(reactor, config).addCallback(results.extend)

    try:
        task.react(main)
    except SystemExit as e:
        if e.code:
            return int(e.code)
    for ok, line in results:
        print(line if ok else f"FAILED {line}", file=sys.stdout if ok else sys.stderr)
    return 0 if all(ok for ok, _ in results) else 1
