"""The chaos run shared by the chaos test and ``bench/soak.py``.

Numbered lines go into several files on the real sshd while, at random, the
files rotate (create, several deep, gzip, copytruncate), a TCP proxy between
Rill and sshd cuts the link (RST, or a silent blackhole that only keepalives
notice), and ``twistd rill`` is SIGKILLed and restarted.  When writing stops,
every generation's mirror must equal the server's bytes, every line must be
there exactly once, and there must be no gap records.
"""

from __future__ import annotations

import gzip
import os
import random
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.logger import Logger

from rill.store.mirror import MirrorStore
from tests.helpers import wait_for
from tests.integration.rig import RillProcess, Workspace
from tests.integration.sshd import Login, SSHServer, free_port, make_target_dir

log = Logger()

#: Seconds after a silent cut before the server's side of it is dropped.
SERVER_GIVES_UP = 10.0


class _Pipe(protocol.Protocol):
    def __init__(self, proxy: ChaosProxy) -> None:
        self.proxy = proxy
        self.peer: _Pipe | None = None
        self.buffer = b""
        self.silent = False

    def dataReceived(self, data: bytes) -> None:
        if self.silent:
            return  # a blackhole: bytes vanish, nobody is told
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.buffer += data

    def connectionLost(self, reason: object) -> None:
        self.proxy.pipes.discard(self)
        if self.peer is not None and self.peer.transport is not None and not self.silent:
            self.peer.transport.loseConnection()


class _Upstream(_Pipe):
    def connectionMade(self) -> None:
        self.proxy.pipes.add(self)
        assert self.peer is not None
        self.peer.peer = self
        if self.peer.buffer:
            self.transport.write(self.peer.buffer)
            self.peer.buffer = b""


class _Downstream(_Pipe):
    def connectionMade(self) -> None:
        self.proxy.pipes.add(self)
        upstream = _Upstream(self.proxy)
        upstream.peer = self
        protocol.ClientCreator(reactor, lambda: upstream).connectTCP("127.0.0.1", self.proxy.target_port).addErrback(
            lambda _: self.transport.abortConnection()
        )


