"""Issue 4 in the running service: parsed records on the PUB socket, an external
parser that dies mid-stream, multi-line events."""

from __future__ import annotations

import os
import sys

from twisted.internet import defer, reactor
from twisted.logger import Logger
from twisted.trial import unittest
from txzmq import ZmqFactory

from tests.helpers import wait_for
from tests.integration.rig import LineWriter, RillProcess, ServerFixture, Subscriber, _Output, host_section
from tests.integration.sshd import free_port, make_target_dir

log = Logger()
PARSER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "parser_process.py")


class ParsingTests(ServerFixture, unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        yield ServerFixture.setUp(self)
        self.target = make_target_dir()
        self.publish = f"tcp://127.0.0.1:{free_port()}"
        self.parser_endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.app = LineWriter(os.path.join(self.target, "app.log"), "app")
        self.trace = os.path.join(self.target, "trace.log")
        open(self.trace, "w").close()
        os.chmod(self.trace, 0o644)
        self.rill = RillProcess(self.workspace.write_config(
            f"[rill]\ndata_dir = {self.workspace.data_dir}\npublish = {self.publish}\n"
            f"control = tcp://127.0.0.1:{free_port()}\nwatch_interval = 0.2\n"
            + host_section("web1", self.server, self.server.gnu, ping="off")
            +
            f"[tap:app]\nhosts = web1\npath = {self.app.path}\nparser = zmq:{self.parser_endpoint}\n"
            f"[tap:trace]\nhosts = web1\npath = {self.trace}\nparser = iso8601\nmultiline = indented\n"
        ))
        self.addCleanup(self.rill.stop)
        self.keep_rill_log(self.rill)
        self.zmq = ZmqFactory()
        self.addCleanup(self.zmq.shutdown)
        self.sub = Subscriber(self.zmq, self.publish)

    def start_parser(self):
        output = bytearray()
        proto = _Output(output)
        reactor.spawnProcess(proto, sys.executable, [sys.executable, PARSER, self.parser_endpoint], env=dict(os.environ))
        self.addCleanup(lambda: None if proto.ended.called else (proto.transport.signalProcess("KILL"), proto.ended)[1])
        return wait_for(lambda: b"ready" in output, 30, "the parser process").addCallback(lambda _: proto)

    def app_messages(self):
        return [m for m in self.sub.messages[("web1", self.app.path)] if m["line"].startswith("app ")]

    @defer.inlineCallbacks
    def test_external_parser_killed_and_back(self):
        """Records flow through an external parser; while it is dead lines go out raw, flagged; then records resume."""
        parser = yield self.start_parser()
        yield self.rill.start()
        yield wait_for(lambda: self.sub.messages or self.app.write(1), 30, "the subscriber to be connected")
        self.app.write(50)
        yield wait_for(lambda: sum(m.get("parsed_by") == "external" for m in self.app_messages()) >= 50, 30, "parsed records")
        parser.transport.signalProcess("KILL")
        yield parser.ended
        self.app.write(20)
        yield wait_for(lambda: sum("parser_fault" in m for m in self.app_messages()) >= 20, 30, "raw records while the parser is down")
        yield self.start_parser()
        before = len(self.app_messages())
        self.app.write(20)
        yield wait_for(
            lambda: sum(m.get("parsed_by") == "external" for m in self.app_messages()[before:]) >= 20, 30, "records to resume"
        )
        lines = [m["line"] for m in self.app_messages()]
        self.assertEqual(lines[-90:], self.app.expected()[-90:])
        self.assertEqual(len(lines), len(set(lines)), "no line published twice")

    @defer.inlineCallbacks
    def test_multiline_events(self):
        """A stack trace's indented lines are published with their first line, one record, its time."""
        yield self.rill.start()
        # Lines published before the SUB's subscription reaches the PUB are not sent to it: the
        # trace is written once the subscriber has received something (raw app lines, no parser here).
        yield wait_for(lambda: self.sub.messages or self.app.write(1), 30, "the subscriber to be connected")
        trace = (
            "2026-11-26T10:00:00.000Z ERROR boom\n"
            "  at a.b(c.java:1)\n"
            "  at d.e(f.java:2)\n"
            "2026-11-26T10:00:01.000Z INFO next\n"
        )
        with open(self.trace, "a") as f:
            f.write(trace)
        key = ("web1", self.trace)
        yield wait_for(lambda: len(self.sub.messages[key]) >= 2, 30, "two events")
        first, second = self.sub.messages[key][:2]
        self.assertEqual(first["line"], "2026-11-26T10:00:00.000Z ERROR boom\n  at a.b(c.java:1)\n  at d.e(f.java:2)")
        self.assertEqual(first["datetime"], "2026-11-26T10:00:00.000Z")
        self.assertEqual(first["offset"], 0)
        self.assertEqual(second["line"], "2026-11-26T10:00:01.000Z INFO next")
