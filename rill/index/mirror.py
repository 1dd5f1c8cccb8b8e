"""Reading the mirror for the index: complete lines, receipt times, line datetimes.

Pure file I/O, no Twisted.  The mirror layout is ``rill.store.mirror``'s; the
``.times`` file is read here directly (one read per chunk, not per line).
"""

from __future__ import annotations

import bisect
import mmap
import os
import struct
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import partial
from itertools import accumulate, repeat
from operator import add, getitem, mul
from typing import Any

from rill.index.segment import FG

TIMES = struct.Struct("<Qd")
CHUNK = 8 << 20

LineParser = Any  # anything with .parse(line: bytes, received: float) -> dict


def times_path(mirror_path: str) -> str:
    return mirror_path[: -len(".log")] + ".times"


def read_times(mirror_path: str, start: int = 0) -> tuple[array, array]:
    """(end offsets, receipt times) of the ``.times`` records that cover bytes from ``start`` on.

    Records are fixed-size and ordered by end offset, so the first one needed
    is found by binary search with ``pread``: following a live generation
    costs O(log n) per notification, not a re-read of the whole file.
    """
    try:
        fd = os.open(times_path(mirror_path), os.O_RDONLY)
    except FileNotFoundError:
        return array("q"), array("d")
    try:
        size = os.fstat(fd).st_size // TIMES.size
        low, high = 0, size
        while low < high:  # first record whose end offset is beyond start
            middle = (low + high) // 2
            if TIMES.unpack(os.pread(fd, TIMES.size, middle * TIMES.size))[0] <= start:
                low = middle + 1
            else:
                high = middle
        data = os.pread(fd, (size - low) * TIMES.size, low * TIMES.size) if low < size else b""
        if not data and size:  # past the last record: keep the last one as the fallback time
            data = os.pread(fd, TIMES.size, (size - 1) * TIMES.size)
    finally:
        os.close(fd)
    return _split_times(data[: len(data) - len(data) % TIMES.size])


def _split_times(data: bytes) -> tuple[array, array]:
    """(end offsets, receipt times) of packed ``<Qd`` records, de-interleaved in C."""
    ends, times = array("q"), array("d")
    ends.frombytes(data)
    times.frombytes(data)
    if sys.byteorder == "big":
        ends.byteswap()
        times.byteswap()
    return ends[0::2], times[1::2]


def receipt_time(ends: array, times: array, offset: int, fallback: float) -> float:
    """The time of the first record whose end offset is beyond ``offset``."""
    k = bisect.bisect_right(ends, offset)
    if k < len(times):
        return times[k]
    return times[-1] if len(times) else fallback


def line_datetime_ms(parser: LineParser | None, line: bytes, received: float) -> int:
    """The datetime of a line in unix ms: the parser's ``datetime``, else the receipt time.

    This is the one place where the index depends on ``rill.parsers``.
    """
    if parser is not None:
        try:
            value = parser.parse(line, received).get("datetime")
            if isinstance(value, str):
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
            if isinstance(value, (int, float)):
                return int(value * 1000)
        except Exception:  # noqa: BLE001 - a parser failure falls back to receipt time
            pass
    return round(received * 1000)


class Records:
    """The columns of a chunk's lines: byte offset, byte length and datetime ms of each."""

    __slots__ = ("off", "length", "dt")

    def __init__(self, off: list[int], length: list[int], dt: list[int]) -> None:
        self.off, self.length, self.dt = off, length, dt

    def __len__(self) -> int:
        return len(self.off)


def parser_for_config(config: Any) -> Callable[[Any], LineParser | None]:
    """``parser_for`` from a ``RillConfig``: each mirrored file's tap parser (None: receipt time)."""

    def parser_for(mirrored: Any) -> LineParser | None:
        tap = config.taps.get(getattr(mirrored, "tap", ""))
        if tap is None or tap.parser == "raw" or tap.parser.startswith("zmq:"):
            return None  # the receipt time, read straight from the .times records
        try:
            from rill.parsers import make_parser

            return make_parser(tap)
        except (ImportError, ValueError):
            return None

    return parser_for


