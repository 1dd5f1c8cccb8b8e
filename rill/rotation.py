"""Pure rotation and truncation planning: which server file holds which generation, and what to read.

No I/O, no Twisted.  The tap polls the server, builds a :class:`Snapshot` of
one watched path (the file at the path and its rotated siblings), and asks
:func:`plan` what to do; it executes the returned actions in order.

The model
---------
* A **generation** is one file identity: the bytes one file held from its
  creation on.  It is known by (device, inode) *and* by the fingerprint of
  its first ``n = min(FINGERPRINT_SIZE, length)`` mirrored bytes.  Its mirror
  length is its resume offset.  Generations are numbered in the order they
  were created on the server; publish order is generation order.
* A generation is **open** (state ``live`` or ``draining``) until a
  :class:`Finish`; ``drained``/``gone`` generations are history.

How candidates are matched, for each open generation, oldest first
-----------------------------------------------------------------
1. **By inode** (any name; renames keep the inode).  The file is the
   generation only if it is *consistent*: not shrunk below our length nor
   below the size seen at the last poll, its head over ``n`` bytes equals the
   fingerprint, and the tap has not reported a tail-check mismatch for it.
   Same inode with a different head is another file (inode reuse) or the
   same inode truncated and rewritten.
2. **By fingerprint**, when the inode is gone or inconsistent: among the other
   unclaimed files not older than the generation's last seen mtime, the
   oldest whose head matches.  This finds a ``.gz`` (gzip makes a new inode;
   heads of ``.gz`` files are of the decompressed bytes) and the copy left by
   ``copytruncate``.  The path itself is never a copy.  An empty generation
   has no fingerprint: it is matched by inode only.
3. **Hidden copytruncate**: a consistent inode can still hide a truncation
   when the file regrew with the same first ``n`` bytes (always so for an
   empty generation).  If the file changed since the last poll and an
   unclaimed sibling written since then, rotated further than the file,
   starts with our bytes but not with the file's, that sibling is the copy.
4. Otherwise the generation's remaining bytes are lost: :class:`Gap` and
   ``Finish(complete=False)``.  A generation whose descriptor a running stream
   still reads (deleted or compressed while connected) is drained by that
   stream instead, and finished once the stream has been idle ``quiet`` s.
   An empty generation whose inode vanished is a gap of unknown size: it
   may have held bytes (if they were compressed, the ``.gz`` is adopted as a
   new generation, so the gap is a "maybe"; we cannot tell).  But the oldest
   unclaimed ``.gz`` written since it was last seen that holds no finished
   generation is taken for it (gzip is what makes an inode vanish): drained
   (if it holds anything) and finished, no gap.  (A guess: if the file was
   also copytruncated while we were away, the copy holding its first bytes
   is numbered after it -- every byte is mirrored once, in another order.)

Files nobody claimed become **new generations** (:class:`Adopt`): the file
at the path always; a sibling only if it is an intermediate generation we
never saw -- written since the last poll (``mtime >= last_poll_time``),
rotated less far (by suffix) than the newest known generation's file (none
if that is still the path), and not a finished generation (by inode, for a
``.gz`` by its head alone -- not every compressor keeps the mtime --, for a
copy by its size; and head).  So the
history from before Rill started watching is never ingested.  Adoptions are
ordered by rotation suffix (``.2`` before ``.1``, dateext by date), then by
mtime, the path last.  (Suffix first: a writer that has not reopened yet
makes an older file's mtime newer than a newer file's.)

The order of actions
--------------------
First the open generations, oldest first, each with its Drain / Gap /
Finish; then the adoptions, oldest first, each ``Adopt`` followed by its own
``Drain`` (and ``Finish`` if it is settled).  Run them in order: a
``Drain(follow=False)`` runs to the end of the file before the next action;
``Drain(follow=True)`` starts a stream that stays.  ``Drain`` replaces any
stream already reading that generation; ``Finish`` stops it.

Only the file at the path is followed (``follow=True``).  A drain from any
other file reads to its end and stops; the generation stays open until the
file is *settled* -- compressed, or unchanged (mtime and ctime) for ``quiet``
seconds -- and meanwhile every poll that finds the file grown drains it again:
a writer that has not reopened may still append to a renamed file
(RELIABILITY scenario 3).  (Following every renamed file instead would keep a
remote process and a channel per recent generation: dozens when a busy log
rotates by size.)  A generation with a running stream -- the one that followed
it while it was the path -- gets no new Drain while its file is consistent:
the stream follows the descriptor through renames; it is finished on a later
poll, when its file is settled, fully read, and its stream idle for ``quiet`` s.

copytruncate: the bytes after our offset are drained from the copy (not
followed: nobody appends to a copy), then the generation is finished and
the truncated file is adopted from 0.  The window between the copy and the
truncation is invisible on the server; it is reported as a :class:`Gap`
only on evidence that bytes were lost in it (the file was bigger at the last
poll than the copy is).  Reporting it unconditionally would put a gap after
every copytruncate, even when nothing was lost; a copy that ends before our
offset is no copy at all, so that case is a plain truncation gap.  A file
led by NUL bytes after a truncation (a writer that kept its offset) is
adopted as the server has it, flagged in ``Adopt.note``.

Tail check: before resuming at offset N the stream header compares the
bytes before N.  On a mismatch the tap stops carrying out the plan, adds
``(generation, device, inode)`` to ``mismatches`` and plans again: that file
is then inconsistent for that generation (truncated and rewritten with the
same head, scenarios 7 and 8) or, for a fingerprint match, not a candidate.

Limits: identity is by prefix; two files whose first ``n`` bytes are equal
(tiny generations, identical headers) can only be told apart by inode, by
size, and by the tail check.  mtimes have one-second resolution: a file
written in the same second as the last poll counts as written since it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rill.store.mirror import FINGERPRINT_SIZE

#: Seconds a renamed file must stay unchanged (and a stream idle) before its generation is finished.
QUIET_SECONDS = 60

OPEN_STATES = frozenset({"live", "draining"})


@dataclass(frozen=True)
class RemoteFile:
    """What a watch poll reports for one candidate file.

    ``heads[n]`` is the md5 hex of ``head -c n`` of the file (of ``gzip -dc``
    for ``.gz``), for the ``n`` the planner asked for.  For a file of at most
    ``n`` bytes that is the md5 of the whole file, so any ``heads[m]`` with
    ``m >= size`` answers for it.  ``ctime`` (stat ``%Z``; a rename updates it)
    is optional; it makes the settled test safer.  ``size`` of a ``.gz`` is
    its compressed size and is not used.
    """

    name: str
    device: int
    inode: int
    size: int
    mtime: int
    heads: Mapping[int, str] = field(default_factory=dict, hash=False)
    ctime: int = 0

    @property
    def compressed(self) -> bool:
        return self.name.endswith(".gz")


@dataclass(frozen=True)
class Snapshot:
    """One poll of one watched path: the file at it (None if missing) and its rotated siblings."""

    path: str
    current: RemoteFile | None
    siblings: tuple[RemoteFile, ...] = ()
    server_time: int = 0  # the server's clock (`date +%s`) taken *before* the stats

    def files(self) -> list[RemoteFile]:
        return ([self.current] if self.current else []) + list(self.siblings)


@dataclass(frozen=True)
class KnownGeneration:
    """A generation in the store, as the planner needs it.

    ``fingerprint`` is md5 of the generation's first ``fingerprint_size``
    bytes: by default min(FINGERPRINT_SIZE, length) of the mirror; more when
    the server's head was recorded (:attr:`Seen.head`) before the mirror held
    those bytes -- a generation adopted and rotated again before its stream
    delivered a byte must still be recognisable.  Size 0: no fingerprint.
    ``last_*`` are what :attr:`Plan.seen` last reported for it (None if
    never recorded).  ``stream_idle`` is None when no stream reads this
    generation now, else the seconds since that stream last delivered a byte.
    """

    number: int
    device: int
    inode: int
    fingerprint: str
    length: int
    state: str = "live"
    last_seen_name: str = ""
    last_size: int | None = None
    last_mtime: int | None = None
    stream_idle: float | None = None
    fingerprint_size: int | None = None  # None: min(FINGERPRINT_SIZE, length)

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def streaming(self) -> bool:
        return self.stream_idle is not None


@dataclass(frozen=True)
class NeedHeads:
    """Fetch these heads (one remote command), put them in the snapshot's files and plan again."""

    requests: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Adopt:
    """Create generation ``generation`` (the store's next number) with ``source``'s identity."""

    generation: int
    source: RemoteFile
    note: str = ""


