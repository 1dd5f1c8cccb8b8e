"""One watched path on one host: its generations, read into the mirror.

Every poll of the host's watch channel brings a :class:`rill.rotation.Snapshot`
of the path and its rotated siblings; :func:`rill.rotation.plan` says what to
do (drain a generation from wherever its bytes are now, adopt a new one,
record a gap, finish one) and :class:`FileTap` carries the plan out, action
after action, with one :class:`StreamChannel` per generation being read.

States (:class:`FileTapState`), for status:

* ``WAITING``   -- no usable connection to the host yet (or no poll since);
* ``CATCHING_UP`` -- reading generations that rotated away, or a large backlog;
* ``STREAMING`` -- following the file at the path;
* ``MISSING``   -- nothing at the path (yet); nothing is lost while we wait;
* ``STOPPED``   -- the service stopped.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from rill import remote
from rill.channels import ChannelOpenFailed, ExecChannel
from rill.generations import tail_check
from rill.remote import CHECK_SIZE
from rill.rotation import (
    OPEN_STATES, Adopt, Drain, Finish, Gap, KnownGeneration, NeedHeads, Plan, RemoteFile, Seen, Snapshot, plan,
)
from rill.store.mirror import FINGERPRINT_SIZE, MirroredFile, fingerprint_of
from rill.watch import heads_command, parse_heads_with_identity

log = Logger()

#: Finished generations passed to the planner (the newest ones), so that their rotated copies and
#: .gz files are recognised, not taken for another generation's: a host that keeps hundreds of
#: rotated files needs hundreds (a soak keeping every file took an old .gz for a vanished one).
FINISHED_KEPT = 1000


class PlanAborted(Exception):
    """Carrying out a plan stopped: a drain did not run to its end (disconnect, tail-check mismatch)."""


class FileTapState(enum.Enum):
    WAITING = "waiting for connection"
    CATCHING_UP = "catching up"
    STREAMING = "streaming"
    MISSING = "file missing"
    STOPPED = "stopped"


class CommandChannel(ExecChannel):
    """An exec channel whose whole output is returned when it closes."""

    def __init__(self, command: str) -> None:
        super().__init__(command)
        self.output = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.output += data

    def closed(self) -> None:
        self.conn.channel_closed()
        tap = getattr(self, "host_tap", None)
        if tap is not None:
            tap.channel_closed(self)
        if not self.done.called:
            self.done.callback(self.output)


#: Polls in a row skipped as older than a running stream before one is planned anyway.
STALE_POLLS_SKIPPED = 5
#: Seconds, beyond one watch interval, that polls are not planned on after a stream reported a truncation.
TRUNCATION_SETTLE = 1.0


class StreamChannel(ExecChannel):
    """Reads one generation from one server file, from an offset, into the mirror."""

    def __init__(
        self, tap: FileTap, generation: int, source: RemoteFile, offset: int, follow: bool,
        head: tuple[int, str] | None = None,
    ) -> None:
        # ``head``: the server's fingerprint of a generation the mirror holds less
        # of; the header then checks the file still starts with it.
        self.head = head if head is not None and head[0] > offset else None
        size = self.head[0] if self.head else 0
        if source.compressed:
            command = remote.gzip_stream_command(source.name, offset, head=size)
        else:
            command = remote.stream_command(source.name, offset, follow=follow, head=size)
        # A 2 MiB window: Conch's 128 KiB default halves throughput (FIELD-NOTES).
        super().__init__(command, window=2**21)
        self.tap = tap
        self.generation = generation
        self.source = source
        self.offset = offset
        self.follow = follow
        self._header: bytearray | None = bytearray()
        self._carry = b""
        self.stopped_for_truncation = False
        self.accepted = False
        self.exit_status: int | None = None
        self.last_data = tap.clock.seconds()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.stopped:
            return
        if self._header is not None:
            self._header += data
            end = self._header.find(b"\n")
            if end < 0:
                if len(self._header) > 4096:
                    self.stop()
                return
            line, data = bytes(self._header[:end]), bytes(self._header[end + 1 :])
            self._header = None
            self.accepted = self.tap.header_received(self, line)
            if not self.accepted:
                self.stop()
                return
        data = self._watch_for_truncation(data)
        if data:
            self.last_data = self.tap.clock.seconds()
            self.offset = self.tap.data_received(self, data)
        if self.stopped_for_truncation:
            self.stop()

    def extReceived(self, dataType: int, data: bytes) -> None:
        """stderr: the follower's heartbeat dots (dropped); anything else is logged."""
        rest = data.replace(b".", b"").strip()
        if rest:
            log.debug("{tap}: generation {generation}: the stream said {text!r}", tap=self.tap.label,
                      generation=self.generation, text=rest[:200])

    def _watch_for_truncation(self, data: bytes) -> bytes:
        """Pass on the bytes before GNU tail's in-band truncation notice, and stop there.

        A line start that could be the beginning of the notice is held back until
        the next chunk.  The same text at the same offset a second time is file content
        (the planner found no truncation), and goes through.
        """
        if not self.follow:
            return data
        data, self._carry = self._carry + data, b""
        at = data.find(remote.TRUNCATED)
        if at >= 0 and (self.generation, self.offset + at) not in self.tap.truncation_notices:
            self.tap.truncation_notices.add((self.generation, self.offset + at))
            self.tap.truncated(self, self.offset + at)
            self.stopped_for_truncation = True
            return data[:at]
        # Hold back only a possible notice at the start of a line: log lines end in
        # newlines, and holding "t" of a partial line would stall it.
        line_start = data.rfind(b"\n") + 1
        tail = data[line_start:]
        if tail and len(tail) < len(remote.TRUNCATED) and remote.TRUNCATED.startswith(tail):
            self._carry = tail
            return data[:line_start]
        return data

    def request_exit_status(self, data: bytes) -> int:
        self.exit_status = int.from_bytes(data[:4], "big")
        return 1

    @property
    def complete(self) -> bool:
        """Whether the stream ran to the end of its file: header accepted, command exited 0, never stopped."""
        return self.accepted and not self.stopped and self.exit_status == 0

    def closed(self) -> None:
        self.conn.channel_closed()
        self.tap.channel_closed(self)
        if not self.ended.called:
            self.ended.callback(None)


