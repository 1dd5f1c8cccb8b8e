"""The index over a data_dir: segments + tail + manifest.  No Twisted here.

``data_dir/index/manifest.json`` lists the live segments, and for each the
byte ranges ``[host, path, generation, start, end)`` of the mirror it holds
and the generations retention has since removed (``dead``).  What the index
has covered is the union of those ranges, so after a crash it re-reads
exactly the rest (``catch_up``).  Writes are ordered so every crash leaves a
consistent state: a segment file is complete (temp, fsync, rename) before the
manifest names it, and the manifest is replaced atomically; segment files the
manifest does not name are leftovers of a crash and are removed at open.  A
named segment that fails its checksum is dropped and its ranges re-read.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from pyroaring import BitMap

from rill.index.mirror import LineParser, LineReader, complete_lines
from rill.index.query import parse_query
from rill.index.search import Source, run_search
from rill.index.merge import merge_plan, merge_segments
from rill.index.segment import FG, CorruptSegment, Segment
from rill.index.tail import Tail
from rill.store.atomic import write_atomically

FLUSH_LINES = 250_000
FLUSH_BYTES = 64 << 20
BASE_LINES = 50_000

Range = list[Any]  # [host, path, generation, start, end]

# A parsed query is immutable (relative times resolve at each search): a
# repeated query, such as the next page of one, is not parsed again (~6 us).
_parse = lru_cache(maxsize=256)(parse_query)


def crash_point(point: str) -> None:
    """Test hook: with ``RILL_INDEX_CRASH_AT=point``, announce on stdout and wait to be killed."""
    if os.environ.get("RILL_INDEX_CRASH_AT") == point:
        sys.stdout.write(f"CRASH-POINT {point}\n")
        sys.stdout.flush()
        while True:
            signal.pause()


def _merge_ranges(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out


def _coalesce(ranges: list[Range]) -> list[Range]:
    """Ranges of the same generation that touch, joined (keeps the manifest small)."""
    spans: dict[tuple[str, str, int], list[list[int]]] = {}
    for host, path, gen, start, end in ranges:
        spans.setdefault((host, path, gen), []).append([start, end])
    return [[*fg, s, e] for fg, joined in spans.items() for s, e in _merge_ranges(joined)]


class Index:
    """Search and ingest over one data_dir's mirror."""

    def __init__(self, data_dir: str, store: Any, parser_for: Callable[[Any], LineParser | None] | None = None,
                 read_only: bool = False, now: Callable[[], float] = time.time,
                 flush_lines: int = FLUSH_LINES, flush_bytes: int = FLUSH_BYTES, base_lines: int = BASE_LINES,
                 directory: str | None = None) -> None:
        self.flush_lines = flush_lines
        self.flush_bytes = flush_bytes
        self.base_lines = base_lines
        self.directory = directory or os.path.join(data_dir, "index")
        self.progress: Callable[[int], None] | None = None  # called with bytes indexed, per chunk
        self.store = store
        self.parser_for = parser_for
        self.read_only = read_only
        self.now = now
        self.segments: list[Segment] = []
        self.entries: list[dict[str, Any]] = []  # manifest entries, parallel to segments
        self.next_number = 1
        self.tail = Tail()
        self._covered: dict[FG, list[list[int]]] | None = None  # coverage(), kept up to date by ingest
        self.rebuilt: list[str] = []  # segments found corrupt at open
        self.flushes = self.merges = 0  # since this object was made (for status and metrics)
        self.reader = LineReader(self._mirror_path)
        self._parsers: dict[tuple[str, str], Any] = {}
        self._files: dict[tuple[str, str], Any] = {}
        if not read_only:
            os.makedirs(self.directory, exist_ok=True)
        self._open()

    # ---------------------------------------------------------- manifest

    def _manifest_path(self) -> str:
        return os.path.join(self.directory, "manifest.json")

    def _open(self) -> None:
        for attempt in range(3):
            try:
                self._load_manifest()
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        if not self.read_only:
            self._remove_leftovers()
            if self.rebuilt:
                self._save_manifest()

    def _load_manifest(self) -> None:
        try:
            with open(self._manifest_path(), "rb") as f:
                manifest = json.loads(f.read())
        except FileNotFoundError:
            manifest = {"version": 1, "next": 1, "segments": []}
        self.next_number = manifest["next"]
        self.segments, self.entries, self.rebuilt = [], [], []
        for entry in manifest["segments"]:
            path = os.path.join(self.directory, entry["name"])
            try:
                segment = Segment(path)
            except CorruptSegment:
                self.rebuilt.append(entry["name"])
                continue
            except FileNotFoundError:
                if self.read_only:
                    raise  # merged away under us: read the manifest again
                self.rebuilt.append(entry["name"])
                continue
            self.segments.append(segment)
            self.entries.append(entry)

    def _save_manifest(self) -> None:
        manifest = {"version": 1, "next": self.next_number, "segments": self.entries}
        write_atomically(self._manifest_path(), json.dumps(manifest).encode())
        crash_point("manifest-written")

    def _remove_leftovers(self) -> None:
        named = {e["name"] for e in self.entries}
        for name in os.listdir(self.directory):
            segment = name.startswith("s") and (name.endswith(".seg") or name.endswith(".tmp"))
            if (segment and name not in named) or name.startswith("manifest.json.tmp"):
                os.remove(os.path.join(self.directory, name))

    def _new_segment_path(self) -> str:
        name = f"s{self.next_number:06d}.seg"
        self.next_number += 1
        return os.path.join(self.directory, name)

    # ---------------------------------------------------------- coverage

    def coverage(self) -> dict[FG, list[list[int]]]:
        """Byte ranges of every generation already indexed (segments and tail)."""
        spans: dict[FG, list[list[int]]] = {}
        for entry in self.entries:
            dead = {tuple(d) for d in entry.get("dead", [])}
            for host, path, gen, start, end in entry["ranges"]:
                if (host, path, gen) not in dead:
                    spans.setdefault((host, path, gen), []).append([start, end])
        for fg, ranges in self.tail.ranges.items():
            spans.setdefault(fg, []).extend([list(r) for r in ranges])
        return {fg: _merge_ranges(r) for fg, r in spans.items()}

    def _file(self, host: str, path: str) -> Any:
        key = (host, path)
        mirrored = self._files.get(key)
        if mirrored is None:
            mirrored = self._files[key] = self.store.file(host, path)
        return mirrored

    def _mirror_path(self, fg: FG) -> str:
        return self._file(fg[0], fg[1]).mirror_path(fg[2])

    def _parser(self, mirrored: Any) -> LineParser | None:
        key = (mirrored.host, mirrored.path)
        if key not in self._parsers:
            self._parsers[key] = self.parser_for(mirrored) if self.parser_for else None
        return self._parsers[key]

    # ---------------------------------------------------------- ingest

    def ingest(
        self, host: str, path: str, generation: int, covered: list[list[int]] | None = None, max_bytes: int | None = None
    ) -> int:
        """Index every complete line of one generation not yet covered; return lines added.

        With ``max_bytes``, stop after about that many new bytes (the caller comes back
        for the rest), so a large backlog never holds the reactor for long."""
        mirrored = self._file(host, path)
        fg = (host, path, generation)
        if covered is None:
            if self._covered is None:
                self._covered = self.coverage()
            covered = self._covered.get(fg, [])
        mirror = mirrored.mirror_path(generation)
        if covered and covered[-1][1] > mirrored.length(generation):
            self.forget([fg])  # the mirror was cut back: index it afresh
            covered = []
        added = 0
        start = 0
        for begin, end in covered:
            if start < begin:
                added += self._read_into_tail(fg, mirror, start, begin)
            start = end
        stop = None if max_bytes is None else start + max_bytes
        return added + self._read_into_tail(fg, mirror, start, stop)

    def _read_into_tail(self, fg: FG, mirror: str, start: int, stop: int | None, tail: Tail | None = None) -> int:
        target = tail or self.tail
        parser = self._parser(self._file(fg[0], fg[1]))
        added = 0
        for begin, end, data, records in complete_lines(mirror, start, stop, parser):
            target.add_chunk(fg, begin, end, data, records)
            if tail is None and self._covered is not None:
                self._covered[fg] = _merge_ranges(self._covered.get(fg, []) + [[begin, end]])
            added += len(records)
            if self.progress is not None:
                self.progress(end - begin)
            if tail is None:
                self.maybe_flush()
        return added

    def catch_up(self) -> int:
        """Index what the mirror holds beyond the index; return lines added."""
        covered = self.coverage()
        added = 0
        collecting = gc.isenabled()
        gc.disable()  # millions of small lists: the cyclic collector would rescan them over and over
        try:
            for mirrored in self.store.files():
                for record in mirrored.generations():
                    fg = (mirrored.host, mirrored.path, record.number)
                    self._files[(mirrored.host, mirrored.path)] = mirrored
                    added += self.ingest(mirrored.host, mirrored.path, record.number, covered.get(fg, []))
        finally:
            if collecting:
                gc.enable()
        return added

    def pending_bytes(self) -> int:
        """Bytes of mirror not yet indexed (for progress bars)."""
        covered = self.coverage()
        total = 0
        for mirrored in self.store.files():
            for record in mirrored.generations():
                fg = (mirrored.host, mirrored.path, record.number)
                done = sum(e - s for s, e in covered.get(fg, []))
                total += max(0, mirrored.length(record.number) - done)
        return total

    # ---------------------------------------------------------- flush and merge

    def maybe_flush(self) -> bool:
        if self.tail.lines >= self.flush_lines or self.tail.size >= self.flush_bytes:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Write the tail as a new segment (not in read-only mode)."""
        if self.read_only or not self.tail.lines:
            return
        path = self._new_segment_path()
        self.tail.write(path, crash_point)
        crash_point("flush-before-manifest")
        ranges = [[*fg, s, e] for fg, spans in self.tail.ranges.items() for s, e in spans]
        self.entries.append({"name": os.path.basename(path), "lines": self.tail.lines, "ranges": ranges, "dead": []})
        self.segments.append(Segment(path))
        self._save_manifest()
        self.tail = Tail()
        self.flushes += 1

    def merge_once(self) -> bool:
        """Merge one tier of segments if the policy asks; True when it did."""
        job = self.start_merge()
        if job is None:
            return False
        names, path, inputs = job
        self.run_merge(path, inputs)
        return self.finish_merge(names, path)

    def start_merge(self) -> tuple[list[str], str, list[Any]] | None:
        """Pick segments to merge: (their names, the output path, the work).

        The work is ``Segment`` objects to concatenate, or -- when retention
        has removed generations from them -- the byte ranges to re-read.
        """
        plan = None if self.read_only else merge_plan([e["lines"] for e in self.entries], base=self.base_lines)
        if plan is None:
            return None
        entries = [self.entries[i] for i in plan]
        if any(e.get("dead") for e in entries):
            inputs: list[Any] = [r for e in entries for r in e["ranges"] if [r[0], r[1], r[2]] not in e["dead"]]
        else:
            inputs = [self.segments[i] for i in plan]
        return [e["name"] for e in entries], self._new_segment_path(), inputs

    def run_merge(self, path: str, inputs: list[Any]) -> None:
        """Write the merged segment (safe to run in a thread: touches no shared state)."""
        if inputs and isinstance(inputs[0], Segment):
            merge_segments(path, inputs, crash_point)
        else:
            tail = Tail()
            for host, name, gen, start, end in inputs:
                self._read_into_tail((host, name, gen), self._file(host, name).mirror_path(gen), start, end, tail)
            tail.write(path, lambda point: crash_point("merge-" + point))
        crash_point("merge-before-manifest")

    def finish_merge(self, names: list[str], path: str) -> bool:
        """Swap the merged segment in, unless its inputs changed meanwhile."""
        current = [e["name"] for e in self.entries]
        if not all(n in current for n in names):
            os.remove(path)
            return False
        self._replace([current.index(n) for n in names], path)
        self.merges += 1
        return True

    def _replace(self, plan: list[int], path: str) -> None:
        olds = [self.entries[i] for i in plan]
        entry = {
            "name": os.path.basename(path),
            "lines": sum(e["lines"] for e in olds),
            "ranges": _coalesce([r for e in olds for r in e["ranges"] if [r[0], r[1], r[2]] not in e.get("dead", [])]),
            "dead": [],
        }
        removed = [self.segments[i] for i in plan]
        keep = [i for i in range(len(self.entries)) if i not in plan]
        self.entries = [self.entries[i] for i in keep] + [entry]
        self.segments = [self.segments[i] for i in keep] + [Segment(path)]
        self._save_manifest()
        crash_point("merge-swapped")
        for segment in removed:
            segment.close()
            os.remove(segment.path)

    def merge_all(self) -> None:
        while self.merge_once():
            pass

    # ---------------------------------------------------------- search

    def sources(self) -> list[tuple[Source, BitMap]]:
        out: list[tuple[Source, BitMap]] = []
        for segment, entry in zip(self.segments, self.entries):
            dead = entry.get("dead")
            out.append((segment, self._dead(segment, {tuple(d) for d in dead}) if dead else BitMap()))
        out.append((self.tail, BitMap()))
        return out

    @staticmethod
    def _dead(source: Source, dead: set[Any]) -> BitMap:
        ids = [i for i, fg in enumerate(source.fgs) if fg in dead]
        return BitMap.union(*(source.fg_bitmaps[i] for i in ids)) if ids else BitMap()

    def search(self, query: str, cursor: str | None = None, page_size: int = 100, count: bool = False,
               histogram: str | None = None) -> dict[str, Any]:
        """Run ``query``; see :func:`rill.index.search.run_search`."""
        parsed = _parse(query)
        return run_search(self.sources(), parsed, self.now(), self.reader, cursor, page_size, count, histogram)

    # ---------------------------------------------------------- retention

    def forget(self, fgs: Sequence[FG]) -> None:
        """Drop these generations from the index (their mirror files go separately)."""
        doomed = {tuple(fg) for fg in fgs}
        self._covered = None
        for entry in self.entries:
            held = {(r[0], r[1], r[2]) for r in entry["ranges"]}
            entry["dead"] = sorted([list(d) for d in {tuple(d) for d in entry.get("dead", [])} | (held & doomed)])
        keep = [i for i, e in enumerate(self.entries) if any([r[0], r[1], r[2]] not in e["dead"] for r in e["ranges"])]
        gone = [self.segments[i] for i in range(len(self.entries)) if i not in keep]
        self.entries = [self.entries[i] for i in keep]
        self.segments = [self.segments[i] for i in keep]
        if doomed & set(self.tail.ranges):
            self._rebuild_tail(doomed)
        for fg in doomed:
            self.reader.forget(fg)  # type: ignore[arg-type]
        if not self.read_only:
            self._save_manifest()
            for segment in gone:
                segment.close()
                os.remove(segment.path)

    def _rebuild_tail(self, without: set[Any]) -> None:
        old, self.tail = self.tail, Tail()
        for fg, spans in old.ranges.items():
            if fg not in without:
                for start, end in spans:
                    self._read_into_tail(fg, self._mirror_path(fg), start, end, self.tail)

    def close(self) -> None:
        self.reader.close()
        for segment in self.segments:
            segment.close()
