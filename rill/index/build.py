"""Bulk indexing on several processes (``rill reindex``, the bench).

Tokenizing is CPU-bound pure Python, so a big catch-up is split by generation
into balanced groups, each indexed by a forked worker into its own segment
files; the parent then names them in the manifest in one atomic write.  A
crash leaves only unnamed files, removed at the next open.  Not for use inside
a running reactor (it forks): :class:`rill.index.IndexService` catches up in
process.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

from rill.index.core import Index
from rill.index.segment import FG, Segment
from rill.index.tail import Tail

Unit = tuple[FG, int, int | None, int]  # (generation, start, stop or None for the end, bytes)

_JOB: dict[str, Any] = {}  # what forked workers inherit


def gaps(index: Index) -> list[Unit]:
    """Every byte range of the mirror the index does not cover yet."""
    covered = index.coverage()
    units: list[Unit] = []
    for mirrored in index.store.files():
        for record in mirrored.generations():
            fg = (mirrored.host, mirrored.path, record.number)
            length = mirrored.length(record.number)
            start = 0
            for begin, end in covered.get(fg, []):
                if start < begin:
                    units.append((fg, start, begin, begin - start))
                start = end
            if start < length:
                units.append((fg, start, None, length - start))
    return units


def balance(units: list[Unit], groups: int) -> list[list[Unit]]:
    """Split units into ``groups`` lists of about equal bytes (largest first, greedy)."""
    out: list[list[Unit]] = [[] for _ in range(groups)]
    sizes = [0] * groups
    for unit in sorted(units, key=lambda u: -u[3]):
        k = sizes.index(min(sizes))
        out[k].append(unit)
        sizes[k] += unit[3]
    return [g for g in out if g]


def _reset_signals() -> None:
    """Workers die on SIGTERM/SIGINT as usual, whatever handlers the parent had (Twisted's)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _worker(k: int) -> list[tuple[str, int, list[list[Any]]]]:
    gc.disable()  # millions of small lists: the cyclic collector would rescan them over and over
    index: Index = _JOB["index"]
    done = _JOB["done"]
    written = []
    tail = Tail()

    def progress(n: int) -> None:
        with done.get_lock():
            done.value += n

    index.progress = progress

    def flush() -> None:
        nonlocal tail
        name = f"s-w{os.getpid()}-{len(written)}.seg"
        tail.write(os.path.join(index.directory, name))
        ranges = [[*fg, s, e] for fg, spans in tail.ranges.items() for s, e in spans]
        written.append((name, tail.lines, ranges))
        tail = Tail()

    for fg, start, stop, _ in _JOB["groups"][k]:
        mirror = index._mirror_path(fg)
        for begin, end, data, records in _chunks(index, fg, mirror, start, stop):
            tail.add_chunk(fg, begin, end, data, records)
            progress(end - begin)
            if tail.lines >= index.flush_lines or tail.size >= index.flush_bytes:
                flush()
    if tail.lines:
        flush()
    return written


def _chunks(index: Index, fg: FG, mirror: str, start: int, stop: int | None):  # type: ignore[no-untyped-def]
    from rill.index.mirror import complete_lines

    return complete_lines(mirror, start, stop, index._parser(index._file(fg[0], fg[1])))


def build(index: Index, workers: int | None = None, progress: Callable[[int], None] | None = None) -> int:
    """Index every gap of the mirror with ``workers`` processes; return lines added."""
    workers = workers or os.cpu_count() or 1
    groups = balance(gaps(index), workers)
    if len(groups) <= 1 or index.read_only:
        index.progress = progress
        return index.catch_up()
    context = multiprocessing.get_context("fork")
    done = context.Value("q", 0)
    _JOB.update(index=index, groups=groups, done=done)
    try:
        pool = context.Pool(len(groups), initializer=_reset_signals)
        try:
            pending = pool.map_async(_worker, range(len(groups)))
            reported = 0
            while not pending.ready():
                pending.wait(0.2)
                if progress is not None and done.value > reported:
                    progress(done.value - reported)
                    reported = done.value
            results = pending.get()
            pool.close()
        finally:
            pool.terminate()
            pool.join()
        if progress is not None and done.value > reported:
            progress(done.value - reported)
    finally:
        _JOB.clear()
    return _adopt(index, [w for written in results for w in written])


def _adopt(index: Index, written: list[tuple[str, int, list[list[Any]]]]) -> int:
    """Give the workers' segments proper names and list them in the manifest."""
    for name, lines, ranges in written:
        path = index._new_segment_path()
        os.replace(os.path.join(index.directory, name), path)
        index.entries.append({"name": os.path.basename(path), "lines": lines, "ranges": ranges, "dead": []})
        index.segments.append(Segment(path))
    index._save_manifest()
    return sum(lines for _, lines, _ in written)