class FileTap:
    """Mirrors one path on one host, generation after generation, as the planner says."""

    def __init__(
        self,
        host_tap: Any,
        mirrored: MirroredFile,
        watch_interval: float,
        on_append: Callable[..., None],
    ) -> None:
        self.host_tap = host_tap
        self.mirrored = mirrored
        self.path = mirrored.path
        self.label = f"{host_tap.host.name}:{mirrored.path}"
        self.clock = host_tap.reactor
        self.watch_interval = watch_interval
        self.on_append = on_append
        self.state = FileTapState.WAITING
        self.readers: dict[int, StreamChannel] = {}
        self.mismatches: set[tuple[int, int, int]] = set()
        self.remote_size = 0
        self.stats = {"bytes": 0, "streams": 0, "generations_started": 0, "gaps": 0}
        self.caught_up_at = self.clock.seconds()
        self.truncation_notices: set[tuple[int, int]] = set()
        self._safe_lengths: dict[int, int] = {}
        self._arrival_lengths: dict[int, int] = {}
        self._busy = False
        self._stale_polls = 0
        self._truncation_noticed: float | None = None
        self._finished: dict[int, tuple[int, str]] = {}  # see _finished_identity
        self._gz_heads: dict[tuple[str, int, int, int, int, int], dict[int, str]] = {}  # see _with_cached_heads
        self._planned_on: list[KnownGeneration] = []  # what the last plan was made from (for the debug log)
        self._stopped = False
        self._epoch = 0  # bumped on every disconnect: a plan made before it is stale

    # ------------------------------------------------------------ status

    @property
    def generation(self) -> int:
        current = self.mirrored.current()
        return current.number if current else 0

    @property
    def offset(self) -> int:
        return self.mirrored.length(self.generation) if self.generation else 0

    def status(self) -> dict[str, Any]:
        lag = max(self.remote_size - self.offset, 0)
        return {
            "host": self.host_tap.host.name,
            "path": self.path,
            "state": self.state.value,
            "generation": self.generation,
            "offset": self.offset,
            "remote_size": self.remote_size,
            "lag_bytes": lag,
            "lag_seconds": round(self.clock.seconds() - self.caught_up_at, 3) if lag else 0.0,
            **self.stats,
        }

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        pass  # everything happens on polls of the host's watch channel

    def stop(self) -> None:
        self._stopped = True
        self.state = FileTapState.STOPPED
        for reader in list(self.readers.values()):
            reader.stop()
        self.mirrored.close()

    def disconnected(self) -> None:
        """The connection carrying our channels is gone: they are closed already or will be."""
        self._epoch += 1
        for reader in list(self.readers.values()):
            reader.stopped = True  # a reader of a dead connection must never write again
        self.readers.clear()
        if not self._stopped:
            self.state = FileTapState.WAITING

    # ------------------------------------------------------------ planning

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """A poll arrived; plan and act unless the previous plan is still being carried out."""
        # The stream may deliver bytes written after this poll's stat: only the bytes
        # we held when the *previous* poll arrived are sure to predate the stat, so
        # those are what the planner compares sizes and heads with.
        lengths = {g.number: self.mirrored.length(g.number) for g in self.mirrored.generations() if g.state in OPEN_STATES}
        self._safe_lengths, self._arrival_lengths = self._arrival_lengths, lengths
        if self._busy or self._stopped or self._stale(snapshot):
            return
        self._busy = True
        d = self._plan_and_act(snapshot)
        d.addErrback(lambda f: log.failure("{tap}: acting on a poll failed", f, tap=self.label))
        d.addBoth(self._idle)

    def _stale(self, snapshot: Snapshot) -> bool:
        """Whether a running stream already holds more of a file than this poll saw.

        The poll then predates bytes we hold (polls queue up on a busy client,
        and a stream on another connection is not ordered with the watch), and
        planning on it would take the file for truncated.  A real truncation
        under a running stream is reported by the stream itself (it stops), so
        skipping such a poll costs one interval; a few in a row are planned anyway.
        """
        noticed = self._truncation_noticed
        if noticed is not None and self.clock.seconds() - noticed < self.watch_interval + TRUNCATION_SETTLE:
            # A stream just reported a truncation: a poll taken before it (still in
            # flight) shows neither the truncation nor copytruncate's copy, and would
            # make the generation a gap.  Plan on a poll taken after it.
            return True
        for f in snapshot.files():
            for number, reader in self.readers.items():
                if reader.stopped or f.compressed or (reader.source.device, reader.source.inode) != (f.device, f.inode):
                    continue
                if f.size < self._safe_lengths.get(number, 0) and self._stale_polls < STALE_POLLS_SKIPPED:
                    self._stale_polls += 1
                    log.debug("{tap}: poll older than generation {generation}'s stream; waiting for the next",
                              tap=self.label, generation=number)
                    return True
        self._stale_polls = 0
        return False

    def _idle(self, _: object) -> None:
        self._busy = False

    def known(self) -> list[KnownGeneration]:
        now = self.clock.seconds()
        known = []
        generations = self.mirrored.generations()
        finished = [g.number for g in generations if g.state not in OPEN_STATES]
        kept = set(finished[-FINISHED_KEPT:])
        for g in generations:
            reader = self.readers.get(g.number)
            if g.state not in OPEN_STATES:
                if g.number not in kept:
                    continue
                length, fingerprint = self._finished_identity(g.number)
            else:
                length = self.mirrored.length(g.number)
                if reader is not None:
                    length = min(length, self._safe_lengths.get(g.number, 0))
                fingerprint = _head_md5(self.mirrored, g.number, length)
            size = min(FINGERPRINT_SIZE, length)
            if g.head_size > size and g.head_md5:
                size, fingerprint = g.head_size, g.head_md5  # the server's head, ahead of the mirror
            idle = now - reader.last_data if reader is not None and reader.accepted else None
            known.append(
                KnownGeneration(g.number, g.device, g.inode, fingerprint, length, g.state, g.name, g.last_size,
                                g.last_mtime, idle, fingerprint_size=size)
            )
        return known

    def _finished_identity(self, number: int) -> tuple[int, str]:
        """(length, md5 of the first bytes) of a finished generation.

        Its mirror never changes again, so both are read once: hundreds of
        finished generations are planned on at every poll.
        """
        if number not in self._finished:
            length = self.mirrored.length(number)
            self._finished[number] = (length, _head_md5(self.mirrored, number, length))
        return self._finished[number]

    def _drop_foreign_bytes(self) -> None:
        """Cut back an open generation whose mirror does not start with the head the server showed for it.

        A file truncated and rewritten between a poll and its stream's first
        read (the stream starts at 0: no bytes to check before it) hands the
        stream the next generation's bytes.  The server's head, recorded at
        the poll, tells them apart; the planner then finds the generation's
        bytes (a copytruncate copy) or reports the gap, and the new bytes are
        adopted as the generation they are.
        """
        for g in self.mirrored.generations():
            if g.state not in ("live", "draining") or not g.head_md5 or self.mirrored.length(g.number) < g.head_size:
                continue
            if fingerprint_of(self.mirrored.head(g.number)[: g.head_size]) == g.head_md5:
                continue
            reader = self.readers.pop(g.number, None)
            if reader is not None:
                reader.stop()
            log.warn("{tap}: generation {generation}: the bytes read do not start as the file did at the last poll "
                     "(truncated and rewritten before they were read); reading it again", tap=self.label,
                     generation=g.number)
            self.mirrored.truncate(g.number, 0)

    @defer.inlineCallbacks
    def _plan_and_act(self, snapshot: Snapshot) -> Any:
        epoch = self._epoch
        started = self.clock.seconds()
        self._drop_foreign_bytes()
        snapshot = self._with_cached_heads(snapshot)
        result = self._plan(snapshot)
        if result.need_heads is not None:
            try:
                heads = yield self._fetch_heads(result.need_heads, snapshot)
            except ChannelOpenFailed as e:
                log.info("{tap}: could not fetch heads ({why}); the next poll plans again", tap=self.label, why=e)
                return
            if epoch != self._epoch or self._stopped:
                return
            if self._truncation_noticed is not None and self._truncation_noticed >= started:
                return  # a stream reported a truncation meanwhile: this poll predates it
            snapshot = _with_heads(snapshot, heads)
            self._cache_heads(snapshot)
            result = self._plan(snapshot)
            if result.need_heads is not None:
                return  # the files changed under us; the next poll tries again
        if snapshot.current is not None:
            self.remote_size = snapshot.current.size
        if result.actions:
            log.debug("{tap}: plan {actions} for {snapshot}, known {known}, last poll {last_poll}", tap=self.label,
                      actions=result.actions, snapshot=snapshot, known=self._planned_on, last_poll=self.mirrored.last_poll_time)
        # Where each known generation's bytes are now is recorded before acting (a
        # plan cut short by a disconnect or a SIGKILL must not leave a generation
        # with its old identity); a new generation's at its Adopt.
        adopted = {a.generation for a in result.actions if isinstance(a, Adopt)}
        seen_of = {seen.generation: seen for seen in result.seen}
        for seen in result.seen:
            if seen.generation not in adopted:
                self._record_seen(seen)
        self.mirrored.save()
        try:
            for action in result.actions:
                if self._stopped or epoch != self._epoch:
                    raise PlanAborted("the connection was lost")
                yield self._act(action, seen_of)
                if epoch != self._epoch:
                    raise PlanAborted("the connection was lost")
        except PlanAborted as e:
            log.info("{tap}: stopped carrying out the plan ({why}); the next poll plans again", tap=self.label, why=e)
            self.mirrored.save()
            return
        self.mirrored.last_poll_time = snapshot.server_time
        self.mirrored.save()
        self._update_state(snapshot)

    def _with_cached_heads(self, snapshot: Snapshot) -> Snapshot:
        """The poll, with the heads already fetched for its ``.gz`` files.

        A ``.gz`` is written once: under the same name, identity, size and times
        its content is the same, and decompressing hundreds of them at every poll
        (a host keeping many) would cost the target more than the logs do.
        """
        keys = {_gz_key(f) for f in snapshot.files() if f.compressed}
        self._gz_heads = {key: heads for key, heads in self._gz_heads.items() if key in keys}
        known = {key[0]: heads for key, heads in self._gz_heads.items()}
        return _with_heads(snapshot, known) if known else snapshot

    def _cache_heads(self, snapshot: Snapshot) -> None:
        for f in snapshot.files():
            if f.compressed and f.heads:
                self._gz_heads[_gz_key(f)] = dict(f.heads)

    def _record_seen(self, seen: Seen) -> None:
        self.mirrored.record_seen(seen.generation, seen.name, seen.device, seen.inode, seen.size, seen.mtime, seen.head)

    def _plan(self, snapshot: Snapshot) -> Plan:
        self._planned_on = self.known()
        return plan(snapshot, self._planned_on, last_poll_time=self.mirrored.last_poll_time, mismatches=self.mismatches)

    def _fetch_heads(self, need: NeedHeads, snapshot: Snapshot) -> defer.Deferred[dict[str, dict[int, str]]]:
        channel = CommandChannel(heads_command(_bounded_requests(need.requests, snapshot)))
        channel.host_tap = self.host_tap
        d = self.host_tap.open_channel(channel)
        d.addCallback(lambda _: channel.done)
        d.addCallback(lambda output: _matching_heads(snapshot, need.requests, parse_heads_with_identity(output)))
        return d

    def _act(self, action: Any, seen_of: dict[int, Seen] | None = None) -> defer.Deferred[None] | None:
        if isinstance(action, Gap):
            gap = self.mirrored.record_gap(action.generation, action.offset, action.missing, action.reason)
            self.stats["gaps"] += 1
            log.warn(
                "{tap}: generation {generation}: {missing} bytes after byte {offset} cannot be recovered ({reason})",
                tap=self.label, generation=gap.generation, offset=gap.offset,
                missing="an unknown number of" if gap.missing is None else gap.missing, reason=gap.reason,
            )
        elif isinstance(action, Finish):
            reader = self.readers.pop(action.generation, None)
            if reader is not None:
                reader.stop()
            self.mirrored.finish(action.generation, action.complete)
            self.on_append(self.mirrored, 0)  # the follower may move on to the next generation
            log.info("{tap}: generation {generation} finished", tap=self.label, generation=action.generation)
        elif isinstance(action, Adopt):
            record = self.mirrored.new_generation(action.source.device, action.source.inode, action.source.name)
            if record.number != action.generation:
                log.warn("{tap}: store numbered generation {n}, planner expected {m}", tap=self.label, n=record.number, m=action.generation)
                raise PlanAborted("the store and the plan disagree on generation numbers")
            seen = (seen_of or {}).get(action.generation)
            if seen is not None:
                self._record_seen(seen)
                self.mirrored.save()
            self.stats["generations_started"] += 1
            log.info("{tap}: generation {generation} starts: {name}{note}", tap=self.label, generation=record.number,
                     name=action.source.name, note=f" ({action.note})" if action.note else "")
        elif isinstance(action, Drain):
            return self._drain(action)
        return None

    def _drain(self, action: Drain) -> defer.Deferred[None] | None:
        running = self.readers.get(action.generation)
        same = running is not None and (running.source.device, running.source.inode) == (action.source.device, action.source.inode)
        if same and running.follow == action.follow and not running.stopped:
            return None  # already reading it from there
        if running is not None:
            running.stop()
        if self.mirrored.generation(action.generation).state == "live" and action.source.name != self.path:
            self.mirrored.set_state(action.generation, "draining")
        # The planner's offset is the length it trusts: a stream may have appended,
        # after the poll, bytes of a file truncated and regrown past its offset (a
        # tail that did not notice the truncation).  Cut back to it and read on:
        # writes are keyed by offset, so nothing is mirrored twice.
        offset = min(action.offset, self.mirrored.length(action.generation))
        if offset < self.mirrored.length(action.generation):
            log.info("{tap}: generation {generation}: re-reading from byte {offset}", tap=self.label,
                     generation=action.generation, offset=offset)
            self.mirrored.truncate(action.generation, offset)
        record = self.mirrored.generation(action.generation)
        head = (record.head_size, record.head_md5) if record.head_md5 else None
        reader = StreamChannel(self, action.generation, action.source, offset, action.follow, head)
        self.readers[action.generation] = reader
        self.stats["streams"] += 1
        self.host_tap.open_channel(reader).addErrback(lambda f: self._reader_failed(reader, f))
        if action.follow:
            return None
        # A plain drain runs to the end before the next action; one cut short (a
        # disconnect, a tail-check mismatch, the file gone) stops the plan: what
        # follows it (a Finish) would lose the bytes it did not read.
        def check(_: object) -> None:
            if not reader.complete:
                raise PlanAborted(f"generation {action.generation}: the drain from {action.source.name} did not finish")

        return reader.ended.addCallback(check)

    def _reader_failed(self, reader: StreamChannel, failure: Failure) -> None:
        if self.readers.get(reader.generation) is reader:
            del self.readers[reader.generation]
        if not reader.ended.called:
            reader.ended.callback(None)

    # ------------------------------------------------------------ streams

    def header_received(self, reader: StreamChannel, line: bytes) -> bool:
        """The stream's first line: is it still the file the planner meant, holding our bytes?"""
        try:
            header = remote.parse_header(line)
        except remote.HeaderError as e:
            log.warn("{tap}: {error}", tap=self.label, error=e)
            return False
        if header is None or (header.device, header.inode) != (reader.source.device, reader.source.inode):
            return False  # moved or gone since the poll: the next poll re-plans
        if reader.head is not None:
            local = reader.head[1]
        else:
            local = tail_check(self.mirrored.read(reader.generation, max(reader.offset - CHECK_SIZE, 0), min(reader.offset, CHECK_SIZE)))
        if header.check != local:
            self.mismatches.add((reader.generation, header.device, header.inode))
            log.warn("{tap}: generation {generation}: the bytes before offset {offset} differ on the server",
                     tap=self.label, generation=reader.generation, offset=reader.offset)
            return False
        if reader.offset or self.stats["streams"] > 1:
            log.info("{tap}: reading generation {generation} from {name} at byte {offset}",
                     tap=self.label, generation=reader.generation, name=reader.source.name, offset=reader.offset)
        return True

    def data_received(self, reader: StreamChannel, data: bytes) -> int:
        if self.readers.get(reader.generation) is not reader:
            reader.stop()
            return reader.offset
        end = self.mirrored.append(reader.generation, reader.offset, data, time.time())
        self.stats["bytes"] += len(data)
        if reader.generation == self.generation:
            self.remote_size = max(self.remote_size, end)
            if end >= self.remote_size:
                self.caught_up_at = self.clock.seconds()
        self.on_append(self.mirrored, self.remote_size, reader.generation)
        return end

    def truncated(self, reader: StreamChannel, offset: int) -> None:
        self._truncation_noticed = self.clock.seconds()
        log.info("{tap}: generation {generation} was truncated on the server after byte {offset}",
                 tap=self.label, generation=reader.generation, offset=offset)

    def channel_closed(self, reader: StreamChannel) -> None:
        self.host_tap.channel_closed(reader)
        if self.readers.get(reader.generation) is reader:
            del self.readers[reader.generation]

    def _update_state(self, snapshot: Snapshot) -> None:
        if self._stopped:
            return
        if snapshot.current is None and not self.readers:
            self.state = FileTapState.MISSING
        elif any(g.state == "draining" for g in self.mirrored.generations()) or self.remote_size - self.offset > 1 << 20:
            self.state = FileTapState.CATCHING_UP
        elif self.readers:
            self.state = FileTapState.STREAMING
        else:
            self.state = FileTapState.WAITING