class ChaosProxy(protocol.Factory):
    """A TCP proxy in the test's reactor that can reset or silently drop its connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.pipes: set[_Pipe] = set()
        self.hanging: list[Any] = []
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")

    def buildProtocol(self, addr: object) -> _Downstream:
        return _Downstream(self)

    def reset(self) -> None:
        for pipe in list(self.pipes):
            pipe.transport.abortConnection()

    def blackhole(self) -> None:
        for pipe in list(self.pipes):
            pipe.silent = True
            self.pipes.discard(pipe)  # left hanging: only the client's keepalives end it, on its side
            # The server's side gives up later (its TCP retransmissions, or ClientAlive in
            # a real sshd_config); without that every cut would leave a session running.
            self.hanging.append(reactor.callLater(SERVER_GIVES_UP, pipe.transport.abortConnection))

    def close(self) -> defer.Deferred[None]:
        for call in self.hanging:
            if call.active():
                call.cancel()
        self.reset()
        return defer.maybeDeferred(self.port.stopListening)


class ChaosFile:
    """A file on the server and the model of its generations (the bytes each holds)."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self.generations: list[bytearray] = [bytearray()]
        self.n = 0
        self.rotated = 0  # how many rotated files exist: .1 .. .N (some gzip'd)
        open(path, "ab").close()
        os.chmod(path, 0o644)

    def write(self, count: int) -> None:
        data = b"".join(b"%s %09d padding-%s\n" % (self.name.encode(), self.n + i, b"x" * random.randint(0, 80)) for i in range(count))
        self.n += count
        with open(self.path, "ab") as f:
            f.write(data)
        self.generations[-1] += data

    def _rotated_name(self, i: int) -> str:
        plain = f"{self.path}.{i}"
        return plain if os.path.exists(plain) else f"{plain}.gz"

    def rotate(self) -> None:
        """path.N -> path.N+1 (keeping .gz), path -> path.1, new path; nothing is ever deleted."""
        self.rotate_names_only()
        os.replace(self.path, f"{self.path}.1")
        open(self.path, "ab").close()
        os.chmod(self.path, 0o644)
        self.rotated += 1
        self.generations.append(bytearray())

    def compress_oldest_plain(self) -> None:
        for i in range(self.rotated, 1, -1):
            plain = f"{self.path}.{i}"
            if os.path.exists(plain):
                with open(plain, "rb") as src, gzip.open(f"{plain}.gz", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.chmod(f"{plain}.gz", 0o644)
                os.unlink(plain)
                return

    def copytruncate(self) -> None:
        self.rotate_names_only()
        shutil.copyfile(self.path, f"{self.path}.1")
        os.chmod(f"{self.path}.1", 0o644)
        with open(self.path, "r+b") as f:
            f.truncate(0)
        self.rotated += 1
        self.generations.append(bytearray())

    def rotate_names_only(self) -> None:
        """path.N[.gz] -> path.N+1[.gz], oldest first."""
        for i in range(self.rotated, 0, -1):
            old = self._rotated_name(i)
            os.replace(old, f"{self.path}.{i + 1}" + (".gz" if old.endswith(".gz") else ""))


@dataclass
class ChaosReport:
    written: int = 0
    mirrored: int = 0
    lost: int = 0
    duplicated: int = 0
    reconnect_cuts: int = 0
    silent_cuts: int = 0
    restarts: int = 0
    rotations: int = 0
    gaps: int = 0
    mismatched_generations: list[str] = field(default_factory=list)
    out_of_order: int = 0  # files whose generations are all exact but numbered in another order
    order_differences: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"lines written {self.written}, mirrored {self.mirrored}, lost {self.lost}, duplicated {self.duplicated}, "
            f"link resets {self.reconnect_cuts}, silent cuts {self.silent_cuts}, restarts {self.restarts}, "
            f"rotations {self.rotations}, gaps {self.gaps}, mismatched generations {len(self.mismatched_generations)}, "
            f"files with generations out of order {self.out_of_order}"
        )


