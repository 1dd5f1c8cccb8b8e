"""The byte-exact mirror: one append-only file per generation of a watched file.

Layout under ``data_dir/mirror/<host>/<quote(path)>/``:

* ``checkpoint.json`` -- the generations, oldest first, with their identity
  (device, inode, fingerprint) and state; written temp -> fsync -> rename.
* ``g000001.log`` -- generation 1's bytes exactly as the server has them.  Its
  length *is* the resume offset: nothing else records how far we got, so the
  two can never disagree after a crash.
* ``g000001.times`` -- ``<Qd`` records (end offset, receipt time) appended with
  the bytes, so the receipt time of any byte can be recovered later (the
  ``raw`` parser's datetime, the index's time column).
* ``gaps.jsonl`` -- one JSON object per byte range that could not be mirrored
  (a generation deleted while Rill was away): never silent.

Writes are keyed by offset: ``append(number, offset, data)`` truncates the
mirror to ``offset`` first, so replaying bytes can never duplicate them.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import asdict, dataclass, replace
from urllib.parse import quote, unquote

from rill.store.atomic import write_atomically

FINGERPRINT_SIZE = 1024
_TIMES = struct.Struct("<Qd")


@dataclass(frozen=True)
class GenerationRecord:
    """One generation of a watched path: the file behind one (device, inode)."""

    number: int
    device: int
    inode: int
    fingerprint: str = ""
    state: str = "live"  # live | draining | drained | gone
    name: str = ""  # where it was last seen on the server (it moves: app.log -> app.log.1 -> .gz)
    last_size: int | None = None
    last_mtime: int | None = None
    # The server's fingerprint (md5 of its first head_size bytes), when the poll
    # saw more of the file than the mirror held: what identifies a generation
    # whose stream has not delivered its first bytes yet.
    head_size: int = 0
    head_md5: str = ""


@dataclass(frozen=True)
class Gap:
    generation: int
    offset: int
    missing: int | None  # bytes known missing; None when unknown
    reason: str
    datetime: str


def fingerprint_of(head: bytes) -> str:
    """The identity fingerprint: md5 of the first FINGERPRINT_SIZE bytes (fewer while the file is small)."""
    return hashlib.md5(head[:FINGERPRINT_SIZE]).hexdigest()


class MirroredFile:
    """The mirror of one watched path on one host."""

    def __init__(self, directory: str, host: str, path: str, tap: str = "") -> None:
        self.directory = directory
        self.host = host
        self.path = path
        self.tap = tap
        self._generations: list[GenerationRecord] = []
        self.last_poll_time: int | None = None  # the server time of the last poll acted on
        self._handles: dict[int, object] = {}
        self._times: dict[int, object] = {}
        self._load()

    # -------------------------------------------------------------- reading

    def generations(self) -> list[GenerationRecord]:
        return list(self._generations)

    def current(self) -> GenerationRecord | None:
        return self._generations[-1] if self._generations else None

    def generation(self, number: int) -> GenerationRecord:
        for record in self._generations:
            if record.number == number:
                return record
        raise KeyError(f"{self.host}:{self.path} has no generation {number}")

    def mirror_path(self, number: int) -> str:
        return os.path.join(self.directory, f"g{number:06d}.log")

    def _times_path(self, number: int) -> str:
        return os.path.join(self.directory, f"g{number:06d}.times")

    def length(self, number: int) -> int:
        try:
            return os.path.getsize(self.mirror_path(number))
        except FileNotFoundError:
            return 0

    def read(self, number: int, offset: int = 0, size: int = -1) -> bytes:
        try:
            with open(self.mirror_path(number), "rb") as f:
                f.seek(offset)
                return f.read(size)
        except FileNotFoundError:
            return b""

    def head(self, number: int) -> bytes:
        return self.read(number, 0, FINGERPRINT_SIZE)

    def fingerprint(self, number: int) -> str:
        """md5 of the first min(FINGERPRINT_SIZE, length) mirrored bytes of generation ``number``."""
        return fingerprint_of(self.head(number))

    def receipt_time(self, number: int, offset: int) -> float:
        """When the byte at ``offset`` of generation ``number`` arrived (unix time)."""
        try:
            with open(self._times_path(number), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return os.path.getmtime(self.mirror_path(number)) if self.length(number) else time.time()
        last = 0.0
        for end, received in _TIMES.iter_unpack(data[: len(data) - len(data) % _TIMES.size]):
            last = received
            if end > offset:
                return received
        return last

    def gaps(self) -> list[Gap]:
        try:
            with open(os.path.join(self.directory, "gaps.jsonl"), encoding="utf-8") as f:
                return [Gap(**json.loads(line)) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    # -------------------------------------------------------------- writing

    def new_generation(self, device: int, inode: int, name: str = "") -> GenerationRecord:
        """Start the next generation (the checkpoint is durable before any byte is written)."""
        number = self._generations[-1].number + 1 if self._generations else 1
        record = GenerationRecord(number, device, inode, name=name)
        self._generations.append(record)
        self.save()
        return record

    def set_state(self, number: int, state: str) -> None:
        self._replace(number, state=state)
        self.save()

    def set_identity(self, number: int, device: int, inode: int) -> None:
        self._replace(number, device=device, inode=inode)
        self.save()

    def forget_generation(self, number: int) -> None:
        """Retention removed generation ``number``'s files: drop it from the checkpoint too.

        The live (newest) generation is never forgotten."""
        if self._generations and self._generations[-1].number == number:
            return
        self._close(number)
        self._generations = [g for g in self._generations if g.number != number]
        self.save()

    def record_seen(
        self, number: int, name: str, device: int, inode: int, size: int | None, mtime: int,
        head: tuple[int, str] | None = None,
    ) -> None:
        """Where the planner saw a generation's bytes (saved with the next :meth:`save`), and its head if given."""
        extra = {"head_size": head[0], "head_md5": head[1]} if head else {}
        self._replace(number, name=name, device=device, inode=inode, last_size=size, last_mtime=mtime, **extra)

    def finish(self, number: int, complete: bool) -> None:
        self._close(number)
        self._replace(number, state="drained" if complete else "gone")
        self.save()

    def _replace(self, number: int, **changes: object) -> None:
        self._generations = [
            replace(g, **changes) if g.number == number else g for g in self._generations  # type: ignore[arg-type]
        ]

    def append(self, number: int, offset: int, data: bytes, received: float) -> int:
        """Write ``data`` at ``offset`` of generation ``number``; return the new length.

        The mirror is first cut back to ``offset``: bytes received twice (a
        replay after a reconnect) overwrite themselves instead of repeating.
        """
        handle = self._handle(number)
        length = handle.seek(0, os.SEEK_END)
        if length < offset:
            raise ValueError(f"{self.host}:{self.path} g{number}: write at {offset} leaves a hole after {length}")
        if length > offset:
            handle.truncate(offset)
            handle.seek(offset)
        handle.write(data)
        handle.flush()
        end = offset + len(data)
        times = self._times.get(number)
        if times is None:
            times = self._times[number] = open(self._times_path(number), "ab", buffering=0)
        times.write(_TIMES.pack(end, received))
        if offset < FINGERPRINT_SIZE:
            self._replace(number, fingerprint=fingerprint_of(self.head(number)))
        return end

    def truncate(self, number: int, length: int) -> None:
        """Cut generation ``number`` back to ``length`` bytes (a verified-bad tail)."""
        handle = self._handle(number)
        handle.truncate(length)
        handle.seek(length)

    def record_gap(self, number: int, offset: int, missing: int | None, reason: str) -> Gap:
        from rill.timefmt import iso_utc

        gap = Gap(number, offset, missing, reason, iso_utc(time.time()))
        path = os.path.join(self.directory, "gaps.jsonl")
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(gap)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return gap

    def sync(self) -> None:
        for handle in self._handles.values():
            os.fsync(handle.fileno())  # type: ignore[attr-defined]

    def close(self) -> None:
        for number in list(self._handles):
            self._close(number)

    def save(self) -> None:
        state = {
            "version": 1,
            "host": self.host,
            "path": self.path,
            "tap": self.tap,
            "last_poll_time": self.last_poll_time,
            "generations": [asdict(g) for g in self._generations],
        }
        write_atomically(os.path.join(self.directory, "checkpoint.json"), json.dumps(state, indent=1).encode())

    def _handle(self, number: int):  # type: ignore[no-untyped-def]
        handle = self._handles.get(number)
        if handle is None:
            handle = self._handles[number] = open(self.mirror_path(number), "ab+")
        return handle

    def _close(self, number: int) -> None:
        for handles in (self._handles, self._times):
            handle = handles.pop(number, None)
            if handle is not None:
                handle.close()  # type: ignore[attr-defined]

    def _load(self) -> None:
        path = os.path.join(self.directory, "checkpoint.json")
        try:
            with open(path, "rb") as f:
                state = json.loads(f.read())
        except FileNotFoundError:
            os.makedirs(self.directory, exist_ok=True)
            return
        except (ValueError, OSError):
            state = self._recover_torn_checkpoint()
        self.tap = self.tap or state.get("tap", "")
        self.last_poll_time = state.get("last_poll_time")
        self._generations = [GenerationRecord(**g) for g in state.get("generations", [])]

    def _recover_torn_checkpoint(self) -> dict[str, object]:
        """A checkpoint that does not parse (power loss mid-write, disk error).

        Keep the mirrors: rebuild the generation list from the mirror files with
        unknown identity (device/inode 0).  The tap then re-verifies each by
        the hash of its last bytes against the server instead of re-ingesting.
        """
        numbers = sorted(int(n[1:7]) for n in os.listdir(self.directory) if n.startswith("g") and n.endswith(".log"))
        generations = [asdict(GenerationRecord(n, 0, 0, state="drained")) for n in numbers]
        if generations:
            generations[-1]["state"] = "live"
        return {"generations": generations}


