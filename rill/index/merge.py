"""Merging segments: concatenation with line ids shifted.  Pure, no Twisted.

Ids are positions in arrival order, so a merge never re-sorts lines: each
input's ids move up by the lines before it (``BitMap.shift``, in C), columns
are appended, and the sorted term dictionaries are merged in one pass.  The
cost is per distinct term, not per posting.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterator, Sequence

from pyroaring import BitMap

from rill.index.segment import FG, Columns, Segment, write_segment

MERGE_FACTOR = 4


def merge_plan(sizes: Sequence[int], factor: int = MERGE_FACTOR, base: int = 50_000) -> list[int] | None:
    """Indexes of segments to merge: ``factor`` of the same size tier, else None.

    A segment of n lines is in tier ``floor(log_factor(n / base))``; merging
    ``factor`` of tier t gives one of tier about t + 1, so the segment count
    stays logarithmic in the number of lines.
    """
    tiers: dict[int, list[int]] = {}
    for i, n in enumerate(sizes):
        tier = 0
        while n >= base * factor ** (tier + 1):
            tier += 1
        tiers.setdefault(tier, []).append(i)
    for tier in sorted(tiers):
        if len(tiers[tier]) >= factor:
            return tiers[tier][:factor]
    return None


def merge_segments(
    path: str,
    segments: Sequence[Segment],
    crash_hook: Callable[[str], None] = lambda point: None,
) -> int:
    """Concatenate ``segments`` (ids shifted) into one new segment file."""
    fgs: list[FG] = []
    index: dict[FG, int] = {}
    columns = Columns.empty()
    shifts = []
    remaps = []
    for seg in segments:
        shifts.append(len(columns))
        remap = [index.setdefault(fg, len(index)) for fg in seg.fgs]
        remaps.append(remap)
        columns.fg.extend(array("I", map(remap.__getitem__, seg.columns.fg)))
        columns.off.extend(seg.columns.off)
        columns.length.extend(seg.columns.length)
        columns.dt.extend(seg.columns.dt)
    fgs = list(index)
    buckets: dict[int, BitMap] = {}
    fg_bitmaps = [BitMap() for _ in fgs]
    for seg, shift, remap in zip(segments, shifts, remaps):
        for minute in seg.minutes:
            buckets.setdefault(minute, BitMap()).update(seg.bucket(minute).shift(shift))
        for old, bm in enumerate(seg.fg_bitmaps):
            fg_bitmaps[remap[old]].update(bm.shift(shift))
    crash_hook("merge-started")
    return write_segment(path, fgs, columns, _merged_terms(segments, shifts), buckets, fg_bitmaps,
                         lambda point: crash_hook("merge-" + point))


def _tagged(segment: Segment, k: int) -> Iterator[tuple[str, int, BitMap]]:
    for term, bm in segment.terms():
        yield term, k, bm


def _merged_terms(segments: Sequence[Segment], shifts: Sequence[int]) -> Iterator[tuple[str, BitMap]]:
    streams = [_tagged(seg, k) for k, seg in enumerate(segments)]
    current: str | None = None
    acc = BitMap()
    for term, k, bm in heapq.merge(*streams, key=lambda x: x[0]):
        if term != current:
            if current is not None:
                yield current, acc
            current, acc = term, BitMap()
        acc.update(bm.shift(shifts[k]) if shifts[k] else bm)
    if current is not None:
        yield current, acc
