"""Trying every login of a config: which hosts let Rill in, and why the others did not."""

from __future__ import annotations

from typing import Any

from twisted.conch.ssh.channel import SSHChannel
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint

from rill.config import HostConfig, RillConfig
from rill.remote import probe_command
from rill.sshclient import SSHClientFactory, classify, exec_request

CONCURRENT_LOGINS = 10  # sshd's default MaxStartups drops bursts of handshakes


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
