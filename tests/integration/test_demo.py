"""`rill demo`: a self-contained run that streams generated lines, and stops cleanly."""

from __future__ import annotations

import configparser
import os
import signal
import tempfile

from twisted.internet import defer, reactor
from twisted.trial import unittest
from txzmq import ZmqFactory

from tests.helpers import wait_for
from tests.integration.rig import BIN, Subscriber, _Output


@defer.inlineCallbacks
def start_demo(testcase: unittest.TestCase, *options: str):
    """`rill demo --dir TMP` in a child process; returns (work dir, its output, its process protocol)."""
    workdir = tempfile.mkdtemp(prefix="rill-demo-test-")
    output = bytearray()
    proto = _Output(output)
    argv = [os.path.join(BIN, "rill"), "demo", "--dir", workdir, "--rate", "50", *options]
    reactor.spawnProcess(proto, argv[0], argv, env=dict(os.environ))
    testcase.addCleanup(lambda: proto.ended if proto.ended.called else interrupt(proto))
    yield wait_for(lambda: b"Ctrl-C stops the demo" in output, 30, "the demo's instructions")
    return workdir, output, proto


def interrupt(proto: _Output):
    """Ctrl-C, as a person stops the demo; fires with its exit status."""
    proto.transport.signalProcess(signal.SIGINT)
    return proto.ended


class DemoTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_demo_streams_lines(self):
        """The demo starts, a SUB client receives generated lines within a deadline, Ctrl-C ends it with status 0."""
        workdir, output, proto = yield start_demo(self, "--rotate-every", "2")
        config = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
        config.read(os.path.join(workdir, "config.ini"))
        zmq = ZmqFactory()
        self.addCleanup(zmq.shutdown)
        sub = Subscriber(zmq, config["rill"]["publish"])
        yield wait_for(lambda: sum(len(v) for v in sub.messages.values()) >= 20, 30, "20 demo lines")
        app_log = os.path.join(workdir, "logs", "app.log")
        yield wait_for(lambda: os.path.exists(app_log + ".1"), 30, "a rotation of app.log")
        code = yield interrupt(proto)
        self.assertEqual(code, 0, output.decode(errors="replace")[-2000:])
        self.assertNotIn(b"Traceback", output)


def run_on_pty(argv: list[str], env: dict[str, str], columns: int = 80, timeout: float = 60) -> str:
    """Run a command on a real pseudo-terminal of ``columns`` columns; its screen output, escapes removed."""
    import fcntl
    import pty
    import re
    import struct
    import subprocess
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"}, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", text)


class QuickStartTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_readme_quick_start(self):
        """The README's quick start, to the letter: demo, then tail, search, status and cat in another terminal, then stop."""
        from twisted.internet import threads

        workdir, output, proto = yield start_demo(self)
        instructions = output.decode()
        config = os.path.join(workdir, "config.ini")
        self.assertIn(f"export RILL_CONFIG={config}", instructions)
        env = {**os.environ, "RILL_CONFIG": config, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
        rill = os.path.join(BIN, "rill")

        def run(*args: str) -> str:
            import subprocess

            return subprocess.run([rill, *args], env=env, capture_output=True, text=True, timeout=60, check=True).stdout

        tailed = yield threads.deferToThread(run, "tail", "--count", "5")
        self.assertEqual(len(tailed.splitlines()), 5)
        self.assertTrue(all(line.startswith("demo /") for line in tailed.splitlines()), tailed)
        app_log = os.path.join(workdir, "logs", "app.log")
        yield wait_for(lambda: b"ERROR" in open(app_log, "rb").read() or os.path.exists(app_log + ".1"), 60, "an ERROR line")
        searched = yield wait_for(
            lambda: (lambda out: out if "ERROR" in out else None)(run_on_pty([rill, "search", "error"], env)),
            30, "rill search to find an error",
        )
        hits = [line for line in searched.splitlines() if "ERROR" in line]
        self.assertTrue(hits and all("demo:" in line and "app.log" in line for line in hits), searched)
        status = run_on_pty([rill, "status"], env)
        self.assertIn("demo", status)
        self.assertIn("streaming", status)
        self.assertTrue(all(len(line) <= 80 for line in status.splitlines()), status)
        mirrored = yield threads.deferToThread(run, "cat", "demo", app_log)
        self.assertTrue(mirrored)
        code = yield interrupt(proto)
        self.assertEqual(code, 0)