class MirrorStore:
    """Every mirrored file under ``data_dir``."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.root = os.path.join(data_dir, "mirror")
        self._open: dict[tuple[str, str], MirroredFile] = {}

    def directory_for(self, host: str, path: str) -> str:
        return os.path.join(self.root, quote(host, safe=""), quote(path, safe=""))

    def file(self, host: str, path: str, tap: str = "") -> MirroredFile:
        key = (host, path)
        mirrored = self._open.get(key)
        if mirrored is None:
            mirrored = self._open[key] = MirroredFile(self.directory_for(host, path), host, path, tap)
        elif tap and not mirrored.tap:
            mirrored.tap = tap
        return mirrored

    def files(self) -> list[MirroredFile]:
        found = []
        if not os.path.isdir(self.root):
            return found
        for host in sorted(os.listdir(self.root)):
            for path in sorted(os.listdir(os.path.join(self.root, host))):
                if os.path.exists(os.path.join(self.root, host, path, "checkpoint.json")):
                    found.append(self.file(unquote(host), unquote(path)))
        return found

    def find(self, host: str, path: str) -> MirroredFile | None:
        directory = self.directory_for(host, path)
        if not os.path.exists(os.path.join(directory, "checkpoint.json")):
            return None
        return self.file(host, path)

    def sync(self) -> None:
        for mirrored in self._open.values():
            mirrored.sync()

    def close(self) -> None:
        for mirrored in self._open.values():
            mirrored.close()
