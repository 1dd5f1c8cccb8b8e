"""Immutable index segments: one checksummed file each.  Pure, no Twisted.

Layout (all integers little-endian)::

    b"RILLSEG3"
    sections ...                       (offsets and lengths are in the footer)
    footer: JSON {"lines", "fgs", "min_dt", "max_dt", "sections", "buckets", "fgbm", "crc"}
    trailer: <I footer length> <I crc32(footer)> b"RILLEND1"

``crc`` is the CRC-32 of every byte before the footer, so a torn or
corrupted file is detected when it is opened (:class:`CorruptSegment`).

Sections: ``cols`` (zlib-compressed columns: generation id, byte offset,
line length and datetime in ms, offsets and datetimes delta-encoded),
``dict`` (the term dictionary, sorted by UTF-8 bytes, in zlib-compressed
blocks of :data:`BLOCK` terms), ``blocks`` (each block's first term and
offset), ``post`` (Roaring postings) and ``extra`` (Roaring bitmaps of line
ids: one per datetime minute, listed in the footer's ``buckets``, and one per
generation, in ``fgbm`` -- what ``host:``/``path:`` use).

An inflated dictionary block is ``<H n>``, then ``n + 1`` u32 term starts and
``n + 1`` u32 postings starts, then the terms (UTF-8, concatenated), then the
postings (concatenated).  A term's postings are inline ascending u32 ids when
their length is a multiple of 4, else ``b"R" <Q offset> <I length>`` of a
Roaring bitmap in ``post``.  A block is assembled by ``map``/``join`` calls
with Python code only for terms of several ids: a segment holds about two
distinct terms per line (ids, addresses, numbers), three in four with a
single id (measured on the bench corpus: writing a 200,000-line segment went
from ~2.1 s to ~1.6 s of CPU with this layout and zlib level 1).  The
``blocks`` section is ``<I count>``, ``count + 1`` u64 block offsets,
``count + 1`` u32 first-term starts and the first terms.

Postings format, measured here (CPython 3.11, pyroaring 1.2, 100k random ids
out of 2M): delta+varint takes 1.0 byte per id but decodes in pure Python at
~2.8M ids/s (36 ms for one such list), while Roaring takes 2.0 bytes per id and
deserializing two lists plus their C-level ``&`` costs ~0.11 ms -- over two
hundred times faster, and dense lists shrink to bitsets or runs.  Roaring's
18-byte minimum, though, would bloat the rare terms that make up most of a log
dictionary, so lists of up to :data:`INLINE_MAX` ids are stored inline as u32
arrays (decoded by ``array.frombytes``, in C) inside the compressed
dictionary blocks, and longer ones as Roaring.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import struct
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, chain, compress, islice, repeat
from operator import getitem, gt, itemgetter, sub

from pyroaring import BitMap, FrozenBitMap

MAGIC = b"RILLSEG3"  # bumped with every format change: older files read as corrupt, rebuilt
END = b"RILLEND1"
TRAILER = struct.Struct("<II8s")
BLOCK = 64
INLINE_MAX = 16
CACHED_TERMS = 4096  # per open segment: looked-up terms whose postings are small (see Segment.postings)
CACHED_BYTES = 4096  # the largest Roaring postings kept there
CACHED_MINUTES = 4096  # per open segment: minute buckets decoded (see Segment.bucket)
LEVEL = 1  # zlib level of blocks and columns: level 6 saves 1.6% of a segment and costs a sixth of its writing
_U32 = struct.Struct("<I")
_REF = struct.Struct("<cQI")  # b"R", offset in ``post``, length: 13 bytes, never a multiple of 4

FG = tuple[str, str, int]  # (host, path, generation number)


class CorruptSegment(Exception):
    """A segment file failed its checks (torn write, bit rot, wrong format)."""


def _deltas(values: Sequence[int]) -> array:
    return array("q", map(sub, values, chain((0,), values)))


# ------------------------------------------------------------------ columns


class Columns:
    """Per-line columns: generation id, byte offset, line length, datetime ms."""

    __slots__ = ("fg", "off", "length", "dt")

    def __init__(self, fg: array, off: array, length: array, dt: array) -> None:
        self.fg, self.off, self.length, self.dt = fg, off, length, dt

    @classmethod
    def empty(cls) -> Columns:
        return cls(array("I"), array("q"), array("I"), array("q"))

    def __len__(self) -> int:
        return len(self.fg)

    def encode(self) -> bytes:
        parts = [self.fg.tobytes(), _deltas(self.off).tobytes(), self.length.tobytes(), _deltas(self.dt).tobytes()]
        raw = struct.pack("<Q", len(self.fg)) + b"".join(parts)
        return zlib.compress(raw, LEVEL)

    @classmethod
    def decode(cls, blob: bytes) -> Columns:
        raw = zlib.decompress(blob)
        (n,) = struct.unpack_from("<Q", raw)
        pos = 8
        cols = []
        for code in ("I", "q", "I", "q"):
            col = array(code)
            col.frombytes(raw[pos : pos + n * col.itemsize])
            pos += n * col.itemsize
            cols.append(col)
        fg, off, length, dt = cols
        return cls(fg, array("q", accumulate(off)), length, array("q", accumulate(dt)))


def buckets_of(dt: Sequence[int], base: int = 0) -> dict[int, BitMap]:
    """Line ids (from ``base``) grouped by datetime minute."""
    groups: dict[int, list[int]] = {}
    for i, ms in enumerate(dt, base):
        m = ms // 60000
        g = groups.get(m)
        if g is None:
            groups[m] = [i]
        else:
            g.append(i)
    return {m: BitMap(ids) for m, ids in groups.items()}


def fg_bitmaps_of(fg: Sequence[int], count: int) -> list[BitMap]:
    """Line ids grouped by generation id."""
    groups: list[list[int]] = [[] for _ in range(count)]
    for i, f in enumerate(fg):
        groups[f].append(i)
    return [BitMap(ids) for ids in groups]


# ------------------------------------------------------------------ writing


def _bitmap_table(bitmaps: Iterable[tuple[int, BitMap]], post: bytearray) -> list[list[int]]:
    table = []
    for key, bm in bitmaps:
        bm.run_optimize()
        blob = bm.serialize()
        table.append([key, len(post), len(blob)])
        post += blob
    return table


def write_segment(
    path: str,
    fgs: Sequence[FG],
    columns: Columns,
    postings: Iterable[tuple[bytes, BitMap | Sequence[int]]],
    buckets: dict[int, BitMap],
    fg_bitmaps: Sequence[BitMap],
    crash_hook: Callable[[str], None] = lambda point: None,
) -> int:
    """Write a segment atomically (temp, fsync, rename); return its size.

    ``postings`` must come in ascending order of the UTF-8 terms; a list of
    ids must hold one id, or be a :class:`BitMap`.
    """
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        sections: dict[str, list[int]] = {}
        crc = zlib.crc32(MAGIC)

        def section(name: str, blob: bytes | bytearray) -> None:
            nonlocal crc
            sections[name] = [f.tell(), len(blob)]
            f.write(blob)
            crc = zlib.crc32(blob, crc)

        section("cols", columns.encode())
        dictionary, blocks, post = _encode_dictionary(postings)
        section("dict", dictionary)
        section("blocks", blocks)
        section("post", post)
        crash_hook("segment-half-written")
        extra = bytearray()
        bucket_table = _bitmap_table(sorted(buckets.items()), extra)
        fg_table = _bitmap_table(enumerate(fg_bitmaps), extra)
        section("extra", extra)
        dts = columns.dt
        footer = json.dumps(
            {
                "lines": len(columns),
                "fgs": [list(x) for x in fgs],
                "min_dt": min(dts) if dts else 0,
                "max_dt": max(dts) if dts else 0,
                "sections": sections,
                "buckets": bucket_table,
                "fgbm": fg_table,
                "crc": crc,
            }
        ).encode()
        f.write(footer)
        f.write(TRAILER.pack(len(footer), zlib.crc32(footer), END))
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    os.replace(tmp, path)
    return size


def _encode_dictionary(postings: Iterable[tuple[bytes, BitMap | Sequence[int]]]) -> tuple[bytearray, bytes, bytearray]:
    """The ``dict``, ``blocks`` and ``post`` sections, one block of :data:`BLOCK` terms at a time."""
    out = bytearray()
    post = bytearray()
    firsts: list[bytes] = []
    offsets = array("Q")
    entries = iter(postings)
    while True:
        block = list(islice(entries, BLOCK))
        if not block:
            break
        terms = list(map(itemgetter(0), block))
        firsts.append(terms[0])
        offsets.append(len(out))
        out += zlib.compress(_block(terms, list(map(itemgetter(1), block)), post), LEVEL)
    offsets.append(len(out))
    starts = array("I", accumulate(map(len, firsts), initial=0))
    blocks = _U32.pack(len(firsts)) + offsets.tobytes() + starts.tobytes() + b"".join(firsts)
    return out, blocks, post


def _block(terms: list[bytes], lists: list[BitMap | Sequence[int]], post: bytearray) -> bytes:
    """One inflated dictionary block: a single id packed in C, bitmaps inline or in ``post``."""
    payloads = list(map(_U32.pack, map(getitem, lists, repeat(0))))
    for k in compress(range(len(lists)), map(gt, map(len, lists), repeat(1))):
        bitmap = lists[k]
        if len(bitmap) <= INLINE_MAX:
            payloads[k] = bitmap.to_array().tobytes()  # type: ignore[union-attr]
        else:
            bitmap.run_optimize()  # type: ignore[union-attr]
            blob = bitmap.serialize()  # type: ignore[union-attr]
            payloads[k] = _REF.pack(b"R", len(post), len(blob))
            post += blob
    term_starts = array("I", accumulate(map(len, terms), initial=0))
    payload_starts = array("I", accumulate(map(len, payloads), initial=0))
    return b"".join([struct.pack("<H", len(terms)), term_starts.tobytes(), payload_starts.tobytes(),
                     *terms, *payloads])


# ------------------------------------------------------------------ reading


def _read_blocks(blob: bytes) -> tuple[list[bytes], list[int]]:
    """The ``blocks`` section: each block's first term, and the block offsets (one more)."""
    (count,) = _U32.unpack_from(blob)
    offsets = array("Q")
    offsets.frombytes(blob[4 : 4 + 8 * (count + 1)])
    starts = array("I")
    at = 4 + 8 * (count + 1)
    starts.frombytes(blob[at : at + 4 * (count + 1)])
    text = blob[at + 4 * (count + 1) :]
    return list(map(text.__getitem__, map(slice, starts, starts[1:]))), offsets.tolist()


