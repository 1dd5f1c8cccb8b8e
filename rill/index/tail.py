"""The in-memory tail: the newest lines, searchable at once, flushed to a segment.

It offers the same read interface as :class:`rill.index.segment.Segment`
(``lines``, ``fgs``, ``columns``, ``postings``, ``minutes``, ``bucket``,
``fg_bitmaps``, ``min_dt``, ``max_dt``), so the search code treats both alike.
"""

from __future__ import annotations

from array import array
from collections import defaultdict, deque
from collections.abc import Iterator
from itertools import compress, islice, repeat
from operator import eq, floordiv, gt
from typing import Any

from pyroaring import BitMap

from rill.index.mirror import Records
from rill.index.segment import FG, Columns, write_segment
from rill.index.tokenizer import REPEATED, index_chunk


class Tail:
    """Lines appended in arrival order; ids are positions in that order."""

    name = "tail"

    def __init__(self) -> None:
        self.fgs: list[FG] = []
        self._fg_index: dict[FG, int] = {}
        self.columns = Columns.empty()
        self._postings: defaultdict[str, list[int]] = defaultdict(list)  # token -> line ids
        self._buckets: defaultdict[int, list[int]] = defaultdict(list)
        self._fg_lines: list[list[int]] = []
        self.ranges: dict[FG, list[list[int]]] = {}  # fg -> [start, end) byte ranges held
        self.size = 0  # bytes of line text held
        self.min_dt = 0
        self.max_dt = 0
        self._minutes: list[int] | None = None  # caches, dropped by add_chunk
        self._fg_bitmaps: list[BitMap] | None = None

    @property
    def lines(self) -> int:
        return len(self.columns)

    def fg_id(self, fg: FG) -> int:
        fid = self._fg_index.get(fg)
        if fid is None:
            fid = self._fg_index[fg] = len(self.fgs)
            self.fgs.append(fg)
            self._fg_lines.append([])
        return fid

    def add_chunk(self, fg: FG, start: int, end: int, data: bytes, records: Records) -> None:
        """Append the lines of ``data`` (each ended by ``\\n``), bytes [start, end) of ``fg``.

        ``records`` holds each line's offset, byte length and datetime ms.
        """
        fid = self.fg_id(fg)
        self._minutes = self._fg_bitmaps = None
        cols = self.columns
        first = len(cols)
        end_id = index_chunk(data.decode("utf-8", "replace"), first, self._postings)
        count = len(records)
        assert end_id - first == count, "records do not match the lines of the chunk"
        cols.fg.extend(array("I", [fid]) * count)
        cols.off.extend(records.off)
        cols.length.extend(records.length)
        cols.dt.extend(records.dt)
        minutes = map(floordiv, records.dt, repeat(60000))
        deque(map(list.append, map(self._buckets.__getitem__, minutes), range(first, end_id)), maxlen=0)
        self._fg_lines[fid].extend(range(first, end_id))
        self.size += end - start
        self._extend_range(fg, start, end)
        if count:
            low, high = min(records.dt), max(records.dt)
            self.min_dt = low if first == 0 else min(self.min_dt, low)
            self.max_dt = high if first == 0 else max(self.max_dt, high)

    def _extend_range(self, fg: FG, start: int, end: int) -> None:
        held = self.ranges.setdefault(fg, [])
        if held and held[-1][1] == start:
            held[-1][1] = end
        else:
            held.append([start, end])

    # ---------------------------------------------------------- reading

    def postings(self, term: str) -> BitMap:
        if term.endswith(REPEATED):
            return repeated_ids(self._postings.get(term[: -len(REPEATED)], []))
        ids = self._postings.get(term)
        return BitMap(ids) if ids else BitMap()

    @property
    def minutes(self) -> list[int]:
        if self._minutes is None:
            self._minutes = sorted(self._buckets)
        return self._minutes

    def bucket(self, minute: int) -> BitMap:
        return BitMap(self._buckets.get(minute, ()))

    @property
    def fg_bitmaps(self) -> list[BitMap]:
        if self._fg_bitmaps is None:
            self._fg_bitmaps = [BitMap(ids) for ids in self._fg_lines]
        return self._fg_bitmaps

    # ---------------------------------------------------------- flushing

    def write(self, path: str, crash_hook=lambda point: None) -> int:  # type: ignore[no-untyped-def]
        """Write this tail as a segment file; return its size.

        Lists of several ids become bitmaps here (in C), and a letter-only
        word whose list then shrinks was repeated in some line: its repeat
        token (rule 6 of :mod:`rill.index.tokenizer`) lists those lines.
        Terms are written as UTF-8.
        """
        order = sorted(self._postings)  # code point order is UTF-8 byte order
        lists: list[Any] = list(map(self._postings.__getitem__, order))
        many = list(compress(range(len(lists)), map(gt, map(len, lists), repeat(1))))
        repeats = []  # (position, entry): a repeat token sorts right after its word
        for k, bitmap in zip(many, map(BitMap, map(lists.__getitem__, many))):
            if len(bitmap) < len(lists[k]) and order[k].isalpha():
                repeats.append((k + 1, ((order[k] + REPEATED).encode(), repeated_ids(lists[k]))))
            lists[k] = bitmap
        buckets = {m: BitMap(ids) for m, ids in self._buckets.items()}
        postings = _inserted(list(zip(map(str.encode, order), lists)), repeats)
        return write_segment(path, self.fgs, self.columns, postings, buckets, self.fg_bitmaps, crash_hook)


def _inserted(entries: list[Any], extra: list[tuple[int, Any]]) -> Iterator[Any]:
    """``entries`` with each ``(position, entry)`` of ``extra`` (ascending) put before that position."""
    start = 0
    for at, entry in extra:
        yield from entries[start:at]
        yield entry
        start = at
    yield from entries[start:]


def repeated_ids(ids: list[int]) -> BitMap:
    """The ids a word's ascending id list holds twice or more (its lines with the word repeated)."""
    return BitMap(compress(ids, map(eq, ids, islice(ids, 1, None))))
