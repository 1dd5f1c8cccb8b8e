"""Running a parsed query over segments and the tail.  Pure, no Twisted.

Each source (a segment or the tail) answers a boolean expression with two
bitmaps, ``sure`` and ``maybe`` (``sure`` within ``maybe``): terms and fields
are exact, regexes narrow to every line in range, and phrases are answered
from word pairs (rules 5 and 6 of :mod:`rill.index.tokenizer`).  A phrase of
letter-only words holds all its pair tokens; that is exact for two words, and
for more whenever no inner word is repeated in the line (the inner words then
chain the pairs into one run), so only lines holding an inner word's repeat
token are unsure.  Other phrases narrow to the lines holding their indexed
pairs and remaining words.  Lines in ``maybe - sure`` are read back from the
mirror and checked by :func:`rill.index.match.matches`.

Order is newest first by the key ``(datetime ms, host, path, generation,
offset)``; the cursor is the last key returned, so pages stay exact while
segments are flushed and merged underneath.
"""

from __future__ import annotations

import base64
from bisect import bisect_left, bisect_right
import re
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import add, floordiv, getitem, mod
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any, Protocol

from pyroaring import BitMap, FrozenBitMap

from rill.index.match import LineView, matches
from rill.index.query import And, Field, MatchAll, Node, Not, Or, Phrase, Query, QueryError, Regex, Term, parse_time
from rill.index.segment import FG, Columns
from rill.index.tokenizer import pair_token, pairs_indexed, phrase_regex, repeat_token

SMALL = 4000  # candidates sorted at once below this; walked by time windows above
MINUTE = 60000
EAGER_LIMIT = 50_000  # below this many lines to check, check them all at once (fast, in batch)

Key = tuple[int, str, str, int, int]
Row = tuple[int, FG, int, int]  # a hit: (datetime ms, generation, offset, line length), sorts as its key
ReadLine = Callable[[FG, int, int], bytes]


class Source(Protocol):
    name: str
    lines: int
    fgs: list[FG]
    columns: Columns
    min_dt: int
    max_dt: int
    minutes: list[int]
    fg_bitmaps: list[BitMap]

    def postings(self, term: str) -> BitMap | FrozenBitMap: ...  # combined into new bitmaps, never changed

    def bucket(self, minute: int) -> BitMap | FrozenBitMap: ...  # combined into new bitmaps, never changed


@dataclass
class _Part:
    """One source's candidates for one query."""

    source: Source
    sure: BitMap
    maybe: BitMap


@lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def iso_ms(ms: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` for a unix time in ms."""
    seconds, millis = divmod(ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"


_MILLIS = [f".{m:03d}Z" for m in range(1000)]


def iso_ms_many(values: Sequence[int]) -> list[str]:
    """:func:`iso_ms` of each of ``values``, in C-level maps."""
    seconds = map(_second, map(floordiv, values, repeat(1000)))
    return list(map(add, seconds, map(_MILLIS.__getitem__, map(mod, values, repeat(1000)))))


def encode_cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        dt, host, path, gen, off = raw
        return (int(dt), str(host), str(path), int(gen), int(off))
    except (ValueError, TypeError):
        raise QueryError(1, "a cursor returned by an earlier search") from None


# ------------------------------------------------------------------ candidates


def _everything(source: Source) -> BitMap:
    return BitMap(range(source.lines))


def _minutes(source: Source, first: int | None, last: int | None) -> list[int]:
    """The minutes of ``source`` (sorted) from ``first`` to ``last`` included, ``None`` for no bound."""
    minutes = source.minutes
    return minutes[0 if first is None else bisect_left(minutes, first) :
                   len(minutes) if last is None else bisect_right(minutes, last)]


def _time_filter(source: Source, lo: int | None, hi: int | None, universe: BitMap | None) -> BitMap | None:
    """Lines with ``lo <= dt < hi`` (within ``universe``); ``None`` when the whole source qualifies."""
    if (lo is None or source.min_dt >= lo) and (hi is None or source.max_dt < hi):
        return None
    first = (lo // MINUTE) if lo is not None else None
    last = ((hi - 1) // MINUTE) if hi is not None else None
    result = BitMap().union(*map(source.bucket, _minutes(source, first, last)))  # mutable, whatever buckets are
    dt = source.columns.dt
    for edge in {first, last} - {None}:
        for i in source.bucket(edge) & result:  # type: ignore[arg-type]
            if (lo is not None and dt[i] < lo) or (hi is not None and dt[i] >= hi):
                result.discard(i)
    return result if universe is None else result & universe


def _evaluate(node: Node, source: Source, universe: BitMap | None) -> tuple[BitMap, BitMap]:
    """(sure, maybe) of ``node`` within ``universe``; ``None`` is every line of the source.

    The bitmaps returned may be a source's cached postings (frozen): never
    changed in place, only combined into new ones.
    """
    if isinstance(node, Term):
        hits = source.postings(node.token)
        if universe is not None:
            hits = hits & universe
        return hits, hits
    if isinstance(node, Phrase):
        return _phrase(node.words, source, universe)
    if isinstance(node, Field):
        fids = [i for i, fg in enumerate(source.fgs) if fnmatchcase(fg[0] if node.name == "host" else fg[1], node.glob)]
        hits = BitMap.union(*(source.fg_bitmaps[i] for i in fids)) if fids else BitMap()  # a new bitmap
        if universe is not None:
            hits &= universe
        return hits, hits
    if isinstance(node, And):
        sure, maybe = _evaluate(node.items[0], source, universe)
        for item in node.items[1:]:
            if not maybe:
                break
            s, m = _evaluate(item, source, maybe)
            sure, maybe = sure & s, m
        return sure, maybe
    if isinstance(node, Or):
        parts = [_evaluate(item, source, universe) for item in node.items]
        return BitMap.union(*(s for s, _ in parts)), BitMap.union(*(m for _, m in parts))
    whole = _everything(source) if universe is None else universe
    if isinstance(node, Not):
        sure, maybe = _evaluate(node.item, source, whole)
        return whole - maybe, whole - sure
    if isinstance(node, Regex):
        return BitMap(), whole
    if isinstance(node, MatchAll):
        return whole, whole
    raise TypeError(f"not a query node: {node!r}")


def _phrase(words: tuple[str, ...], source: Source, universe: BitMap | None) -> tuple[BitMap, BitMap]:
    """(sure, maybe) of a phrase: its indexed pairs and the words no such pair covers."""
    indexed = pairs_indexed(words)
    paired = {i + d for i, ok in enumerate(indexed) if ok for d in (0, 1)}
    tokens = [pair_token(a, b) for (a, b), ok in zip(zip(words, words[1:]), indexed) if ok]
    tokens += [w for i, w in enumerate(words) if i not in paired]
    hits = universe
    for token in tokens:
        hits = source.postings(token) if hits is None else source.postings(token) & hits
        if not hits:
            return hits, hits
    if hits is None:
        hits = _everything(source)
    if len(words) > 1 and not all(indexed):
        return BitMap(), hits
    inner = [source.postings(repeat_token(w)) for w in set(words[1:-1])]
    return (hits - BitMap.union(*inner) if inner else hits), hits


def candidates(sources: Sequence[tuple[Source, BitMap]], query: Query, now: float) -> list[_Part]:
    """Evaluate ``query`` on every ``(source, dead lines)``."""
    lo = _ms(query.since, now)
    hi = _ms(query.until, now)
    parts = []
    for source, dead in sources:
        if not source.lines or (lo is not None and source.max_dt < lo) or (hi is not None and source.min_dt >= hi):
            continue
        universe = _everything(source) - dead if dead else None  # None: every line, no bitmap built
        timed = _time_filter(source, lo, hi, universe)
        if timed is not None:
            universe = timed
        sure, maybe = _evaluate(query.expr, source, universe)
        if maybe:
            parts.append(_Part(source, sure, maybe))
    return parts


def _ms(when: Any, now: float) -> int | None:
    return None if when is None else int(when.resolve(now) * 1000)


# ------------------------------------------------------------------ ordering


class Searcher:
    """Pages, counts and histograms over the candidates of one query."""

    def __init__(self, parts: list[_Part], query: Query, read_line: ReadLine, eager: bool = True) -> None:
        self.parts = parts
        self.query = query
        self.read_line = read_line
        self.exact = all(p.sure is p.maybe or len(p.sure) == len(p.maybe) for p in parts)
        if self.exact:
            return
        checks = _conjunctive_checks(query.expr)
        todo = sum(len(p.maybe) - len(p.sure) for p in parts)
        if checks is not None and (eager or todo <= EAGER_LIMIT):
            for part in parts:
                part.sure |= self._bulk_verify(part, part.maybe - part.sure, checks)
                part.maybe = part.sure
            self.exact = True

    def _bulk_verify(self, part: _Part, ids: BitMap, checks: list[Phrase | Regex]) -> BitMap:
        """The lines of ``ids`` passing every check, read and tested in one batch."""
        if not ids:
            return BitMap()
        array = ids.to_array()
        folded, raw, ascii_only = _split_batch(self._read_batch(part, array), checks)
        passed = [True] * len(array)
        for node in checks:
            if isinstance(node, Phrase):
                pattern = phrase_regex(node.words)
                found = map((_bytes_pattern(pattern) if ascii_only else pattern).search, folded)
            else:
                found = map(node.compiled().search, raw)
            passed = [p and f is not None for p, f in zip(passed, found)]
        return BitMap(compress(array, passed))

    def _read_batch(self, part: _Part, array: Any) -> bytes:
        """The lines ``array`` of one source, joined by newlines (C-level loops only)."""
        cols, fgs = part.source.columns, part.source.fgs
        mapping = getattr(self.read_line, "mapping", None)
        if mapping is None:
            return b"\n".join(map(self.read_line, map(fgs.__getitem__, map(cols.fg.__getitem__, array)),
                                   map(cols.off.__getitem__, array), map(cols.length.__getitem__, array)))
        maps = [mapping(fg) for fg in fgs]  # slice the memory maps directly: no Python call per line
        offsets = list(map(cols.off.__getitem__, array))
        slices = map(slice, offsets, map(add, offsets, map(cols.length.__getitem__, array)))
        return b"\n".join(map(getitem, map(maps.__getitem__, map(cols.fg.__getitem__, array)), slices))

    def key(self, part: _Part, i: int) -> Key:
        cols = part.source.columns
        host, path, gen = part.source.fgs[cols.fg[i]]
        return (cols.dt[i], host, path, gen, cols.off[i])

    def verify(self, part: _Part, i: int) -> bool:
        if i in part.sure:
            return True
        cols = part.source.columns
        fg = part.source.fgs[cols.fg[i]]
        text = self.read_line(fg, cols.off[i], cols.length[i]).decode("utf-8", "replace")
        return matches(self.query.expr, LineView(fg[0], fg[1], text))

    def count(self) -> int:
        total = sum(len(p.sure) for p in self.parts)
        if not self.exact:
            total += sum(1 for p in self.parts for i in p.maybe - p.sure if self.verify(p, i))
        return total

    def page(self, size: int, below: Key | None) -> tuple[list[Row], bool]:
        """Up to ``size`` hits newest first, keys strictly below ``below``; and whether more exist.

        A hit is a :data:`Row`, ``(datetime, (host, path, generation), offset,
        length)``; rows sort as their keys do (a line's generation and offset are unique).

        Candidates are taken in time windows from the newest down (one window
        for few candidates, else a minute growing fourfold); within a window
        only the newest ``size + 1`` are keyed and sorted when no line needs
        reading back.
        """
        need = size + 1
        total = sum(len(p.maybe) for p in self.parts)
        if self.exact and below is None and total <= SMALL:
            return self._few(size)
        hits: list[tuple[Key, _Part, int]] = []
        top = below[0] if below else max((p.source.max_dt for p in self.parts), default=0)
        span = MINUTE if total > SMALL else None
        start = top + 1
        floor = min((p.source.min_dt for p in self.parts), default=0)
        while len(hits) < need and start > floor:
            end = start
            start = floor if span is None else max(floor, (end - span) // MINUTE * MINUTE)
            for hit in self._window(start, end, below, need - len(hits) if self.exact else None):
                if self.verify(hit[1], hit[2]):
                    hits.append(hit)
                    if len(hits) >= need:
                        break
            span = None if span is None else span * 4
        rows = [(dt, (host, path, gen), off, part.source.columns.length[i])
                for (dt, host, path, gen, off), part, i in hits[:size]]
        return rows, len(hits) > size

    def _few(self, size: int) -> tuple[list[Row], bool]:
        """:meth:`page` from the top for few exact hits: all keyed and sorted at once.

        Rows are built by C-level ``map``/``zip`` calls, no Python code per hit.
        """
        rows: list[Row] = []
        for part in self.parts:
            fgs, cols = part.source.fgs, part.source.columns
            ids = part.maybe.to_array()
            rows += zip(map(cols.dt.__getitem__, ids), map(fgs.__getitem__, map(cols.fg.__getitem__, ids)),
                        map(cols.off.__getitem__, ids), map(cols.length.__getitem__, ids))
        rows.sort(reverse=True)
        return rows[:size], len(rows) > size

    def _window(self, start: int, end: int, below: Key | None, want: int | None) -> list[tuple[Key, _Part, int]]:
        """Candidates with ``start <= dt < end`` and key below ``below``, newest first (the newest ``want``)."""
        upper = end - 1 if below is None else min(end - 1, below[0])
        chunks = []
        for part in self.parts:
            src = part.source
            if src.max_dt < start or src.min_dt > upper:
                continue
            ids = part.maybe
            if src.min_dt < start or src.max_dt > upper:
                ids = ids & BitMap().union(*map(src.bucket, _minutes(src, start // MINUTE, upper // MINUTE)))
            array = ids.to_array()
            chunks.append((part, array, list(map(src.columns.dt.__getitem__, array))))
        low = start
        if want is not None:
            eligible = sorted((d for _, _, dts in chunks for d in dts if start <= d <= upper), reverse=True)
            skip = 0  # lines at the cursor's own datetime but not below it come first: pass over them
            if below is not None and upper == below[0]:
                skip = sum(1 for part, array, dts in chunks for i, d in zip(array, dts)
                           if d == upper and self.key(part, i) >= below)
            if len(eligible) > want + skip:
                low = eligible[want + skip - 1]
        batch = []
        for part, array, dts in chunks:
            for i, d in zip(array, dts):
                if low <= d <= upper:
                    key = self.key(part, i)
                    if below is None or key < below:
                        batch.append((key, part, i))
        batch.sort(key=lambda h: h[0], reverse=True)
        return batch

    def histogram(self, seconds: int) -> list[list[Any]]:
        """Hit counts per time bucket of ``seconds`` (a multiple of 60 is exact per minute bucket)."""
        width = seconds * 1000
        bins: dict[int, int] = {}
        for part in self.parts:
            if self.exact and width % MINUTE == 0:
                for m in part.source.minutes:
                    n = part.sure.intersection_cardinality(part.source.bucket(m))
                    if n:
                        b = m * MINUTE // width * width
                        bins[b] = bins.get(b, 0) + n
                continue
            dt = part.source.columns.dt
            for i in part.maybe:
                if self.verify(part, i):
                    b = dt[i] // width * width
                    bins[b] = bins.get(b, 0) + 1
        return [[iso_ms(b), bins[b]] for b in sorted(bins)]


def _split_batch(blob: bytes, checks: list[Phrase | Regex]) -> tuple[list[Any], list[Any], bool]:
    """(case-folded lines, raw lines, whether they are ASCII bytes) of a batch."""
    regexes = any(isinstance(node, Regex) for node in checks)
    if blob.isascii() and not regexes:  # bytes.lower() is casefold and bytes \w is str \w here
        folded = blob.lower().split(b"\n")
        return folded, folded, True
    text = blob.decode("utf-8", "replace")
    folded = text.casefold().split("\n")
    return folded, (text.split("\n") if regexes else folded), False


@lru_cache(maxsize=256)
def _bytes_pattern(pattern: re.Pattern[str]) -> re.Pattern[bytes]:
    """The same phrase regex over ASCII bytes (non-ASCII words simply never match)."""
    return re.compile(pattern.pattern.encode("utf-8"))


def _conjunctive_checks(expr: Node) -> list[Phrase | Regex] | None:
    """For an AND of terms, fields, phrases and regexes: the parts to check on the text."""
    items = expr.items if isinstance(expr, And) else (expr,)
    if not all(isinstance(x, (Term, Field, Phrase, Regex)) for x in items):
        return None
    return [x for x in items if isinstance(x, Regex) or (isinstance(x, Phrase) and len(x.words) > 1)]


def run_search(
    sources: Sequence[tuple[Source, BitMap]],
    query: Query,
    now: float,
    read_line: ReadLine,
    cursor: str | None = None,
    page_size: int = 100,
    count: bool = False,
    histogram: str | None = None,
) -> dict[str, Any]:
    """The search result dict: hits newest first, cursor, and optional count and histogram."""
    size = min(page_size, query.limit) if query.limit else page_size
    searcher = Searcher(candidates(sources, query, now), query, read_line, eager=count or bool(histogram))
    below = decode_cursor(cursor) if cursor else None
    hits, more = searcher.page(size, below)
    result: dict[str, Any] = {
        "hits": _hits(hits, read_line),
        "cursor": encode_cursor(_key(hits[-1])) if more and hits and not query.limit else None,
    }
    if count:
        result["count"] = searcher.count()
    if histogram:
        result["histogram"] = searcher.histogram(parse_bucket(histogram))
    return result


def parse_bucket(text: str) -> int:
    """A histogram bucket like ``5m``/``1h``/``1d`` in seconds."""
    when = parse_time("-" + text, 1)
    if not when.relative or when.seconds >= 0:
        raise QueryError(1, "a histogram bucket like 5m, 1h or 1d")
    return int(-when.seconds)


def _hits(rows: list[Row], read_line: ReadLine) -> list[dict[str, Any]]:
    """The result dicts of a page of hits.

    Lines are read in one batch when the reader can (``read_many``) and
    decoded in one call (no line holds a newline); datetimes are formatted by
    C-level maps over cached seconds: what is left per hit is the dict itself.
    """
    if not rows:
        return []
    dts, fgs, offs, lengths = zip(*rows)
    many = getattr(read_line, "read_many", None)
    raw = many(fgs, offs, lengths) if many is not None else map(read_line, fgs, offs, lengths)
    lines = b"\n".join(raw).decode("utf-8", "replace").split("\n")
    return [{"host": host, "path": path, "generation": gen, "offset": off, "datetime": when, "line": line}
            for when, (host, path, gen), off, line in zip(iso_ms_many(dts), fgs, offs, lines)]


def _key(row: Row) -> Key:
    dt, (host, path, gen), off, _ = row
    return (dt, host, path, gen, off)
