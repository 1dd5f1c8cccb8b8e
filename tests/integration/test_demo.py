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


class DemoTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_demo_streams_lines(self):
        """The demo starts, a SUB client receives generated lines within a deadline, Ctrl-C ends it with status 0."""
        workdir = tempfile.mkdtemp(prefix="rill-demo-test-")
        output = bytearray()
        proto = _Output(output)
        argv = [os.path.join(BIN, "rill"), "demo", "--dir", workdir, "--rate", "50", "--rotate-every", "2"]
        reactor.spawnProcess(proto, argv[0], argv, env=dict(os.environ))
        self.addCleanup(lambda: proto.ended if proto.ended.called else self._interrupt(proto))
        yield wait_for(lambda: b"Ctrl-C stops the demo" in output, 30, "the demo's instructions")
        config = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
        config.read(os.path.join(workdir, "config.ini"))
        zmq = ZmqFactory()
        self.addCleanup(zmq.shutdown)
        sub = Subscriber(zmq, config["rill"]["publish"])
        yield wait_for(lambda: sum(len(v) for v in sub.messages.values()) >= 20, 30, "20 demo lines")
        app_log = os.path.join(workdir, "logs", "app.log")
        yield wait_for(lambda: os.path.exists(app_log + ".1"), 30, "a rotation of app.log")
        code = yield self._interrupt(proto)
        self.assertEqual(code, 0, output.decode(errors="replace")[-2000:])
        self.assertNotIn(b"Traceback", output)

    def _interrupt(self, proto):
        proto.transport.signalProcess(signal.SIGINT)
        return proto.ended