def _bounded_requests(requests: tuple[tuple[str, int], ...], snapshot: Snapshot) -> list[tuple[str, int]]:
    """Hash at most the bytes the poll saw: a plain file's head over n >= its polled size is its whole (polled) content.

    Plain files come first: a heads command carries a bounded list, and the
    ``.gz`` heads left out are asked for at the next poll (the tap keeps those it got).
    """
    sizes = {f.name: f.size for f in snapshot.files() if not f.compressed}
    bounded = [(name, min(n, sizes[name]) if name in sizes else n) for name, n in requests]
    return sorted(bounded, key=lambda request: request[0].endswith(".gz"))


def _matching_heads(
    snapshot: Snapshot,
    requests: tuple[tuple[str, int], ...],
    answers: dict[str, tuple[tuple[int, int] | None, dict[int, str]]],
) -> dict[str, dict[int, str]]:
    """The heads that were hashed from the very file the poll saw (same device and inode), under the n asked."""
    files = {f.name: f for f in snapshot.files()}
    heads: dict[str, dict[int, str]] = {}
    for name, n in requests:
        f, answer = files.get(name), answers.get(name)
        if f is None or answer is None or answer[0] != (f.device, f.inode):
            continue  # rotated (or gone) between the poll and the hashing
        hashed = n if f.compressed else min(n, f.size)
        if hashed in answer[1]:
            heads.setdefault(name, {})[n] = answer[1][hashed]
    return heads


def _head_md5(mirrored: MirroredFile, number: int, length: int) -> str:
    """md5 of the first min(FINGERPRINT_SIZE, ``length``) mirrored bytes ("" for none)."""
    return fingerprint_of(mirrored.head(number)[: min(FINGERPRINT_SIZE, length)]) if length else ""


def _gz_key(f: RemoteFile) -> tuple[str, int, int, int, int, int]:
    return (f.name, f.device, f.inode, f.size, f.mtime, f.ctime)


def _with_heads(snapshot: Snapshot, heads: dict[str, dict[int, str]]) -> Snapshot:
    def add(f: RemoteFile | None) -> RemoteFile | None:
        if f is None or f.name not in heads:
            return f
        return RemoteFile(f.name, f.device, f.inode, f.size, f.mtime, heads={**f.heads, **heads[f.name]}, ctime=f.ctime)

    return Snapshot(snapshot.path, add(snapshot.current), tuple(add(s) for s in snapshot.siblings), snapshot.server_time)


__all__ = ["FileTap", "FileTapState", "FINGERPRINT_SIZE"]