@dataclass(frozen=True)
class Drain:
    """Read ``generation`` from ``source`` at ``offset`` (= its mirrored length).

    Replaces any stream already reading this generation.  ``follow`` keeps the
    stream open for appends; a ``.gz`` source is read through ``gzip -dc``.
    """

    generation: int
    source: RemoteFile
    offset: int
    follow: bool


@dataclass(frozen=True)
class Finish:
    """``generation`` gets no more bytes: stop its stream, mark it drained (or gone)."""

    generation: int
    complete: bool


@dataclass(frozen=True)
class Gap:
    """Bytes of ``generation`` from ``offset`` that cannot be recovered (``missing``: at least; None = unknown)."""

    generation: int
    offset: int
    missing: int | None
    reason: str


Action = NeedHeads | Adopt | Drain | Finish | Gap


@dataclass(frozen=True)
class Seen:
    """Where a generation's bytes are now: record it (identity and ``last_*``) once the plan is carried out.

    The identity moves with the bytes: after copytruncate it is the copy's,
    after gzip the ``.gz`` file's.  ``size`` is None for a ``.gz`` (its stat
    size is not the generation's).
    """

    generation: int
    name: str
    device: int
    inode: int
    size: int | None
    mtime: int
    head: tuple[int, str] | None = None  # (n, md5 of the first n bytes), when it says more than the mirror

    @classmethod
    def of(cls, generation: int, f: RemoteFile, head: tuple[int, str] | None = None) -> Seen:
        return cls(generation, f.name, f.device, f.inode, None if f.compressed else f.size, f.mtime, head)