def complete_lines(
    mirror_path: str,
    start: int,
    stop: int | None,
    parser: LineParser | None = None,
    chunk: int = CHUNK,
) -> Iterator[tuple[int, int, bytes, Records]]:
    """Yield ``(start, end, data, records)`` per chunk of complete lines in bytes [start, stop).

    ``stop=None`` reads to the end of the file and leaves a final partial line
    out.  ``data`` is the chunk's bytes, every line ended by ``\n``;
    ``records`` has each line's offset, length and datetime ms.
    """
    ends, times = read_times(mirror_path, start)
    try:
        f = open(mirror_path, "rb")
    except FileNotFoundError:
        return
    with f:
        size = os.fstat(f.fileno()).st_size
        limit = size if stop is None else min(stop, size)
        f.seek(start)
        pos = start
        while pos < limit:
            data = f.read(min(chunk, limit - pos))
            if not data:
                break
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) < limit - pos:  # one line longer than a chunk
                    chunk *= 2
                    f.seek(pos)
                    continue
                break
            data = data[:cut]
            yield pos, pos + cut, data, _records(data, pos, ends, times, parser)
            pos += cut
            f.seek(pos)


def _records(data: bytes, base: int, ends: array, times: array, parser: LineParser | None) -> Records:
    """Each line's offset, length and datetime; without a parser, in C-level maps (no loop per line)."""
    lines = data.split(b"\n")
    lines.pop()  # what follows the last newline: nothing
    length = list(map(len, lines))
    off = list(accumulate(map(add, length, repeat(1)), initial=base))
    off.pop()
    lo = bisect.bisect_right(ends, base)  # the records that can hold these lines: [lo, hi)
    hi = min(len(ends), bisect.bisect_right(ends, base + len(data)) + 1)
    window = ends[lo:hi]
    received = list(times[lo:hi]) + [times[-1] if len(times) else 0.0]  # past the last record: the last time
    picked = map(received.__getitem__, map(bisect.bisect_right, repeat(window), off))
    if parser is None:
        dt = list(map(round, map(mul, picked, repeat(1000))))
    else:
        dt = list(map(partial(line_datetime_ms, parser), lines, picked))
    return Records(off, length, dt)


class LineReader:
    """Reads single lines back from mirror files through a few cached memory maps."""

    def __init__(self, path_of: Callable[[FG], str], keep: int = 256) -> None:
        self.path_of = path_of
        self.keep = keep
        self._maps: OrderedDict[FG, mmap.mmap] = OrderedDict()

    def __call__(self, fg: FG, offset: int, length: int) -> bytes:
        mapped = self._maps.get(fg)
        if mapped is None or offset + length > len(mapped):
            mapped = self._map(fg, offset + length)
            if mapped is None:
                return b""
        return mapped[offset : offset + length]

    def read_many(self, fgs: Sequence[FG], offsets: Sequence[int], lengths: Sequence[int]) -> list[bytes]:
        """``[self(fg, offset, length) ...]``: sliced from the open maps in C-level maps when they all
        reach far enough (the usual case for a page of hits), else line by line."""
        try:
            maps = list(map(self._maps.__getitem__, fgs))
        except KeyError:
            return list(map(self, fgs, offsets, lengths))
        lines = list(map(getitem, maps, map(slice, offsets, map(add, offsets, lengths))))
        if list(map(len, lines)) != list(lengths):  # a map older than the line: map the file again
            return list(map(self, fgs, offsets, lengths))
        return lines

    def mapping(self, fg: FG) -> mmap.mmap | bytes:
        """The whole current mirror of ``fg`` (mapped again if it grew), for batch slicing."""
        mapped = self._maps.get(fg)
        try:
            size = os.path.getsize(self.path_of(fg))
        except FileNotFoundError:
            return b""
        if mapped is None or len(mapped) < size:
            mapped = self._map(fg, size)
        return b"" if mapped is None else mapped

    def _map(self, fg: FG, needed: int) -> mmap.mmap | None:
        self.forget(fg)
        try:
            with open(self.path_of(fg), "rb") as f:
                if os.fstat(f.fileno()).st_size < max(needed, 1):
                    return None
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            return None
        self._maps[fg] = mapped
        if len(self._maps) > self.keep:
            self._maps.popitem(last=False)[1].close()
        return mapped

    def forget(self, fg: FG) -> None:
        mapped = self._maps.pop(fg, None)
        if mapped is not None:
            mapped.close()

    def close(self) -> None:
        for mapped in self._maps.values():
            mapped.close()
        self._maps.clear()
