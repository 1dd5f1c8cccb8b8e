"""The stream command run by real shells: BusyBox ash with only BusyBox applets, and GNU bash with coreutils.

No sshd is needed to prove what the command itself does: these run it as the
target's login shell would.  Files are changed while it follows them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest, TestCase

from rill import remote, watch
from tests.helpers import wait_for


def command_lines(requests: list[tuple[str, int]]) -> str:
    return "".join(f"{n} {name}\n" for name, n in requests)


class _Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.errors = b""
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.exited = False

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason: Any) -> None:
        self.exited = True
        self.ended.callback(None)


def holders(path: str) -> int:
    """How many open descriptors, in any process, point at ``path``."""
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}") == path
            except OSError:
                pass
    return count


class StreamCommandMixin:
    busybox = False

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rill-remote-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "app log's $HOME.log")
        if self.busybox:
            busybox = shutil.which("busybox")
            if busybox is None:
                raise SkipTest("busybox is not installed (.ci/run installs it)")
            applets = os.path.join(self.dir, "bin")
            os.mkdir(applets)
            for applet in subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split():
                os.symlink(busybox, os.path.join(applets, applet))
            self.argv, self.env = [os.path.join(applets, "sh"), "-c"], {"PATH": applets}
        else:
            self.argv, self.env = ["/bin/sh", "-c"], {"PATH": "/usr/bin:/bin"}

    def start_command(self, command: str) -> _Collect:
        collect = _Collect()
        transport = reactor.spawnProcess(collect, self.argv[0], [*self.argv, command], env=self.env)

        def stop() -> defer.Deferred[None] | None:
            # As sshd does when the client closes the channel: the pipes go, no signal.
            if collect.exited:
                return None
            transport.loseConnection()
            return collect.ended

        self.addCleanup(stop)
        self.transport = transport
        return collect

    def write(self, data: bytes, mode: str = "ab") -> None:
        with open(self.path, mode) as f:
            f.write(data)

    @defer.inlineCallbacks
    def test_follows_then_stops_at_a_truncation(self) -> Any:
        """Bytes after the offset, then appends; a truncation shows as the notice, before any byte of the new file."""
        self.write(b"a1\na2\n", "wb")
        stream = self.start_command(remote.stream_command(self.path, 3))
        yield wait_for(lambda: stream.output.endswith(b"a2\n"), 10, "the bytes after the offset")
        header, _, rest = stream.output.partition(b"\n")
        st = os.stat(self.path)
        check = hashlib.md5(b"a1\n").hexdigest()
        expected = f"RILL {st.st_dev} {st.st_ino} 6 {check}".encode()
        self.assertEqual(header, expected)
        self.assertEqual(rest, b"a2\n")
        self.write(b"a3\n")
        yield wait_for(lambda: stream.output.endswith(b"a3\n"), 10, "an appended line")
        self.write(b"", "wb")
        yield wait_for(lambda: remote.TRUNCATED in stream.output, 10, "the truncation notice")
        self.write(b"b1\n")
        before, _, after = stream.output.partition(remote.TRUNCATED)
        self.assertTrue(before.endswith(b"a2\na3\n"))
        self.assertNotIn(b"b1", before)
        if self.busybox:
            yield wait_for(lambda: stream.exited, 10, "the BusyBox follower to stop after the notice")
            self.assertEqual(after, b"")

    @defer.inlineCallbacks
    def test_follower_ends_when_its_reader_goes(self) -> Any:
        """A follower whose channel closed ends within seconds, though its file is never written again."""
        self.write(b"an old generation, finished\n", "wb")
        stream = self.start_command(remote.stream_command(self.path, 0))
        yield wait_for(lambda: stream.output.endswith(b"finished\n"), 10, "the file's bytes")
        self.assertGreater(holders(self.path), 0)
        self.transport.loseConnection()
        yield wait_for(lambda: stream.exited, 10, "the follower to end")
        yield wait_for(lambda: holders(self.path) == 0, 10, "no process to hold the file open")
        self.assertEqual(stream.errors.strip(b"."), b"")

    @defer.inlineCallbacks
    def test_header_checks_the_head_when_the_mirror_holds_less(self) -> Any:
        """At offset 0 with a recorded head the check is the md5 of the file's first bytes."""
        self.write(b"0123456789abcdef\n", "wb")
        stream = self.start_command(remote.stream_command(self.path, 0, follow=False, head=10))
        yield stream.ended
        header = stream.output.split(b"\n", 1)[0]
        self.assertTrue(header.endswith(hashlib.md5(b"0123456789").hexdigest().encode()), header)

    @defer.inlineCallbacks
    def test_heads_of_hundreds_of_files(self) -> Any:
        """Heads for hundreds of rotated files in one command (once more than one shell argument held)."""
        self.write(b"first line\n" * 3, "wb")
        with gzip.open(self.path + ".1.gz", "wb") as f:
            f.write(b"zipped\n" * 3)
        requests = [(self.path, 4), (self.path + ".1.gz", 9), (self.path + ".2", 4)]
        requests += [(os.path.join(self.dir, f"rotated-{i:04d}-" + "x" * 60), 1024) for i in range(700)]
        requests.append((self.path, 6))  # past the limit: left for a later poll
        command = watch.heads_command(requests, limit=len(command_lines(requests[:-1])))
        run = self.start_command(command)
        yield run.ended
        self.assertEqual(run.errors, b"")
        heads = watch.parse_heads_with_identity(run.output)
        self.assertEqual(heads[self.path][1], {4: hashlib.md5(b"firs").hexdigest()})  # not 6: beyond the limit
        self.assertEqual(heads[self.path + ".1.gz"][1], {9: hashlib.md5(b"zipped\nzi").hexdigest()})
        self.assertNotIn(self.path + ".2", heads)  # missing: no head, no error
        self.assertTrue(run.output.endswith(b"E\n"))


class BusyBoxStreamCommandTests(StreamCommandMixin, TestCase):
    busybox = True


class GNUStreamCommandTests(StreamCommandMixin, TestCase):
    busybox = False