@dataclass(frozen=True)
class Plan:
    """The actions, in order, and where each generation was seen."""

    actions: tuple[Action, ...]
    seen: tuple[Seen, ...] = ()

    @property
    def need_heads(self) -> NeedHeads | None:
        first = self.actions[0] if self.actions else None
        return first if isinstance(first, NeedHeads) else None


# ------------------------------------------------------------------ names and ages

_SUFFIX = re.compile(r"^[.-](\d+)$")


def is_rotated_name(path: str, name: str) -> bool:
    """Whether ``name`` is one of ``path``'s rotated names (``path.*`` or ``path-*``)."""
    return len(name) > len(path) and name.startswith(path) and name[len(path)] in ".-"


def rotation_base(name: str, paths: Iterable[str]) -> str | None:
    """The watched path ``name`` is a rotated generation of, if any (for glob taps to skip it)."""
    bases = [p for p in paths if is_rotated_name(p, name)]
    return max(bases, key=len) if bases else None


def rotated_names_of(snapshot: Snapshot) -> set[str]:
    """The sibling names of a snapshot: a glob tap must not watch these as files of their own."""
    return {f.name for f in snapshot.siblings}


def age_key(path: str, file: RemoteFile) -> tuple[int, int, int]:
    """Sort key, oldest first: the rotation suffix (``.2`` < ``.1`` < dateext by date < the path), then mtime.

    The suffix comes first: renames keep it in age order, while a writer that
    had not reopened yet can touch an older file after a newer one was created.
    mtime orders the names whose suffix says nothing (``app.log.old``).
    """
    return (*_name_rank(path, file.name), file.mtime)


def _name_rank(path: str, name: str) -> tuple[int, int]:
    """How far ``name`` is rotated, as the first two fields of :func:`age_key` (larger: newer)."""
    if name == path:
        return (3, 0)
    suffix = name[len(path):].removesuffix(".gz") if is_rotated_name(path, name) else ""
    match = _SUFFIX.match(suffix)
    if not match:
        digits = re.sub(r"\D", "", suffix)
        return (2, int(digits)) if len(digits) >= 8 else (0, 0)
    number = int(match[1])
    return (2, number) if len(match[1]) >= 8 else (1, -number)


def _rank(path: str, file: RemoteFile) -> tuple[int, int]:
    return _name_rank(path, file.name)


def _moved_back(path: str, file: RemoteFile, last_seen_name: str) -> bool:
    """Whether ``file`` sits at a name less rotated than where its inode was last seen.

    Rotation only ever moves a file further (``path`` -> ``.1`` -> ``.2``): an
    inode found back at a newer name was freed and reused by another file.
    """
    if not last_seen_name:
        return False
    return _rank(path, file) > _name_rank(path, last_seen_name)


