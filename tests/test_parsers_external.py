"""External parsers over ZeroMQ: order, timeouts, garbage, reconnection, logging.

The unit tests drive :class:`ExternalParser` through an in-memory channel and a fake
clock.  The integration tests run ``tests/parser_process.py`` as a real process on a real
ZeroMQ socket, kill it mid-stream and bring it back.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rill.parsers.base import RawParser
from rill.parsers.external import ExternalParser

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parser_process.py")
R = 1795659693.0  # 2026-11-26T02:21:33Z
R_STAMP = "2026-11-26T02:21:33.000Z"


class FakeChannel:
    """An in-memory DEALER socket: remembers what was sent, can be told to refuse."""

    def __init__(self, on_message: Callable[[list[bytes]], None]) -> None:
        self.on_message = on_message
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.refuse = False

    def send(self, frames: list[bytes]) -> None:
        if self.refuse:
            raise OSError("Resource temporarily unavailable")
        assert frames[0] == b""
        self.sent.append(json.loads(frames[1]))

    def shutdown(self) -> None:
        self.closed = True

    def answer(self, request: dict[str, Any], **fields: Any) -> None:
        reply = {"id": request["id"], "datetime": request["received"], **fields}
        self.on_message([b"", json.dumps(reply).encode()])


class UnitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.channels: list[FakeChannel] = []
        self.parser = ExternalParser("tcp://127.0.0.1:1", self.clock, timeout=1.0, connect=self.connect,
                                     high_water_mark=5, log_interval=10.0)
        self.fallback = RawParser()
        self.results: list[dict[str, Any]] = []

    def connect(self, endpoint: str, on_message: Callable[[list[bytes]], None]) -> FakeChannel:
        channel = FakeChannel(on_message)
        self.channels.append(channel)
        return channel

    def send(self, *lines: bytes) -> None:
        for line in lines:
            self.parser.parse(line, R, self.fallback).addCallback(self.results.append)

    def test_out_of_order_replies_in_order_results(self) -> None:
        """Replies arriving out of order still give the records in the order the lines came."""
        self.send(b"a", b"b", b"c")
        channel = self.channels[0]
        channel.answer(channel.sent[2], n=3)
        channel.answer(channel.sent[1], n=2)
        self.assertEqual(self.results, [])
        channel.answer(channel.sent[0], n=1)
        self.assertEqual([(r["contents"], r["n"]) for r in self.results], [("a", 1), ("b", 2), ("c", 3)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_wire_format(self) -> None:
        """Requests carry id, line, received; records take reply fields but not id, contents or envelope keys."""
        self.send(b"caf\xc3\xa9 \xff")
        request = self.channels[0].sent[0]
        self.assertEqual(request, {"id": 1, "line": "café \udcff", "received": R_STAMP})
        self.channels[0].on_message([b"", json.dumps(
            {"id": 1, "datetime": "2026-11-26T03:21:33.5+01:00", "contents": "rewritten", "path": "/etc/x",
             "level": "warn"}
        ).encode()])
        self.assertEqual(self.results, [
            {"datetime": "2026-11-26T02:21:33.500Z", "contents": "café \udcff", "level": "warn"}
        ])

    def test_timeout(self) -> None:
        """An unanswered line goes out raw after the timeout, flagged; the socket is replaced."""
        self.send(b"a")
        self.clock.advance(0.5)
        self.send(b"b")
        self.clock.advance(0.5)
        self.assertEqual(self.results, [
            {"datetime": R_STAMP, "contents": "a", "parser_fault": "timeout"},
            {"datetime": R_STAMP, "contents": "b", "parser_fault": "reset"},
        ])
        self.assertTrue(self.channels[0].closed)
        self.assertEqual(len(self.channels), 2)
        self.assertEqual((self.parser.faults, self.parser.reconnects), (2, 1))

    def test_late_reply_dropped(self) -> None:
        """A reply that arrives after its line went out raw is ignored; the next line parses."""
        self.send(b"a")
        old = self.channels[0]
        self.clock.advance(1.0)
        old.answer(old.sent[0], late=True)
        self.send(b"b")
        new = self.channels[1]
        new.answer(new.sent[0], ok=True)
        self.assertEqual([r.get("parser_fault", r.get("ok")) for r in self.results], ["timeout", True])

    def test_garbage(self) -> None:
        """Non-JSON replies (NaN, too deep) go to the oldest line in flight; a bad datetime to its own line."""
        self.send(b"a", b"b", b"c")
        channel = self.channels[0]
        channel.on_message([b"", b"\x00not json"])
        channel.on_message([b"", json.dumps({"id": 2, "datetime": "yesterday"}).encode()])
        channel.on_message([b"", b'{"id": 3, "datetime": "2026-11-26T02:21:33Z", "x": NaN}'])
        channel.on_message([b"", b"[" * 100000])
        self.send(b"d")
        channel.answer(channel.sent[3], ok=True)
        self.assertEqual([r.get("parser_fault") for r in self.results], ["garbage"] * 3 + [None])
        self.assertEqual(self.parser.fault_counts["garbage"], 4)

    def test_overload(self) -> None:
        """Beyond the high-water mark lines go out raw at once, still in order."""
        self.send(*[b"%d" % i for i in range(7)])
        channel = self.channels[0]
        self.assertEqual(len(channel.sent), 5)
        for request in channel.sent:
            channel.answer(request, ok=True)
        self.assertEqual([r.get("parser_fault", "ok") for r in self.results], ["ok"] * 5 + ["overload"] * 2)

    def test_send_refused(self) -> None:
        """A socket that refuses to send (zmq.Again) costs the line its parse, not the line."""
        self.channels[0].refuse = True
        self.send(b"a")
        self.assertEqual(self.results, [{"datetime": R_STAMP, "contents": "a", "parser_fault": "overload"}])

    def test_reentrant_callback(self) -> None:
        """A callback that parses another line does not reorder or lose results."""
        order: list[str] = []

        def more(record: dict[str, Any]) -> None:
            order.append(record["contents"])
            if record["contents"] == "a":
                self.parser.parse(b"c", R, self.fallback).addCallback(more)

        self.parser.parse(b"a", R, self.fallback).addCallback(more)
        self.parser.parse(b"b", R, self.fallback).addCallback(more)
        channel = self.channels[0]
        channel.answer(channel.sent[1])
        channel.answer(channel.sent[0])
        channel.answer(channel.sent[2])
        self.assertEqual(order, ["a", "b", "c"])

    def test_logs_rate_limited(self) -> None:
        """Many faults make one warning at once and one summary per interval, not one a line."""
        with capturedLogs() as events:
            for _ in range(4):
                self.send(*[b"x"] * 5)
                self.clock.advance(1.0)
            self.clock.advance(10.0)
            channel = self.channels[-1]
            self.send(b"y")
            channel.answer(channel.sent[0])
        warnings = [e for e in events if "published raw" in e.get("log_format", "")]
        # The first fault at once, the 19 after it in one summary when the interval ends.
        self.assertEqual([w["count"] for w in warnings], [1, 19])
        self.assertEqual(warnings[1]["kinds"], "19 timeout")
        self.assertTrue(any("answering again" in e.get("log_format", "") for e in events))
        self.assertEqual(self.parser.faults, 20)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close(self) -> None:
        """close() hands back waiting lines raw and leaves no timer behind."""
        self.send(b"a", b"b")
        self.parser.close()
        self.send(b"c")
        self.assertEqual([r["parser_fault"] for r in self.results], ["closed"] * 3)
        self.assertTrue(self.channels[0].closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ParserProcess(ProcessProtocol):
    """tests/parser_process.py, with Deferreds for 'bound and ready' and 'ended'."""

    def __init__(self) -> None:
        self.ready: Deferred[str] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.output = b""
        self.running = True

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and b"\n" in self.output:
            self.ready.callback(self.output.split(b"\n")[0].split()[1].decode())

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        if not self.ready.called:
            self.ready.errback(reason)
        self.ended.callback(None)


class ProcessTests(TestCase):
    timeout = 60  # the deadline for every wait below

    def start(self, endpoint: str, *options: str) -> Deferred[str]:
        process = ParserProcess()
        argv = [sys.executable, SCRIPT, endpoint, *options]
        reactor.spawnProcess(process, sys.executable, argv, env=os.environ)
        self.process = process
        self.addCleanup(self.stop, process)
        return process.ready

    def stop(self, process: ParserProcess) -> Deferred[None] | None:
        if not process.running:
            return None
        process.transport.signalProcess("KILL")  # type: ignore[union-attr]
        return process.ended

    @inlineCallbacks
    def test_records_flow_survive_kill_and_resume(self) -> Generator[Deferred[Any], Any, None]:
        """Records flow; killing the parser mid-stream loses no line (they go out raw); records resume after."""
        endpoint = yield self.start("tcp://127.0.0.1:0")
        parser = ExternalParser(endpoint, reactor, timeout=1.0)
        self.addCleanup(parser.close)
        fallback = RawParser()

        first = yield gatherResults([parser.parse(b"line %d" % i, R, fallback) for i in range(50)])
        self.assertEqual([r["contents"] for r in first], ["line %d" % i for i in range(50)])
        self.assertEqual({r.get("parsed_by") for r in first}, {"external"})

        records = yield self.stream(parser, fallback, count=40, window=8, kill_after=20)
        self.assertEqual([r["contents"] for r in records], ["stream %d" % i for i in range(40)])
        raw = [r for r in records if "parser_fault" in r]
        self.assertTrue(raw, "no line went out raw after the kill")
        for record in raw:
            self.assertEqual(record, {"datetime": R_STAMP, "contents": record["contents"],
                                      "parser_fault": record["parser_fault"]})
        self.assertTrue(all(r.get("parsed_by") == "external" for r in records[:20]))

        yield self.start(endpoint)  # the same port: the parser is back
        resumed = yield self.until_parsed(parser, fallback)
        self.assertEqual(resumed["parsed_by"], "external")
        self.assertGreater(parser.faults, 0)
        self.assertGreater(parser.reconnects, 0)

    @inlineCallbacks
    def test_garbage_and_silence(self) -> Generator[Deferred[Any], Any, None]:
        """A real parser's garbage and silence cost only those lines; the lines around them parse."""
        endpoint = yield self.start("tcp://127.0.0.1:0")
        parser = ExternalParser(endpoint, reactor, timeout=1.0)
        self.addCleanup(parser.close)
        lines = [b"before", b"garbage", b"silent", b"after"]
        records = yield gatherResults([parser.parse(line, R, RawParser()) for line in lines])
        self.assertEqual([r["contents"] for r in records], ["before", "garbage", "silent", "after"])
        self.assertEqual([r.get("parser_fault") for r in records][:3], [None, "garbage", "timeout"])
        # "after" was answered before "silent" timed out, unless the timeout won the race.
        self.assertIn(records[3].get("parser_fault"), (None, "reset"))

    @inlineCallbacks
    def test_rep_server(self) -> Generator[Deferred[Any], Any, None]:
        """A plain REP server (the seed's REQ/REP design) works, with lines pipelined to it."""
        endpoint = yield self.start("tcp://127.0.0.1:0", "rep")
        parser = ExternalParser(endpoint, reactor, timeout=1.0)
        self.addCleanup(parser.close)
        records = yield gatherResults([parser.parse(b"rep %d" % i, R, RawParser()) for i in range(30)])
        self.assertEqual([r["contents"] for r in records], ["rep %d" % i for i in range(30)])
        self.assertEqual({r.get("parsed_by") for r in records}, {"external"})

    def stream(self, parser: ExternalParser, fallback: RawParser, count: int, window: int,
               kill_after: int) -> Deferred[list[dict[str, Any]]]:
        """Feed ``count`` lines, ``window`` in flight; kill the process after ``kill_after`` records."""
        done: Deferred[list[dict[str, Any]]] = Deferred()
        records: list[dict[str, Any]] = []
        sent = 0

        def send_one() -> None:
            nonlocal sent
            line = b"stream %d" % sent
            sent += 1
            parser.parse(line, R, fallback).addCallback(received)

        def received(record: dict[str, Any]) -> None:
            records.append(record)
            if len(records) == kill_after:
                self.process.transport.signalProcess("KILL")  # type: ignore[union-attr]
            if sent < count:
                send_one()
            elif len(records) == count:
                self.process.ended.addCallback(lambda _: done.callback(records))

        for _ in range(window):
            send_one()
        return done

    @inlineCallbacks
    def until_parsed(
        self, parser: ExternalParser, fallback: RawParser
    ) -> Generator[Deferred[Any], Any, dict[str, Any]]:
        """Send a line at a time until one comes back parsed (the test's timeout is the deadline)."""
        while True:
            record = yield parser.parse(b"probe", R, fallback)
            if "parser_fault" not in record:
                return record
