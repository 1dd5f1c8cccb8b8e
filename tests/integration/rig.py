"""Run the real thing: ``twistd rill`` as a child process, a ZeroMQ SUB client,
and writers of numbered lines into files the test sshd serves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.logger import Logger
from txzmq import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqSubConnection

from tests.helpers import wait_for
from tests.integration.sshd import Login, SSHServer, free_port

BIN = os.path.dirname(sys.executable)
_log = Logger()


def rill_command(*args: str) -> list[str]:
    return [os.path.join(BIN, "rill"), *args]


def config_text(
    data_dir: str,
    server: SSHServer,
    logins: dict[str, Login],
    taps: dict[str, tuple[list[str], list[str]]],
    publish: str,
    extra_rill: str = "",
    extra_host: str = "",
) -> str:
    """A config watching ``taps`` (name -> (host names, paths)) on the test sshd."""
    parts = [f"[rill]\ndata_dir = {data_dir}\npublish = {publish}\ncontrol = tcp://127.0.0.1:{free_port()}\n{extra_rill}"]
    for name, login in logins.items():
        parts.append(host_section(name, server, login, keepalive_interval=1, keepalive_count=3) + extra_host)
    for name, (hosts, paths) in taps.items():
        parts.append(f"[tap:{name}]\nhosts = {', '.join(hosts)}\npaths = {', '.join(paths)}\n")
    return "\n".join(parts)


def host_section(name: str, server: SSHServer, login: Login, **extra: object) -> str:
    """A ``[host:NAME]`` section logging in to the test sshd, pinned to its ed25519 key."""
    lines = [
        f"[host:{name}]",
        f"address = {server.address}",
        f"port = {server.port}",
        f"username = {login.username}",
        f"password = {login.password}",
        f"host_key = {server.host_key_fingerprints()[0]}",
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


class ServerFixture:
    """setUp for integration tests: a running private sshd and a workspace, both cleaned up."""

    server_options: dict[str, object] = {}

    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.server = SSHServer(**self.server_options)
        yield self.server.start()
        self.addCleanup(self.server.cleanup)
        self.workspace = Workspace()
        self.addCleanup(self.workspace.cleanup)

    def keep_rill_log(self, rill: RillProcess) -> None:
        """Keep the child's output when the test ends (read it when a test fails)."""
        self.addCleanup(rill.save_log, self.id())


class _Output(protocol.ProcessProtocol):
    def __init__(self, sink: bytearray) -> None:
        self.sink = sink
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.sink += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))


class RillProcess:
    """``twistd -n rill -c CONFIG`` in a child process, restartable, killable."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.log = bytearray()
        self._proto: _Output | None = None
        self.starts = 0

    def start(self) -> defer.Deferred[Any]:
        assert self._proto is None
        self.starts += 1
        mark = len(self.log)
        self._proto = _Output(self.log)
        argv = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "rill", "-c", self.config_path]
        reactor.spawnProcess(self._proto, argv[0], argv, env=dict(os.environ))
        return wait_for(lambda: b"publishing lines on" in self.log[mark:], 30, "twistd rill to start")

    def kill(self, sig: int = signal.SIGKILL) -> defer.Deferred[int]:
        proto, self._proto = self._proto, None
        assert proto is not None
        proto.transport.signalProcess(sig)
        return proto.ended

    def stop(self) -> defer.Deferred[int]:
        return self.kill(signal.SIGTERM) if self._proto is not None else defer.succeed(0)

    def log_text(self) -> str:
        return self.log.decode(errors="replace")

    def save_log(self, name: str) -> None:
        """Write the output to ``<name>.twistd.log`` in the working directory (trial's temp directory).

        A file, not the test log: a chaos run's debug output exceeds what a
        ``trial -j`` worker can send in one message.
        """
        path = os.path.abspath(f"{name}.twistd.log")
        with open(path, "wb") as f:
            f.write(self.log)
        _log.info("twistd rill output: {path}", path=path)


class Subscriber(ZmqSubConnection):
    """Collects every line message, per (host, path)."""

    highWaterMark = 1_000_000

    def __init__(self, factory: ZmqFactory, endpoint: str) -> None:
        super().__init__(factory, ZmqEndpoint(ZmqEndpointType.connect, endpoint))
        self.subscribe(b"")
        self.messages: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.topics: list[bytes] = []

    def messageReceived(self, message: list[bytes]) -> None:
        topic, payload = message
        self.topics.append(topic)
        if topic.startswith(b"line/"):
            body = json.loads(payload)
            self.messages[(body["host"], body["path"])].append(body)

    def gotMessage(self, *args: Any) -> None:  # unused: messageReceived is overridden
        pass

    def lines(self, host: str, path: str) -> list[str]:
        return [m["line"] for m in self.messages[(host, path)]]


class LineWriter:
    """Appends numbered lines to a file the sshd's users can read."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self.count = 0
        with open(path, "ab"):
            pass
        os.chmod(path, 0o644)

    def line(self, n: int) -> str:
        return f"{self.name} {n:08d} the quick brown fox jumps over the lazy dog"

    def write(self, n: int) -> None:
        with open(self.path, "a") as f:
            f.writelines(self.line(self.count + i) + "\n" for i in range(n))
        self.count += n

    def expected(self) -> list[str]:
        return [self.line(i) for i in range(self.count)]


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def rill_cat(config_path: str, host: str, path: str) -> bytes:
    return subprocess.run(rill_command("-c", config_path, "cat", host, path), capture_output=True, check=True).stdout


class Workspace:
    """A temporary directory for one test's data_dir and config, removed afterwards."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rill-test-")
        self.data_dir = os.path.join(self.dir, "data")
        self.config_path = os.path.join(self.dir, "config.ini")

    def write_config(self, text: str) -> str:
        with open(self.config_path, "w") as f:
            f.write(text)
        return self.config_path

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