def poll_head_sizes(known: Sequence[KnownGeneration], fingerprint_size: int = FINGERPRINT_SIZE) -> list[int]:
    """Head sizes worth computing for the file at the path in every poll (saves a NeedHeads round trip)."""
    sizes = {_fingerprint_size(g, fingerprint_size) for g in known if g.open} - {0}
    return sorted(sizes | {fingerprint_size})


def head_of(file: RemoteFile, n: int) -> str | None:
    """``file``'s head over ``n`` bytes, if known (a short file's whole-file md5 answers any n >= size)."""
    if n in file.heads:
        return file.heads[n]
    if not file.compressed and file.size <= n:
        for m, digest in file.heads.items():
            if m >= file.size:
                return digest
    return None


def _fingerprint_size(g: KnownGeneration, fingerprint_size: int) -> int:
    return g.fingerprint_size if g.fingerprint_size is not None else min(fingerprint_size, g.length)


_EMPTY = hashlib.md5(b"").hexdigest()
_NUL_PROBE = 16  # bytes of a file's head checked for NULs after a truncation


def _nul_digest(n: int) -> str:
    return hashlib.md5(b"\0" * n).hexdigest()


# ------------------------------------------------------------------ the planner


def plan(
    snapshot: Snapshot,
    known: Sequence[KnownGeneration],
    *,
    last_poll_time: int | None = None,
    mismatches: Collection[tuple[int, int, int]] = frozenset(),
    quiet: int = QUIET_SECONDS,
    fingerprint_size: int = FINGERPRINT_SIZE,
) -> Plan:
    """What to do for one watched path, given a poll and the known generations (oldest first).

    ``last_poll_time``: ``server_time`` of the last snapshot whose plan was
    carried out (persisted; None before the first).  ``mismatches``: (generation,
    device, inode) whose stream header failed the tail check at the resume offset.
    """
    return _Planner(snapshot, list(known), last_poll_time, frozenset(mismatches), quiet, fingerprint_size).run()


@dataclass
class _Match:
    file: RemoteFile | None  # where the generation's bytes are now (None: nowhere)
    truncated: bool = False  # its inode holds other bytes now
    via_copy: bool = False
    pending: RemoteFile | None = None  # the inode's file, its heads not yet known
    inode_file: RemoteFile | None = None  # the truncated file, when truncated


