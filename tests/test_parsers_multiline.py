"""Multi-line grouping: stack traces become one event, offsets and bytes kept exact."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from rill.config import TapConfig
from rill.parsers import Event, MultilineGrouper, make_parser

JAVA = [
    b"2026-11-26 02:21:33,123 ERROR [main] request failed",
    b"java.lang.IllegalStateException: boom",
    b"\tat com.example.Foo.bar(Foo.java:42)",
    b"\tat com.example.Main.main(Main.java:7)",
    b"2026-11-26 02:21:34,000 INFO [main] recovered",
]
PYTHON = [
    b"2026-11-26 02:21:33,123 ERROR boom",
    b"Traceback (most recent call last):",
    b'  File "app.py", line 3, in <module>',
    b"ValueError: bad",
    b"",
    b"2026-11-26 02:21:34,000 INFO next",
]
R = 1795659693.0


def offsets_of(lines: list[bytes]) -> list[int]:
    starts, offset = [], 0
    for line in lines:
        starts.append(offset)
        offset += len(line) + 1
    return starts


def run(spec: str, lines: list[bytes], parser_spec: str = "iso8601") -> list[Event]:
    parser = make_parser(TapConfig("t", ("h",), ("/p",), parser=parser_spec))
    grouper = MultilineGrouper(spec)
    events: list[Event] = []
    offset = 0
    for line in lines:
        events.extend(grouper.feed(parser.parse(line, R), offset))
        offset += len(line) + 1
    tail = grouper.flush()
    if tail is not None:
        events.append(tail)
    return events


class GrouperTests(SynchronousTestCase):
    def test_indented(self) -> None:
        """'indented' joins tab-indented lines to the line before; a flush releases the last event."""
        events = run("indented", JAVA)
        starts = offsets_of(JAVA)
        self.assertEqual([e.offsets for e in events], [(starts[0],), tuple(starts[1:4]), (starts[4],)])
        trace = events[1].record
        self.assertEqual(trace["contents"], b"\n".join(JAVA[1:4]).decode())
        self.assertEqual(trace["lines"], 3)

    def test_regex_start(self) -> None:
        """A start pattern groups a whole Python traceback, blank line included, with its log line."""
        events = run(r"regex:^\d{4}-\d\d-\d\d ", PYTHON)
        self.assertEqual(len(events), 2)
        first = events[0].record
        self.assertEqual(first["contents"], b"\n".join(PYTHON[:5]).decode())
        self.assertEqual(first["datetime"], "2026-11-26T02:21:33.123Z")
        self.assertEqual(first["message"], "ERROR boom")
        self.assertNotIn("parse_error", first)
        self.assertEqual(events[1].record["contents"], PYTHON[5].decode())

    def test_event_on_next_start(self) -> None:
        """An event is emitted when the next start line arrives, not before; pending says so."""
        grouper = MultilineGrouper("indented")
        self.assertEqual(grouper.feed({"contents": "start", "datetime": "x"}, 0), [])
        self.assertEqual(grouper.feed({"contents": "  more", "datetime": "x"}, 6), [])
        self.assertTrue(grouper.pending)
        (event,) = grouper.feed({"contents": "next", "datetime": "y"}, 13)
        self.assertEqual(event.offsets, (0, 6))
        self.assertEqual(event.record, {"contents": "start\n  more", "datetime": "x", "lines": 2})
        self.assertTrue(grouper.pending)
        self.assertEqual(grouper.flush(), Event({"contents": "next", "datetime": "y"}, (13,)))
        self.assertFalse(grouper.pending)
        self.assertIsNone(grouper.flush())

    def test_single_line_record_unchanged(self) -> None:
        """A one-line event carries the parser's record as it was, without a lines count."""
        record = {"contents": "alone", "datetime": "x", "level": "INFO"}
        grouper = MultilineGrouper("indented")
        grouper.feed(record, 5)
        self.assertEqual(grouper.flush(), Event(record, (5,)))

    def test_orphan_continuation(self) -> None:
        """A continuation line with nothing before it starts an event of its own."""
        events = run("indented", [b"  orphan", b"  more", b"start"], "raw")
        self.assertEqual([e.offsets for e in events], [(0, 9), (16,)])

    def test_limits(self) -> None:
        """An event is cut at max_lines and at max_bytes."""
        grouper = MultilineGrouper("indented", max_lines=3)
        done = [grouper.feed({"contents": c}, i) for i, c in enumerate(["a", " b", " c", " d"])]
        self.assertEqual([[e.offsets for e in d] for d in done], [[], [], [(0, 1, 2)], []])
        grouper = MultilineGrouper("indented", max_bytes=10)
        self.assertEqual(grouper.feed({"contents": "0123456789"}, 0)[0].offsets, (0,))

    def test_quiet_flush_with_clock(self) -> None:
        """The docstring's streaming pattern: a trace at the end of a quiet file goes out after the pause."""
        clock, published = Clock(), []
        parser = make_parser(TapConfig("t", ("h",), ("/p",), parser="iso8601"))
        grouper = MultilineGrouper("indented")
        timer = None

        def flush() -> None:
            event = grouper.flush()
            if event is not None:
                published.append(event.offsets)

        for offset, line in enumerate(JAVA[:4]):
            for event in grouper.feed(parser.parse(line, R), offset):
                published.append(event.offsets)
            if timer is not None and timer.active():
                timer.cancel()
            timer = clock.callLater(1.0, flush) if grouper.pending else None
            clock.advance(0.5)
        self.assertEqual(published, [(0,)])
        clock.advance(0.5)
        self.assertEqual(published, [(0,), (1, 2, 3)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_bad_spec(self) -> None:
        """An unknown multiline spec is refused."""
        self.assertRaises(ValueError, MultilineGrouper, "stacktrace")

    @given(
        lines=st.lists(st.sampled_from(["start", " cont", "\tcont", "", "x y"]), max_size=30),
        max_lines=st.integers(1, 5),
    )
    def test_nothing_lost(self, lines: list[str], max_lines: int) -> None:
        """Whatever the lines, the events hold every line once, in order, with its offset."""
        grouper = MultilineGrouper("indented", max_lines=max_lines)
        events: list[Event] = []
        for i, text in enumerate(lines):
            events.extend(grouper.feed({"contents": text}, i))
        tail = grouper.flush()
        events.extend([tail] if tail else [])
        self.assertEqual([o for e in events for o in e.offsets], list(range(len(lines))))
        self.assertEqual([e.record["contents"] for e in events],
                         ["\n".join(lines[o] for o in e.offsets) for e in events])