class ChaosRun:
    def __init__(
        self, server: SSHServer, login: Login, seconds: float, seed: int | None = None, converge_seconds: float = 90
    ) -> None:
        self.converge_seconds = converge_seconds  # a long run leaves hundreds of generations to catch up on
        self.server = server
        self.login = login
        self.seconds = seconds
        self.random = random.Random(seed)
        self.workspace = Workspace()
        self.target = make_target_dir("rill-chaos-")
        self.files = [ChaosFile(os.path.join(self.target, f"{name}.log"), name) for name in ("alpha", "beta")]
        self.proxy = ChaosProxy(server.port)
        self.report = ChaosReport()
        self.events: list[str] = []
        config = self.workspace.write_config(
            f"[rill]\ndata_dir = {self.workspace.data_dir}\npublish = tcp://127.0.0.1:{free_port()}\n"
            f"control = tcp://127.0.0.1:{free_port()}\nwatch_interval = 0.2\n"
            f"[host:chaos]\naddress = 127.0.0.1\nport = {self.proxy.port.getHost().port}\nusername = {login.username}\n"
            f"password = {login.password}\nhost_key = {server.host_key_fingerprints()[0]}\n"
            "keepalive_interval = 0.5\nkeepalive_count = 3\nretry_initial = 0.1\nretry_max = 1\n"
            f"[tap:chaos]\nhosts = chaos\npaths = {', '.join(f.path for f in self.files)}\n"
        )
        self.rill = RillProcess(config)

    @defer.inlineCallbacks
    def run(self) -> defer.Generator[defer.Deferred[object], object, ChaosReport]:
        yield self.rill.start()
        # Rill watches a file from its first completed poll on: what rotated away
        # before that is history it must not ingest.  So the chaos starts then.
        yield wait_for(self.watching, 30, "rill's first poll of every file")
        deadline = reactor.seconds() + self.seconds
        while reactor.seconds() < deadline:
            yield self.step()
            yield task.deferLater(reactor, self.random.uniform(0.01, 0.15), lambda: None)
        yield self.converge()
        self.check()
        return self.report

    @defer.inlineCallbacks
    def step(self) -> defer.Generator[defer.Deferred[object], object, None]:
        chaos_file = self.random.choice(self.files)
        roll = self.random.random()
        self.events.append(f"{reactor.seconds():.2f} {chaos_file.name} roll={roll:.2f} gens={[len(g) for g in chaos_file.generations]}")
        if roll < 0.70:
            chaos_file.write(self.random.randint(1, 40))
        elif roll < 0.80:
            chaos_file.rotate()
            self.report.rotations += 1
        elif roll < 0.84:
            chaos_file.compress_oldest_plain()
        elif roll < 0.88:
            chaos_file.copytruncate()
            self.report.rotations += 1
        elif roll < 0.93:
            self.proxy.reset()
            self.report.reconnect_cuts += 1
        elif roll < 0.96:
            self.proxy.blackhole()
            self.report.silent_cuts += 1
        else:
            yield self.rill.kill()
            self.report.restarts += 1
            yield self.rill.start()

    def watching(self) -> bool:
        store = MirrorStore(self.workspace.data_dir)
        for f in self.files:
            mirrored = store.find("chaos", f.path)
            if mirrored is None or mirrored.last_poll_time is None:
                return False
        return True

    @defer.inlineCallbacks
    def converge(self) -> defer.Generator[defer.Deferred[object], object, None]:
        def done() -> bool:
            store = MirrorStore(self.workspace.data_dir)
            return all(self.mirrored_generations(store, f) == self.server_generations(f) for f in self.files)

        try:
            yield wait_for(done, self.converge_seconds, "the mirrors to converge after the chaos")
        except AssertionError:
            log.warn("chaos run did not converge: {report}", report=self.report.line())

    @staticmethod
    def mirrored_generations(store: MirrorStore, f: ChaosFile) -> list[bytes]:
        """The mirror's non-empty generations of ``f``, in order (an empty generation holds no line)."""
        mirrored = store.find("chaos", f.path)
        return [data for data in (mirrored.read(g.number) for g in mirrored.generations()) if data] if mirrored else []

    @staticmethod
    def server_generations(f: ChaosFile) -> list[bytes]:
        return [bytes(g) for g in f.generations if g]

    def check(self) -> None:
        store = MirrorStore(self.workspace.data_dir)
        for f in self.files:
            mirrored = store.find("chaos", f.path)
            self.report.gaps += len(mirrored.gaps()) if mirrored else 0
            got, expected = self.mirrored_generations(store, f), self.server_generations(f)
            if got != expected and sorted(got) == sorted(expected):
                self.report.out_of_order += 1  # every generation exact; the numbering differs (see rill/rotation.py)
                first = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
                self.report.order_differences.append(
                    f"{f.name}: from the {first + 1}th non-empty generation on, mirror sizes "
                    f"{[len(g) for g in got[first:first + 4]]} vs server {[len(g) for g in expected[first:first + 4]]}"
                )
            elif got != expected:
                self.report.mismatched_generations.append(
                    f"{f.name}: mirror {[len(g) for g in got]} vs server {[len(g) for g in expected]}"
                )
            numbers = Counter(
                int(m.group(1)) for g in got for m in re.finditer(rb"^%s (\d{9}) " % f.name.encode(), g, re.M)
            )
            self.report.written += f.n
            self.report.mirrored += sum(numbers.values())
            self.report.lost += sum(1 for n in range(f.n) if n not in numbers)
            self.report.duplicated += sum(c - 1 for c in numbers.values() if c > 1)

    @defer.inlineCallbacks
    def cleanup(self) -> defer.Generator[defer.Deferred[object], object, None]:
        yield self.rill.stop()
        yield self.proxy.close()
        self.workspace.cleanup()
        shutil.rmtree(self.target, ignore_errors=True)