class _Planner:
    def __init__(
        self,
        snapshot: Snapshot,
        known: list[KnownGeneration],
        last_poll_time: int | None,
        mismatches: frozenset[tuple[int, int, int]],
        quiet: int,
        fingerprint_size: int,
    ) -> None:
        self.snap = snapshot
        self.path = snapshot.path
        self.files = sorted(snapshot.files(), key=lambda f: age_key(self.path, f))
        self.open = [g for g in known if g.open]
        self.finished = [g for g in known if not g.open]
        # (an empty generation has nothing to recognise; its inode may be reused)
        recognisable = [g for g in self.finished if _fingerprint_size(g, fingerprint_size)]
        self.finished_by_identity: dict[tuple[int, int], list[KnownGeneration]] = {}
        self.finished_by_length: dict[int, list[KnownGeneration]] = {}
        for g in recognisable:
            self.finished_by_identity.setdefault((g.device, g.inode), []).append(g)
            self.finished_by_length.setdefault(g.length, []).append(g)
        self.finished_by_fingerprint = {
            g.fingerprint for g in recognisable
            if _fingerprint_size(g, fingerprint_size) == min(fingerprint_size, g.length)
            and g.fingerprint != _nul_digest(_fingerprint_size(g, fingerprint_size))
        }
        self.next_number = max((g.number for g in known), default=0) + 1
        # the newest generation last seen at the path: an older one's inode found there is reused
        self.last_at_path = max((g.number for g in known if g.last_seen_name == self.path), default=0)
        self.last_poll_time = last_poll_time
        self.mismatches = mismatches
        self.quiet = quiet
        self.fs = fingerprint_size
        self.wanted: dict[tuple[str, int], None] = {}
        self.matches: dict[int, _Match] = {}
        self.claimed: set[str] = set()
        self.actions: list[Action] = []
        self.seen: list[Seen] = []

    # --------------------------------------------------------- helpers

    def head(self, file: RemoteFile, n: int) -> str | None:
        digest = head_of(file, n)
        if digest is None:
            self.wanted[(file.name, n)] = None
        return digest

    def n(self, g: KnownGeneration) -> int:
        return _fingerprint_size(g, self.fs)

    def settled(self, f: RemoteFile) -> bool:
        if f.name == self.path:
            return False
        return f.compressed or max(f.mtime, f.ctime) <= self.snap.server_time - self.quiet

    def rejected(self, g: KnownGeneration, f: RemoteFile) -> bool:
        return (g.number, f.device, f.inode) in self.mismatches

    # --------------------------------------------------------- phases

    def run(self) -> Plan:
        # Heads still unknown do not stop the phases: each asks, assuming the
        # worst, for what it could need, so one NeedHeads round is enough.
        for g in self.open:
            self.matches[g.number] = self.match_inode(g)
        self.claimed = {m.file.name for m in self.matches.values() if m.file is not None}
        searching = [g for g in self.open if self.matches[g.number].file is None and not self.skip_copy_search(g)]
        for g in searching:
            for f in self.copy_candidates(g):
                self.head(f, self.n(g) if self.n(g) else self.fs)
        for g in self.open:
            self.hidden_copy(g)  # only to ask for its heads: the answer depends on the claims below
        for g in self.open:
            self.compressed_while_empty(g)  # likewise
        self.request_adoption_heads()
        if self.wanted:
            return self.ask()
        self.claim_copies(searching)
        for g in self.open:
            self.act_on(g)
        for f in self.adoptable():
            self.adopt(f)
        return Plan(tuple(self.actions), tuple(self.seen))

    def ask(self) -> Plan:
        return Plan((NeedHeads(tuple(self.wanted)),))

    def claim_copies(self, searching: list[KnownGeneration]) -> None:
        for g in searching:
            self.claim_copy(g)
        for g in self.open:
            inode_file, copy = self.matches[g.number].file, self.hidden_copy(g)
            if copy is not None and inode_file is not None:
                self.claimed.discard(inode_file.name)  # the truncated file: adopted as a new generation
                self.matches[g.number] = _Match(copy, truncated=True, via_copy=True, inode_file=inode_file)
                self.claimed.add(copy.name)

    def match_inode(self, g: KnownGeneration) -> _Match:
        for f in self.files:
            if (f.device, f.inode) != (g.device, g.inode) or g.inode == 0:
                continue
            if self.reused(g, f):
                continue  # inode reuse: another file, whatever its bytes (an empty generation has none to compare)
            verdict = self.consistent(g, f)
            if verdict is None:
                return _Match(None, pending=f)
            return _Match(f) if verdict else _Match(None, truncated=True, inode_file=f)
        return _Match(None)

    def reused(self, g: KnownGeneration, f: RemoteFile) -> bool:
        """Whether ``g``'s inode, found at ``f``, was freed and reused by another file.

        Rotation only moves a file further: ``f`` cannot be ``g`` if it sits at a
        less rotated name than ``g`` was last seen at, nor at the path once a
        *newer* generation was seen there (``g`` had left it).  The second catches
        an empty generation (no bytes to compare) that vanished while a newer one
        took the path, its inode then reused for the path.  (Only the path: where
        a generation was last seen may be a guess, for an empty one, so ranks
        of rotated names are not compared across generations.)  Nor can a
        ``.gz`` hold the inode of a plain file: gzip writes it while the plain
        file still exists.
        """
        if _moved_back(self.path, f, g.last_seen_name):
            return True
        if f.compressed and g.last_seen_name and not g.last_seen_name.endswith(".gz"):
            return True  # gzip writes a new file while the old one still holds its inode: a .gz never has it
        return f.name == self.path and g.number < self.last_at_path

    def hidden_copy(self, g: KnownGeneration) -> RemoteFile | None:
        """A copytruncate that the inode and fingerprint checks cannot see.

        After a truncation the file may regrow past our offset with the same
        first ``n`` bytes (an empty generation has no fingerprint at all; a
        small one may end inside a common first line).  Evidence: the file
        ``f`` changed since the last poll, and a sibling written since then,
        rotated further than ``f`` (copytruncate leaves the copy behind the
        truncated file) and claimed by nobody, starts with our bytes but not
        with what ``f`` holds now (or is longer than ``f``): ``f`` lost those
        bytes to that copy.  The oldest such sibling is the copy.  A sibling
        that agrees with ``f`` is a backup copy of a file that did not change.
        """
        f = self.matches[g.number].file or self.matches[g.number].pending
        if f is None or self.last_poll_time is None or (f.mtime, f.size) == (g.last_mtime, g.last_size):
            return None
        for c in self.files:
            if c is f or c.name == self.path or c.name in self.claimed or self.rejected(g, c):
                continue
            if c.mtime < max(self.last_poll_time, g.last_mtime or 0) or (not c.compressed and c.size <= g.length):
                continue
            if _rank(self.path, c) >= _rank(self.path, f) or self.is_finished_generation(c):
                continue  # ranked newer than f (an intermediate generation), or already mirrored
            if self.differs_from(g, c, f):
                return c
        return None

    def differs_from(self, g: KnownGeneration, c: RemoteFile, f: RemoteFile) -> bool:
        """Whether ``c`` starts with ``g``'s bytes but not with ``f``'s (None-safe: False while heads are pending)."""
        m = self.fs if c.compressed else min(self.fs, c.size)
        starts, theirs, ours = self.head(c, self.n(g)), self.head(c, m), self.head(f, m)  # all asked at once
        if (self.n(g) and starts != g.fingerprint) or theirs is None or ours is None or theirs == _EMPTY:
            return False
        return (not c.compressed and f.size < c.size) or theirs != ours

    def consistent(self, g: KnownGeneration, f: RemoteFile) -> bool | None:
        if self.rejected(g, f):
            return False
        if not f.compressed and (f.size < g.length or f.size < (g.last_size or 0)):
            return False
        if not self.n(g):
            return True
        head = self.head(f, self.n(g))
        return None if head is None else head == g.fingerprint

    def skip_copy_search(self, g: KnownGeneration) -> bool:
        """A generation without a fingerprint (nothing known of its bytes): only its inode can find it."""
        return not self.n(g) and not self.matches[g.number].truncated

    def copy_candidates(self, g: KnownGeneration) -> list[RemoteFile]:
        return [
            f
            for f in self.files
            if f.name not in self.claimed
            and (f.name != self.path or g.inode == 0)
            and (f.device, f.inode) != (g.device, g.inode)
            and not self.rejected(g, f)
            and (g.last_mtime is None or f.mtime >= g.last_mtime)
            and (f.compressed or f.size >= g.length)
            # A stream still reads a vanished generation's descriptor: only a .gz can
            # hold it (compressed meanwhile); a plain file matching a short fingerprint
            # is some other generation with the same first bytes.
            and (f.compressed or not g.streaming or self.matches[g.number].truncated)
            and not self.is_finished_generation(f)
        ]

    def claim_copy(self, g: KnownGeneration) -> None:
        for f in self.copy_candidates(g):
            if not self.n(g) and self.copy_of_empty(g, f):
                self.matches[g.number] = _Match(f, truncated=True, via_copy=True)
                self.claimed.add(f.name)
                return
            if self.n(g) and g.fingerprint == _nul_digest(self.n(g)) and g.length <= self.n(g):
                # NULs (a writer that kept its offset through a truncation) tell files apart no
                # better, and taking another file for the copy could lose it: the gap is reported
                # and the copy, if it is one, adopted as a new generation.  (A generation with bytes
                # past its fingerprint may take it: the drain checks the bytes before its offset.)
                return
            if self.n(g) and self.head(f, self.n(g)) == g.fingerprint:
                self.matches[g.number] = _Match(f, truncated=self.matches[g.number].truncated, via_copy=True)
                self.claimed.add(f.name)
                return

    def copy_of_empty(self, g: KnownGeneration, c: RemoteFile) -> bool:
        """Whether ``c`` may be the copy of a truncated empty generation: no fingerprint, so by age and place.

        It must hold bytes, be written since the last poll and not before the
        generation was last seen, and be rotated further than the truncated file.
        """
        truncated = self.matches[g.number].inode_file
        if g.last_mtime is None or not self.recent(c) or c.mtime < g.last_mtime:
            return False
        if (c.size == 0) if not c.compressed else head_of(c, self.fs) in (None, _EMPTY):
            return False
        return truncated is None or _rank(self.path, c) < _rank(self.path, truncated)

    # --------------------------------------------------------- adoption

    def request_adoption_heads(self) -> None:
        """Ask, in the same round trip as the copy heads, for what the adoption checks need."""
        for f in self.files:
            if f.name not in self.claimed and f.name != self.path and self.recent(f):
                self.is_finished_generation(f)
                if not f.compressed and f.size:
                    self.head(f, min(self.fs, f.size))  # its fingerprint, recorded at adoption
        current = self.snap.current
        if current and current.name not in self.claimed and current.size:
            self.head(current, min(self.fs, current.size))  # its fingerprint, recorded at adoption
        maybe_truncated = any(m.truncated or m.pending for m in self.matches.values())
        if current and current.size and not current.compressed and maybe_truncated:
            self.head(current, min(_NUL_PROBE, current.size))

    def adoptable(self) -> list[RemoteFile]:
        """Unclaimed files that become new generations, oldest first (the path last)."""
        newest = self.newest_known_file()
        chosen = [f for f in self.files if f.name not in self.claimed and f.name != self.path]
        chosen = [f for f in chosen if self.intermediate(f, newest) and not self.is_finished_generation(f)]
        current = self.snap.current
        return chosen + ([current] if current and current.name not in self.claimed else [])

    def newest_known_file(self) -> RemoteFile | None:
        for g in reversed(self.open):
            if self.matches[g.number].file is not None:
                return self.matches[g.number].file
        return None

    def recent(self, f: RemoteFile) -> bool:
        """Written since the last poll (so not history from before Rill watched)."""
        return self.last_poll_time is not None and f.mtime >= self.last_poll_time

    def intermediate(self, f: RemoteFile, newest: RemoteFile | None) -> bool:
        if not self.recent(f):
            return False
        if newest is None:
            return True
        # By rotation suffix only: a writer that had not reopened may have touched the older file last.
        return newest.name != self.path and _rank(self.path, f) > _rank(self.path, newest)

    def is_finished_generation(self, f: RemoteFile) -> bool:
        """Whether ``f`` holds a generation we already finished (heads requested while unknown).

        Hundreds of finished generations may be known (hosts keep many rotated
        files), so they are looked up, not scanned: a plain file by its inode or
        by its size (a copy we drained), a ``.gz`` by one head over
        ``fingerprint_size`` bytes -- a finished generation shorter than that
        has its whole content as fingerprint, which that head then equals.
        """
        if not self.finished:
            return False
        if f.compressed:
            digest = self.head(f, self.fs)  # gzip keeps the mtime, other compressors may not: the head decides
            return digest is not None and digest in self.finished_by_fingerprint
        for g in self.finished_by_identity.get((f.device, f.inode), []) + self.finished_by_length.get(f.size, []):
            same_inode = (f.device, f.inode) == (g.device, g.inode)
            if not same_inode and g.fingerprint == _nul_digest(self.n(g)):
                continue  # NULs (a writer that kept its offset through a truncation) tell files apart no better
            if self.head(f, self.n(g)) == g.fingerprint:
                return True
        return False

    def adopt(self, f: RemoteFile) -> None:
        number = self.next_number
        self.next_number += 1
        self.actions.append(Adopt(number, f, self.note_for(f)))
        self.seen.append(Seen.of(number, f, self.server_head(f, 0)))
        self.read(number, f, 0, streaming=False, idle=None)

    def server_head(self, f: RemoteFile, known: int) -> tuple[int, str] | None:
        """``f``'s fingerprint as the poll hashed it, if it covers more than ``known`` bytes.

        Only a head over exactly min(FINGERPRINT_SIZE, size) bytes, hashed by the
        poll itself, is taken (never the whole-file shortcut of :func:`head_of`:
        the file may have grown between the stat and a later hash).
        """
        n = min(self.fs, f.size)
        if f.compressed or n <= known or n not in f.heads:
            return None
        return n, f.heads[n]

    def note_for(self, f: RemoteFile) -> str:
        if f.compressed or not f.size or not any(m.truncated for m in self.matches.values()):
            return ""
        n = min(_NUL_PROBE, f.size)
        if head_of(f, n) == _nul_digest(n):
            return "starts with NUL bytes: a writer kept its offset through a truncation; mirrored as the server has it"
        return ""

    # --------------------------------------------------------- actions for a known generation

    def act_on(self, g: KnownGeneration) -> None:
        match = self.matches[g.number]
        if match.file is None:
            self.lost(g, match)
            return
        by_inode = not (match.via_copy or match.truncated)
        self.seen.append(Seen.of(g.number, match.file, self.server_head(match.file, self.n(g)) if by_inode else None))
        if g.streaming and match.via_copy and not match.truncated:
            self.finish_when_idle(g)  # compressed meanwhile: the stream reads the original descriptor
            return
        if match.truncated:
            self.drain_copy(g, match.file)
            return
        self.read(g.number, match.file, g.length, streaming=g.streaming and not match.via_copy, idle=g.stream_idle)

    def read(self, number: int, f: RemoteFile, offset: int, streaming: bool, idle: float | None) -> None:
        """Drain / Finish for a generation whose bytes are in ``f``."""
        if streaming:
            done = f.compressed or f.size <= offset
            if f.name != self.path and self.settled(f) and done and (idle or 0) >= self.quiet:
                self.actions.append(Finish(number, complete=True))
            return
        if f.name == self.path:
            self.actions.append(Drain(number, f, offset, follow=True))
            return
        if f.compressed or f.size > offset:
            self.actions.append(Drain(number, f, offset, follow=False))
        if self.settled(f):
            self.actions.append(Finish(number, complete=True))

    def drain_copy(self, g: KnownGeneration, copy: RemoteFile) -> None:
        """copytruncate: the rest of ``g`` is in ``copy``, which nobody appends to.

        The Drain replaces any stream still on the truncated file.
        """
        if copy.compressed or copy.size >= g.length:  # (even with nothing left: the tap cuts the mirror back to g.length)
            self.actions.append(Drain(g.number, copy, g.length, follow=False))
        window = not copy.compressed and g.last_size is not None and g.last_size > copy.size
        if window:
            self.actions.append(
                Gap(g.number, copy.size, g.last_size - copy.size,  # type: ignore[operator]
                    "copytruncate: the file was bigger than its copy: "
                    "bytes written between the copy and the truncation are lost")
            )
        self.actions.append(Finish(g.number, complete=not window))

    def finish_when_idle(self, g: KnownGeneration) -> None:
        # (not while it holds less than a poll saw: a slow stream still has bytes to deliver)
        if (g.stream_idle or 0) >= self.quiet and g.length >= (g.last_size or 0):
            self.actions.append(Finish(g.number, complete=True))

    def compressed_while_empty(self, g: KnownGeneration) -> RemoteFile | None:
        """An empty generation whose inode vanished (gzip makes a new inode): the ``.gz`` it became.

        The oldest unclaimed ``.gz`` written not before the generation was last
        seen that holds no finished generation: the bytes it got while we were
        away and the compression, or nothing if it was compressed still empty.
        """
        match = self.matches.get(g.number)
        if self.n(g) or g.last_mtime is None or match is None or match.file is not None:
            return None
        if match.truncated or match.pending is not None:
            return None
        for f in self.files:
            if not f.compressed or f.name in self.claimed or f.mtime < g.last_mtime:
                continue
            if self.is_finished_generation(f) or self.head(f, self.fs) is None:
                continue
            return f
        return None

    def lost(self, g: KnownGeneration, match: _Match) -> None:
        if g.streaming and not match.truncated:
            self.finish_when_idle(g)  # deleted while open: the stream drains the descriptor
            return
        compressed = self.compressed_while_empty(g)
        if compressed is not None:
            self.claimed.add(compressed.name)
            self.seen.append(Seen.of(g.number, compressed))
            if head_of(compressed, self.fs) != _EMPTY:
                self.actions.append(Drain(g.number, compressed, 0, follow=False))
            self.actions.append(Finish(g.number, complete=True))
            return
        missing = g.last_size - g.length if g.last_size and g.last_size > g.length else None
        why = "truncated or rewritten in place, and no copy found" if match.truncated else "deleted while not connected"
        self.actions.append(Gap(g.number, g.length, missing, why))
        self.actions.append(Finish(g.number, complete=False))
