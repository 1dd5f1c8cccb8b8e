"""The in-memory tail: the newest lines, searchable at once, flushed to a segment.

It offers the same read interface as :class:`rill.index.segment.Segment`
(``lines``, ``fgs``, ``columns``, ``postings``, ``minutes``, ``bucket``,
``fg_bitmaps``, ``min_dt``, ``max_dt``), so the search code treats both alike.
"""

from __future__ import annotations

from collections import defaultdict

from pyroaring import BitMap

from rill.index.segment import FG, Columns, write_segment
from rill.index.tokenizer import index_chunk


class Tail:
    """Lines appended in arrival order; ids are positions in that order."""

    name = "tail"

    def __init__(self) -> None:
        self.fgs: list[FG] = []
        self._fg_index: dict[FG, int] = {}
        self.columns = Columns.empty()
        self._postings: defaultdict[str, list[int]] = defaultdict(list)
        self._buckets: dict[int, list[int]] = {}
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

    def add_chunk(self, fg: FG, start: int, end: int, text: str, records: list[tuple[int, int, int]]) -> None:
        """Append the lines of ``text`` (each ended by ``\\n``), bytes [start, end) of ``fg``.

        ``records`` holds each line's ``(offset, byte length, datetime ms)``.
        """
        fid = self.fg_id(fg)
        self._minutes = self._fg_bitmaps = None
        cols = self.columns
        first = len(cols)
        end_id = index_chunk(text, first, self._postings)
        assert end_id - first == len(records), "records do not match the lines of the chunk"
        buckets = self._buckets
        for i, (offset, length, dt) in enumerate(records, first):
            cols.fg.append(fid)
            cols.off.append(offset)
            cols.length.append(length)
            cols.dt.append(dt)
            minute = dt // 60000
            ids = buckets.get(minute)
            if ids is None:
                buckets[minute] = [i]
            else:
                ids.append(i)
        self._fg_lines[fid].extend(range(first, first + len(records)))
        self.size += end - start
        self._extend_range(fg, start, end)
        if records:
            new = cols.dt[first:]
            self.min_dt = min(new) if first == 0 else min(self.min_dt, min(new))
            self.max_dt = max(new) if first == 0 else max(self.max_dt, max(new))

    def _extend_range(self, fg: FG, start: int, end: int) -> None:
        held = self.ranges.setdefault(fg, [])
        if held and held[-1][1] == start:
            held[-1][1] = end
        else:
            held.append([start, end])

    # ---------------------------------------------------------- reading

    def postings(self, term: str) -> BitMap:
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
        """Write this tail as a segment file; return its size."""
        postings = ((t, self._postings[t]) for t in sorted(self._postings))
        buckets = {m: BitMap(ids) for m, ids in self._buckets.items()}
        return write_segment(path, self.fgs, self.columns, postings, buckets, self.fg_bitmaps, crash_hook)
