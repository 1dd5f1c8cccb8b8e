"""Issue 2 acceptance: real sshd, real twistd, real ZeroMQ, real files."""

from __future__ import annotations

import hashlib
import os

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.logger import Logger
from txzmq import ZmqFactory

from tests.helpers import wait_for
from tests.integration.rig import (
    LineWriter,
    RillProcess,
    ServerFixture,
    Subscriber,
    config_text,
    rill_cat,
    sha256_file,
)
from rill.store.mirror import MirrorStore
from tests.integration.sshd import free_port, make_target_dir

LINES = 10_000
log = Logger()


class MirrorFixture(ServerFixture):
    """A test sshd, a data_dir, numbered-line writers, a twistd rill and a subscriber."""

    busybox = False
    file_names = ("app.log", "access.log", "worker.log")

    @defer.inlineCallbacks
    def setUp(self):
        yield ServerFixture.setUp(self)
        self.target = make_target_dir()
        self.writers = [LineWriter(os.path.join(self.target, name), name) for name in self.file_names]
        login = self.server.busybox if self.busybox else self.server.gnu
        self.hosts = ["alpha", "beta"]
        self.publish = f"tcp://127.0.0.1:{free_port()}"
        config = config_text(
            self.workspace.data_dir,
            self.server,
            {name: login for name in self.hosts},
            {"logs": (self.hosts, [w.path for w in self.writers])},
            self.publish,
        )
        self.config_path = self.workspace.write_config(config)
        self.rill = RillProcess(self.config_path)
        self.addCleanup(self.rill.stop)
        self.keep_rill_log(self.rill)
        self.zmq = ZmqFactory()
        self.addCleanup(self.zmq.shutdown)
        self.sub = Subscriber(self.zmq, self.publish)

    @defer.inlineCallbacks
    def synchronise(self):
        """Write sync lines until the subscriber sees them from every host: it is then subscribed."""
        marker = LineWriter(os.path.join(self.target, "app.log"), "sync")
        marker.count = 0

        def seen():
            return all(
                any(line.startswith("sync") for line in self.sub.lines(h, self.writers[0].path)) for h in self.hosts
            )

        for _ in range(600):
            with open(marker.path, "a") as f:
                f.write("sync\n")
            try:
                yield wait_for(seen, 0.1, "the subscriber to see a sync line")
                return
            except AssertionError:
                continue
        self.fail("subscriber never saw a sync line")

    @defer.inlineCallbacks
    def write_lines(self, total, chunks=50):
        """Write ``total`` numbered lines across the files, in chunks, letting the reactor run between."""
        per_chunk = max(total // (chunks * len(self.writers)), 1)
        written = 0
        while written < total:
            for writer in self.writers:
                n = min(per_chunk, total - written)
                if n <= 0:
                    break
                writer.write(n)
                written += n
            yield task.deferLater(self._reactor(), 0.01, lambda: None)

    def _reactor(self):
        return reactor

    @defer.inlineCallbacks
    def wait_mirrored(self, timeout=60):
        """Wait until every mirror holds as many bytes as its remote file."""

        def done():
            for host in self.hosts:
                for writer in self.writers:
                    mirrored = MirrorStore(self.workspace.data_dir).find(host, writer.path)
                    if mirrored is None:
                        return False
                    length = sum(mirrored.length(g.number) for g in mirrored.generations())
                    if length != os.path.getsize(writer.path):
                        return False
            return True

        yield wait_for(done, timeout, "the mirrors to catch up")

    def assert_mirrors_equal(self):
        for host in self.hosts:
            for writer in self.writers:
                mirrored = rill_cat(self.config_path, host, writer.path)
                self.assertEqual(
                    len(mirrored), os.path.getsize(writer.path), f"{host}:{writer.path} mirror length"
                )
                self.assertEqual(
                    hashlib.sha256(mirrored).hexdigest(), sha256_file(writer.path), f"{host}:{writer.path} bytes"
                )

    def assert_no_duplicates_in_mirror(self):
        for host in self.hosts:
            for writer in self.writers:
                lines = [
                    line
                    for line in rill_cat(self.config_path, host, writer.path).decode().splitlines()
                    if line.startswith(writer.name)
                ]
                self.assertEqual(lines, writer.expected(), f"{host}:{writer.path}")


class MirrorScenarios(MirrorFixture):
    """The scenarios, run against one kind of login (GNU or BusyBox)."""

    @defer.inlineCallbacks
    def test_lines_mirrored_and_published_exactly_once(self):
        """10,000 lines over two hosts and three files: mirrors byte-identical, every line published once, in order."""
        yield self.rill.start()
        yield self.synchronise()
        yield self.write_lines(LINES)
        yield self.wait_mirrored()
        self.assert_mirrors_equal()

        def published():
            return all(
                len([x for x in self.sub.lines(h, w.path) if x.startswith(w.name)]) >= w.count
                for h in self.hosts
                for w in self.writers
            )

        yield wait_for(published, 30, "every line to be published")
        for host in self.hosts:
            for writer in self.writers:
                got = [x for x in self.sub.lines(host, writer.path) if x.startswith(writer.name)]
                self.assertEqual(got, writer.expected(), f"published lines of {host}:{writer.path}")
                offsets = [m["offset"] for m in self.sub.messages[(host, writer.path)]]
                self.assertEqual(offsets, sorted(set(offsets)), "offsets strictly increase")

    @defer.inlineCallbacks
    def test_kill_minus_nine_and_restart(self):
        """SIGKILL of twistd mid-stream, restart, write on: mirrors equal the remote bytes, no line twice."""
        yield self.rill.start()
        yield self.write_lines(3000)
        yield wait_for(self._some_bytes_mirrored, 30, "a first mirrored byte")
        self.writers[0].write(500)  # in flight while the process dies
        yield self.rill.kill()
        yield self.write_lines(2000)
        yield self.rill.start()
        yield self.write_lines(2000)
        yield self.wait_mirrored()
        self.assert_mirrors_equal()
        self.assert_no_duplicates_in_mirror()

    def _some_bytes_mirrored(self):
        mirrored = MirrorStore(self.workspace.data_dir).find(self.hosts[0], self.writers[0].path)
        return mirrored is not None and mirrored.generations() and mirrored.length(1) > 0

    @defer.inlineCallbacks
    def test_sshd_down_and_back(self):
        """The sshd stops while lines are written, then comes back: the mirrors converge, nothing lost or doubled."""
        yield self.rill.start()
        yield self.write_lines(2000)
        yield wait_for(lambda: self._some_bytes_mirrored(), 30, "a first mirrored byte")
        yield self.server.stop()
        yield self.write_lines(2000)
        yield self.server.start()
        yield self.write_lines(2000)
        yield self.wait_mirrored(timeout=90)
        self.assert_mirrors_equal()
        self.assert_no_duplicates_in_mirror()
        self.assertIn("connection 0 lost", self.rill.log_text())


class GNUMirrorTests(MirrorScenarios, unittest.TestCase):
    """Against the GNU coreutils login."""

    timeout = 180


class BusyBoxMirrorTests(MirrorScenarios, unittest.TestCase):
    """Against the BusyBox-only login."""

    busybox = True
    timeout = 180


class AwkwardPathTests(MirrorFixture, unittest.TestCase):
    """A file name with a space, a quote and a dollar sign."""

    file_names = ("it's a $HOME log.txt",)
    timeout = 120

    @defer.inlineCallbacks
    def test_lines_mirrored_and_published_exactly_once(self):
        """A path with a space, a quote and a $ is mirrored byte for byte."""
        yield self.rill.start()
        yield self.write_lines(500, chunks=5)
        yield self.wait_mirrored()
        self.assert_mirrors_equal()
        self.assert_no_duplicates_in_mirror()
