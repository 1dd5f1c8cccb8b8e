"""Multi-line events: continuation lines (stack traces) grouped with their first line.

The tap's ``multiline =`` chooses what starts an event:

- ``indented``: a line starting with a space or a tab continues the event before it;
  any other line (an empty one too) starts a new event.
- ``regex:<start pattern>``: a line in which the pattern is found (``re.search``; anchor
  it with ``^``) starts an event; every other line continues the one before it.

Grouping only shapes the published records: the mirror and its offsets stay line-exact.
The grouper is pure and clock-free, built for a streaming pipeline: one per watched file,
fed every parsed line; the caller owns the clock::

    class Grouping:
        def __init__(self, tap, clock, publish, quiet=1.0):
            self.parser = make_parser(tap)
            self.grouper = MultilineGrouper(tap.multiline)
            self.clock, self.publish, self.quiet = clock, publish, quiet
            self.timer = None

        def line(self, line: bytes, offset: int, received: float) -> None:
            record = self.parser.parse(line, received)        # every line is parsed alone
            for event in self.grouper.feed(record, offset):   # usually 0 or 1 events
                self.publish(event.record, event.offsets)
            # An event is complete only when the next one starts: a file that goes quiet
            # must not hold its last event forever, so flush after a short silence.
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            self.timer = self.clock.callLater(self.quiet, self.flush) if self.grouper.pending else None

        def flush(self) -> None:
            event = self.grouper.flush()
            if event is not None:
                self.publish(event.record, event.offsets)

Flush too when the file rotates or the tap stops.  An event's record is its first line's
record (so its ``datetime`` and fields) with ``contents`` replaced by the lines joined with
``"\\n"``, and ``"lines": n`` added when it holds more than one line; ``offsets`` are the
lines' offsets, first to last.  An event is cut at ``max_lines`` lines or ``max_bytes``
bytes of contents, so a runaway trace cannot hold unbounded memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rill.parsers.base import Record


@dataclass(frozen=True)
class Event:
    """One or more lines published as one record."""

    record: Record
    offsets: tuple[int, ...] = field(default=())


class MultilineGrouper:
    """Groups parsed lines into events; one grouper per watched file."""

    def __init__(self, spec: str, max_lines: int = 1000, max_bytes: int = 1 << 20) -> None:
        if spec == "indented":
            self._start = None
        elif spec.startswith("regex:"):
            self._start = re.compile(spec[6:])
        else:
            raise ValueError(f"expected indented or regex:<start pattern>, got {spec!r}")
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._first: Record | None = None
        self._contents: list[str] = []
        self._offsets: list[int] = []
        self._size = 0

    @property
    def pending(self) -> bool:
        """True while an event is held, waiting for its next line or a flush."""
        return self._first is not None

    def is_start(self, contents: str) -> bool:
        """Does this line start a new event?"""
        if self._start is None:
            return not contents.startswith((" ", "\t"))
        return self._start.search(contents) is not None

    def feed(self, record: Record, offset: int) -> list[Event]:
        """Take one parsed line; return the events it completes (usually none or one)."""
        contents = record["contents"]
        done: list[Event] = []
        if self._first is None or self.is_start(contents):
            event = self.flush()
            if event is not None:
                done.append(event)
            self._first = record
        self._contents.append(contents)
        self._offsets.append(offset)
        self._size += len(contents)
        if len(self._offsets) >= self.max_lines or self._size >= self.max_bytes:
            done.append(self._take())
        return done

    def flush(self) -> Event | None:
        """The pending event, now (after a quiet spell, a rotation, a stop); None if none."""
        if self._first is None:
            return None
        return self._take()

    def _take(self) -> Event:
        first = self._first
        assert first is not None
        if len(self._offsets) == 1:
            event = Event(first, (self._offsets[0],))
        else:
            record = dict(first)
            record["contents"] = "\n".join(self._contents)
            record["lines"] = len(self._offsets)
            event = Event(record, tuple(self._offsets))
        self._first, self._contents, self._offsets, self._size = None, [], [], 0
        return event
