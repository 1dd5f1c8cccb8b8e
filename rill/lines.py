"""Turn a mirror into line messages: the live stream follows the mirror, not the socket.

The tap only appends bytes to the mirror; a :class:`MirrorFollower` then reads
them back (from the page cache) in bounded slices, splits complete lines,
parses and publishes them.  Mirroring therefore runs at SSH speed whatever the
subscribers do, a partial last line waits in the mirror until its newline
arrives (and is published once, whole), and every message carries
(generation, offset).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rill.store.mirror import MirroredFile

log = Logger()

SLICE = 1 << 16  # bytes read per turn of the reactor: keeps other taps responsive
#: While the mirror is more than BACKLOG bytes behind the server's file (catching up on
#: a large file), publishing yields to the network for BACKLOG_PAUSE seconds between
#: slices: the mirror (the promise) comes first and the stream follows at full speed
#: once it has caught up.  Live lines (a small backlog) go out at once.
BACKLOG = 1 << 20
BACKLOG_PAUSE = 0.1

LineSink = Callable[[MirroredFile, int, int, bytes, float], None]


def split_lines(data: bytes, base: int) -> tuple[list[tuple[int, bytes]], int]:
    """Complete lines in ``data`` (which starts at offset ``base``) and the offset after the last one."""
    lines = []
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return lines, base + start
        lines.append((base + start, data[start:end]))
        start = end + 1


class MirrorFollower:
    """Publishes every complete line of one mirrored file once, in order."""

    def __init__(self, mirrored: MirroredFile, sink: LineSink, clock: IReactorTime) -> None:
        self.mirrored = mirrored
        self.sink = sink
        self.clock = clock
        self.lines = 0
        self._remote_size = 0
        self._scheduled: Any = None
        current = mirrored.current()
        self.generation = current.number if current else 0
        self.offset = self._last_line_start(self.generation) if current else 0

    def _last_line_start(self, number: int) -> int:
        """Where the partial line at the mirror's end begins (its end if none)."""
        length = self.mirrored.length(number)
        position = length
        while position > 0:
            start = max(position - 65536, 0)
            found = self.mirrored.read(number, start, position - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            position = start
        return 0

    def poke(self, remote_size: int = 0) -> None:
        """New bytes are in the mirror (the server's file is ``remote_size`` long): publish them soon."""
        self._remote_size = max(self._remote_size, remote_size)
        if self._scheduled is None:
            mirrored = self.mirrored.length(self.generation) if self.generation else 0
            catching_up = self._remote_size - mirrored > BACKLOG
            self._scheduled = self.clock.callLater(BACKLOG_PAUSE if catching_up else 0, self._run)

    def stop(self) -> None:
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None

    def _run(self) -> None:
        self._scheduled = None
        if self._step():
            self.poke()

    def _step(self) -> bool:
        """Publish one slice; True if there may be more."""
        generations = self.mirrored.generations()
        if not generations:
            return False
        if self.generation == 0:
            self.generation, self.offset = generations[0].number, 0
        data = self.mirrored.read(self.generation, self.offset, SLICE)
        lines, end = split_lines(data, self.offset)
        now = time.time()
        for offset, line in lines:
            self.sink(self.mirrored, self.generation, offset, line, now)
        self.lines += len(lines)
        self.offset = end
        if len(data) == SLICE and lines:
            return True
        if len(data) >= SLICE:  # one line longer than a slice: read it whole
            return self._long_line(now)
        return self._next_generation(generations, now)

    def _long_line(self, now: float) -> bool:
        length = self.mirrored.length(self.generation)
        rest = self.mirrored.read(self.generation, self.offset, length - self.offset)
        end = rest.find(b"\n")
        if end < 0:
            return False  # the newline has not arrived yet
        self.sink(self.mirrored, self.generation, self.offset, rest[:end], now)
        self.lines += 1
        self.offset += end + 1
        return True

    def _next_generation(self, generations: list[Any], now: float) -> bool:
        """At the end of a finished generation, publish its unterminated last line and move on."""
        numbers = [g.number for g in generations]
        if self.generation not in numbers or self.generation == numbers[-1]:
            return False
        if self.mirrored.generation(self.generation).state in ("live", "draining"):
            return False
        if self.offset < self.mirrored.length(self.generation):
            tail = self.mirrored.read(self.generation, self.offset)
            self.sink(self.mirrored, self.generation, self.offset, tail, now)
            self.lines += 1
        self.generation = numbers[numbers.index(self.generation) + 1]
        self.offset = 0
        self._remote_size = 0
        return True
