"""Issue 3, acceptance 3: RELIABILITY's scenarios against the real sshd, GNU and BusyBox.

The oracle: a model of every generation the server's file went through (the
bytes each one holds); at the end Rill's generations must equal it byte for
byte, every numbered line exactly once, and gaps only where the model says
bytes were destroyed.
"""

from __future__ import annotations

import gzip
import os
import shutil

from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial import unittest

from rill.store.mirror import MirrorStore
from tests.helpers import wait_for
from tests.integration.rig import RillProcess, ServerFixture, host_section
from tests.integration.sshd import free_port, make_target_dir

log = Logger()


class ServerFile:
    """A log file on the test server and the model of its generations."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.generations: list[bytearray] = [bytearray()]
        self.n = 0
        self._touch(path)

    @staticmethod
    def _touch(path: str) -> None:
        with open(path, "ab"):
            pass
        os.chmod(path, 0o644)

    def write(self, count: int = 10, data: bytes | None = None, target: str | None = None, generation: int = -1) -> None:
        if data is None:
            data = b"".join(b"line %08d %s\n" % (self.n + i, b"x" * 40) for i in range(count))
            self.n += count
        with open(target or self.path, "ab") as f:
            f.write(data)
        self.generations[generation] += data

    def rotate(self, suffixes: int = 1) -> None:
        """logrotate create: path.N -> path.N+1 ..., path -> path.1, a new empty path."""
        for i in range(suffixes, 0, -1):
            if os.path.exists(f"{self.path}.{i}"):
                os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._touch(self.path)
        self.generations.append(bytearray())

    def copytruncate(self) -> None:
        shutil.copyfile(self.path, f"{self.path}.1")
        with open(self.path, "r+b") as f:
            f.truncate(0)
        self.generations.append(bytearray())

    def total(self) -> int:
        return sum(len(g) for g in self.generations)


class RotationScenarios(ServerFixture):
    busybox = False

    @defer.inlineCallbacks
    def setUp(self):
        yield ServerFixture.setUp(self)
        self.target = make_target_dir()
        self.addCleanup(shutil.rmtree, self.target, True)
        self.file = ServerFile(os.path.join(self.target, "app.log"))
        self.rill = RillProcess(self.write_config())
        self.addCleanup(self.rill.stop)
        self.keep_rill_log(self.rill)

    def write_config(self, paths: str | None = None) -> str:
        login = self.server.busybox if self.busybox else self.server.gnu
        return self.workspace.write_config(
            f"[rill]\ndata_dir = {self.workspace.data_dir}\npublish = tcp://127.0.0.1:{free_port()}\n"
            f"control = tcp://127.0.0.1:{free_port()}\nwatch_interval = 0.2\n"
            + host_section("alpha", self.server, login, keepalive_interval=1, keepalive_count=3, retry_initial=0.2, retry_max=2)
            +
            f"[tap:app]\nhosts = alpha\npath = {paths or self.file.path}\n"
        )

    def mirrored(self, path: str | None = None):
        return MirrorStore(self.workspace.data_dir).find("alpha", path or self.file.path)

    def mirror_bytes(self, path: str | None = None) -> list[bytes]:
        mirrored = self.mirrored(path)
        if mirrored is None:
            return []
        return [mirrored.read(g.number) for g in mirrored.generations()]

    @defer.inlineCallbacks
    def converged(self, model: ServerFile | None = None, timeout: float = 45):
        """Wait until the mirror holds the model's bytes, then compare them generation by generation."""
        model = model or self.file
        expected = [bytes(g) for g in model.generations]

        def done():
            got = [g for g in self.mirror_bytes(model.path)]
            return sum(map(len, got)) >= model.total() and _non_empty(got) == _non_empty(expected)

        try:
            yield wait_for(done, timeout, "the mirror to converge")
        finally:
            got = self.mirror_bytes(model.path)
            self.assertEqual(_non_empty(got), _non_empty(expected), f"generations differ: {list(map(len, got))} vs {list(map(len, expected))}")

    def gaps(self, path: str | None = None):
        mirrored = self.mirrored(path)
        return mirrored.gaps() if mirrored else []

    @defer.inlineCallbacks
    def test_rename_rotation_while_connected(self):
        """Rename rotation while streaming, with the writer still appending to the old file: all arrive, in order."""
        yield self.rill.start()
        self.file.write(50)
        yield self.converged()
        self.file.rotate()
        self.file.write(20, target=f"{self.file.path}.1", generation=-2)  # the writer has not reopened yet
        self.file.write(30)
        yield self.converged()
        self.assertEqual(self.gaps(), [])

    @defer.inlineCallbacks
    def test_two_rotations_while_disconnected(self):
        """Two rotations while the host is down: the old generation and the one we never saw come back in order."""
        yield self.rill.start()
        self.file.write(40)
        yield self.converged()
        yield self.server.stop()
        self.file.write(10)
        self.file.rotate()
        self.file.write(10)
        self.file.rotate(suffixes=2)
        self.file.write(10)
        yield self.server.start()
        yield self.converged()
        self.assertEqual(self.gaps(), [])

    @defer.inlineCallbacks
    def test_rotation_and_gzip_while_rill_is_down(self):
        """Rill is killed; the file rotates and the old generation is gzip'd: it is drained through gzip -dc."""
        yield self.rill.start()
        self.file.write(40)
        yield self.converged()
        yield self.rill.kill()
        self.file.write(15)
        self.file.rotate()
        with open(f"{self.file.path}.1", "rb") as src, gzip.open(f"{self.file.path}.1.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.unlink(f"{self.file.path}.1")
        self.file.write(5)
        yield self.rill.start()
        yield self.converged()
        self.assertEqual(self.gaps(), [])

    @defer.inlineCallbacks
    def test_copytruncate_while_connected(self):
        """copytruncate while streaming: nothing lost, nothing doubled, the new generation starts at 0."""
        yield self.rill.start()
        self.file.write(40)
        yield self.converged()
        self.file.copytruncate()
        self.file.write(25)
        yield self.converged()

    @defer.inlineCallbacks
    def test_truncation_to_zero(self):
        """Truncation in place (no copy kept): a new generation from byte 0; the truncated bytes were all mirrored."""
        yield self.rill.start()
        self.file.write(30)
        yield self.converged()
        with open(self.file.path, "r+b") as f:
            f.truncate(0)
        self.file.generations.append(bytearray())
        self.file.write(12)
        yield self.converged()

    @defer.inlineCallbacks
    def test_deleted_and_recreated(self):
        """The file is deleted and created anew: the new file is a new generation from byte 0."""
        yield self.rill.start()
        self.file.write(30)
        yield self.converged()
        os.unlink(self.file.path)
        self.file._touch(self.file.path)
        self.file.generations.append(bytearray())
        self.file.write(7)
        yield self.converged()

    @defer.inlineCallbacks
    def test_rewritten_while_down_with_same_size(self):
        """Same inode rewritten with other bytes past our offset while Rill is down: caught by the content check."""
        yield self.rill.start()
        self.file.write(20)
        yield self.converged()
        yield self.rill.kill()
        with open(self.file.path, "r+b") as f:
            f.truncate(0)
        self.file.generations.append(bytearray())
        self.file.write(data=b"another file entirely\n" * 80)
        yield self.rill.start()
        yield self.converged()

    @defer.inlineCallbacks
    def test_glob_picks_up_new_file(self):
        """A glob tap mirrors a file that appears later from byte 0, and not its rotated name as a file of its own."""
        self.rill = RillProcess(self.write_config(paths=os.path.join(self.target, "*.log")))
        self.addCleanup(self.rill.stop)
        yield self.rill.start()
        self.file.write(10)
        yield self.converged()
        later = ServerFile(os.path.join(self.target, "later.log"))
        later.write(15)
        yield self.converged(later)
        self.file.rotate()
        self.file.write(5)
        yield self.converged()
        self.assertIsNone(self.mirrored(f"{self.file.path}.1"))

    @defer.inlineCallbacks
    def test_long_line_partial_line_and_binary(self):
        """A 1.5 MiB line, a last line without newline completed later, and invalid UTF-8 stay byte-exact."""
        yield self.rill.start()
        self.file.write(data=b"A" * (3 << 19) + b"\n")
        self.file.write(data=b"\xff\xfe binary \x00 bytes \xc3\x28\n")
        self.file.write(data=b"no newline yet")
        yield self.converged()
        self.file.write(data=b" ... done\n")
        yield self.converged()


def _non_empty(generations: list[bytes]) -> list[bytes]:
    """Empty generations (a file created and rotated before it got a byte) are not compared."""
    return [g for g in generations if g]


class GNURotationTests(RotationScenarios, unittest.TestCase):
    """Against the GNU coreutils login."""

    timeout = 120


class BusyBoxRotationTests(RotationScenarios, unittest.TestCase):
    """Against the BusyBox-only login."""

    busybox = True
    timeout = 120