class Segment:
    """A segment opened read-only; its columns are held in memory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path)
        with open(path, "rb") as f:
            try:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:
                raise CorruptSegment(f"{path}: empty file") from None
        try:
            self._load()
        except CorruptSegment:
            self._map.close()
            raise
        except (ValueError, KeyError, struct.error, zlib.error, IndexError) as e:
            self._map.close()
            raise CorruptSegment(f"{path}: {e}") from None

    def _load(self) -> None:
        m = self._map
        if len(m) < len(MAGIC) + TRAILER.size or m[:8] != MAGIC:
            raise CorruptSegment(f"{self.path}: bad header or too short")
        flen, fcrc, end = TRAILER.unpack_from(m, len(m) - TRAILER.size)
        fstart = len(m) - TRAILER.size - flen
        if end != END or fstart < 8 or zlib.crc32(m[fstart : fstart + flen]) != fcrc:
            raise CorruptSegment(f"{self.path}: torn or damaged footer")
        footer = json.loads(m[fstart : fstart + flen])
        crc = 0
        for at in range(0, fstart, 1 << 22):
            crc = zlib.crc32(m[at : min(fstart, at + (1 << 22))], crc)
        if crc != footer["crc"]:
            raise CorruptSegment(f"{self.path}: checksum mismatch")
        self.lines: int = footer["lines"]
        self.fgs: list[FG] = [tuple(x) for x in footer["fgs"]]  # type: ignore[misc]
        self.min_dt: int = footer["min_dt"]
        self.max_dt: int = footer["max_dt"]
        sec = footer["sections"]
        self.columns = Columns.decode(self._slice(sec["cols"]))
        self._dict = self._slice(sec["dict"])
        self._block_terms, self._block_offsets = _read_blocks(self._slice(sec["blocks"]))
        self._post_base = sec["post"][0]
        self._inflated: dict[int, tuple[list[bytes], array, bytes, int]] = {}
        self._looked_up: dict[str, FrozenBitMap] = {}
        self._decoded_buckets: dict[int, FrozenBitMap] = {}
        extra = sec["extra"][0]
        self._buckets = {k: (extra + o, n) for k, o, n in footer["buckets"]}
        self.minutes = sorted(self._buckets)
        self.fg_bitmaps = [self._bitmap(extra + o, n) for _, o, n in footer["fgbm"]]

    def _slice(self, where: list[int]) -> bytes:
        return self._map[where[0] : where[0] + where[1]]

    def _bitmap(self, offset: int, length: int) -> BitMap:
        return BitMap.deserialize(self._map[offset : offset + length])

    def close(self) -> None:
        self._map.close()

    def _block(self, block: int) -> tuple[list[bytes], array, bytes, int]:
        """Block ``block`` inflated: (its terms, postings starts, data, where postings begin)."""
        cached = self._inflated.get(block)
        if cached is None:
            start, end = self._block_offsets[block], self._block_offsets[block + 1]
            data = zlib.decompress(self._dict[start:end])
            (n,) = struct.unpack_from("<H", data)
            starts = array("I")
            starts.frombytes(data[2 : 2 + 8 * (n + 1)])
            base = 2 + 8 * (n + 1)
            text = data[base : base + starts[n]]
            terms = list(map(text.__getitem__, map(slice, starts[: n + 1], starts[1 : n + 1])))
            cached = (terms, starts[n + 1 :], data, base + starts[n])
            if len(self._inflated) > 64:
                self._inflated.clear()
            self._inflated[block] = cached
        return cached

    def _decode(self, payload: bytes) -> BitMap:
        if len(payload) % 4 == 0:
            return BitMap(array("I", payload))
        _, offset, length = _REF.unpack(payload)
        return self._bitmap(self._post_base + offset, length)

    def postings(self, term: str) -> FrozenBitMap:
        """Line ids holding ``term``: a frozen bitmap (combine it, never change it).

        The segment never changes, so the postings of a term looked up before
        come from a small cache when they are short (inline, or Roaring of at
        most :data:`CACHED_BYTES`) or empty: a repeated rare-term query skips
        the dictionary (encoding, two binary searches, decoding: about 1.5 us
        a segment).  Long postings are decoded afresh (their decoding is
        small beside the query work they lead to) and not held in memory.
        """
        cached = self._looked_up.get(term)
        if cached is not None:
            return cached
        key = term.encode("utf-8", "surrogatepass")
        block = bisect.bisect_right(self._block_terms, key) - 1
        payload = b""
        if block >= 0:
            terms, starts, data, base = self._block(block)
            k = bisect.bisect_left(terms, key)
            if k < len(terms) and terms[k] == key:
                payload = data[base + starts[k] : base + starts[k + 1]]
        if len(payload) % 4 == 0:
            found = FrozenBitMap(array("I", payload))
        else:
            _, offset, length = _REF.unpack(payload)
            start = self._post_base + offset
            found = FrozenBitMap.deserialize(self._map[start : start + length])
            if length > CACHED_BYTES:
                return found
        if len(self._looked_up) >= CACHED_TERMS:
            self._looked_up.clear()
        self._looked_up[term] = found
        return found

    def terms(self) -> Iterator[tuple[bytes, BitMap]]:
        """Every term (UTF-8) and its postings, in ascending term order."""
        for block in range(len(self._block_terms)):
            terms, starts, data, base = self._block(block)
            payloads = map(data.__getitem__, map(slice, map(base.__add__, starts), map(base.__add__, starts[1:])))
            yield from zip(terms, map(self._decode, payloads))

    def bucket(self, minute: int) -> FrozenBitMap:
        """Line ids of one datetime minute: frozen, and kept decoded (up to :data:`CACHED_MINUTES`).

        A page of a common term walks time windows of up to hundreds of
        minutes in every segment; decoding their buckets afresh at each
        query cost more than the rest of the page.
        """
        found = self._decoded_buckets.get(minute)
        if found is None:
            where = self._buckets.get(minute)
            found = FrozenBitMap.deserialize(self._map[where[0] : where[0] + where[1]]) if where else FrozenBitMap()
            if len(self._decoded_buckets) >= CACHED_MINUTES:
                self._decoded_buckets.clear()
            self._decoded_buckets[minute] = found
        return found
