"""The rotation planner, one deterministic decision per RELIABILITY scenario (and the helpers the tap uses)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from twisted.trial.unittest import SynchronousTestCase

from rill.rotation import (
    Adopt,
    Drain,
    Finish,
    Gap,
    KnownGeneration,
    Plan,
    RemoteFile,
    Snapshot,
    age_key,
    is_rotated_name,
    plan,
    poll_head_sizes,
    rotated_names_of,
    rotation_base,
)

PATH = "/var/log/app.log"
NOW = 10_000
OLD = NOW - 3600  # long settled
QUIET = 60


def lines(first: int, count: int) -> bytes:
    return b"".join(b"2026-11-26 line %06d\n" % n for n in range(first, first + count))


class Server:
    """Files by name: (inode, bytes as the tap would see them decompressed, mtime)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, bytes, int]] = {}

    def put(self, name: str, inode: int, data: bytes, mtime: int = OLD) -> None:
        self.files[name] = (inode, data, mtime)

    def remote(self, name: str, heads: dict[int, str]) -> RemoteFile:
        inode, data, mtime = self.files[name]
        size = 33 if name.endswith(".gz") else len(data)  # a .gz's stat size is its compressed size
        return RemoteFile(name, 8, inode, size, mtime, heads, mtime)

    def snapshot(self, wanted: dict[str, dict[int, str]]) -> Snapshot:
        for name, heads in wanted.items():
            for n in heads:
                heads[n] = hashlib.md5(self.files[name][1][:n]).hexdigest()
        current = self.remote(PATH, wanted.get(PATH, {})) if PATH in self.files else None
        siblings = tuple(self.remote(n, wanted.get(n, {})) for n in sorted(self.files) if n != PATH)
        return Snapshot(PATH, current, siblings, NOW)


def gen(number: int, inode: int, data: bytes, state: str = "live", **kwargs: object) -> KnownGeneration:
    fingerprint = hashlib.md5(data[:1024]).hexdigest()
    return KnownGeneration(number, 8, inode, fingerprint, len(data), state, **kwargs)  # type: ignore[arg-type]


def run(server: Server, known: list[KnownGeneration], **kwargs: object) -> tuple[Plan, int]:
    """Plan as the tap does: fetch heads when asked, plan again; return the plan and the round trips."""
    wanted: dict[str, dict[int, str]] = {}
    if PATH in server.files:
        wanted[PATH] = dict.fromkeys(poll_head_sizes(known))
    kwargs.setdefault("last_poll_time", NOW - 1)
    for rounds in range(4):
        result = plan(server.snapshot(wanted), known, quiet=QUIET, **kwargs)  # type: ignore[arg-type]
        if result.need_heads is None:
            return result, rounds
        for name, n in result.need_heads.requests:
            wanted.setdefault(name, {})[n] = ""
    raise AssertionError("the planner keeps asking for heads")


def shapes(result: Plan) -> list[tuple[object, ...]]:
    """Actions as short tuples: ('drain', gen, name, offset, follow), ('adopt', gen, name), ..."""
    out: list[tuple[object, ...]] = []
    for a in result.actions:
        if isinstance(a, Drain):
            out.append(("drain", a.generation, a.source.name, a.offset, a.follow))
        elif isinstance(a, Adopt):
            out.append(("adopt", a.generation, a.source.name))
        elif isinstance(a, Finish):
            out.append(("finish", a.generation, a.complete))
        elif isinstance(a, Gap):
            out.append(("gap", a.generation, a.offset, a.missing))
    return out


class ScenarioTests(SynchronousTestCase):
    """RELIABILITY.md scenarios, as planner decisions."""

    def test_01_partition_then_reconnect(self) -> None:
        """1: after a partition the live generation resumes at its mirrored length: no gap, no duplicate."""
        s = Server()
        data = lines(0, 100)
        s.put(PATH, 7, data + lines(100, 5), NOW)
        result, _ = run(s, [gen(1, 7, data, last_size=len(data))])
        self.assertEqual(shapes(result), [("drain", 1, PATH, len(data), True)])

    def test_02_sigkill_between_mirror_and_checkpoint(self) -> None:
        """2: the resume offset is the mirror's length, whatever the checkpoint last recorded."""
        s = Server()
        data = lines(0, 50)
        s.put(PATH, 7, data + lines(50, 5), NOW)
        result, _ = run(s, [gen(1, 7, data, last_size=10)])  # checkpoint older than the mirror
        self.assertEqual(shapes(result), [("drain", 1, PATH, len(data), True)])

    def test_03_rename_while_connected(self) -> None:
        """3: a stream keeps reading the renamed file (the writer may still append); it finishes once quiet."""
        s = Server()
        data = lines(0, 20)
        s.put(f"{PATH}.1", 7, data, NOW)
        s.put(PATH, 9, b"", NOW)
        streaming = gen(1, 7, data, last_size=len(data), last_mtime=NOW, stream_idle=1.0)
        result, _ = run(s, [streaming])
        self.assertEqual(shapes(result), [("adopt", 2, PATH), ("drain", 2, PATH, 0, True)])
        s.put(f"{PATH}.1", 7, data, OLD)
        quiet = replace(streaming, stream_idle=float(QUIET))
        result, _ = run(s, [quiet, gen(2, 9, b"", stream_idle=0.0)])
        self.assertEqual(shapes(result), [("finish", 1, True)])

    def test_03_rename_while_connected_stream_still_busy(self) -> None:
        """3: a renamed file still growing is not finished, however long ago it was renamed."""
        s = Server()
        data = lines(0, 20)
        s.put(f"{PATH}.1", 7, data + lines(20, 1), NOW)
        s.put(PATH, 9, b"", NOW)
        result, _ = run(s, [gen(1, 7, data, "draining", stream_idle=float(QUIET)), gen(2, 9, b"", stream_idle=0.0)])
        self.assertEqual(shapes(result), [])

    def test_04_rename_while_disconnected(self) -> None:
        """4: the old generation is found among its siblings by inode and fingerprint and drained once."""
        s = Server()
        data = lines(0, 30)
        s.put(f"{PATH}.1", 7, data + lines(30, 4), OLD)
        s.put(f"{PATH}.2", 5, lines(1000, 9), OLD - 99)  # history from before Rill
        s.put(PATH, 9, lines(34, 3), NOW)
        result, rounds = run(s, [gen(1, 7, data, last_size=len(data), last_mtime=OLD - 1)])
        self.assertEqual(
            shapes(result),
            [("drain", 1, f"{PATH}.1", len(data), False), ("finish", 1, True), ("adopt", 2, PATH),
             ("drain", 2, PATH, 0, True)],
        )
        self.assertEqual(rounds, 1)

    def test_04_rename_while_disconnected_recent_stays_open(self) -> None:
        """3+4: a file renamed moments ago may still be appended to: not finished; what it gains is drained, not followed."""
        s = Server()
        data = lines(0, 30)
        s.put(f"{PATH}.1", 7, data, NOW - 2)
        s.put(PATH, 9, b"", NOW - 2)
        result, _ = run(s, [gen(1, 7, data)])
        self.assertEqual(shapes(result), [("adopt", 2, PATH), ("drain", 2, PATH, 0, True)])
        s.put(f"{PATH}.1", 7, data + lines(30, 2), NOW - 1)  # the writer had not reopened yet
        result, _ = run(s, [gen(1, 7, data), gen(2, 9, b"", last_mtime=NOW - 2)])
        self.assertEqual(shapes(result), [("drain", 1, f"{PATH}.1", len(data), False), ("drain", 2, PATH, 0, True)])

    def test_05_several_rotations_one_gzipped_one_deleted(self) -> None:
        """5: the deleted generation is a gap; the gzipped one is drained; the unseen ones are adopted in order."""
        s = Server()
        first, second = lines(0, 10), lines(10, 10)
        s.put(f"{PATH}.2.gz", 40, second + lines(20, 5), NOW - 500)
        s.put(f"{PATH}.1", 11, lines(25, 5), NOW - 400)
        s.put(PATH, 12, lines(30, 2), NOW - 300)
        s.put(f"{PATH}.3.gz", 41, lines(900, 5), NOW - 9999)  # history
        known = [
            gen(1, 3, first, "draining", last_size=len(first) + 7, last_mtime=NOW - 2000),
            gen(2, 4, second, last_size=len(second), last_mtime=NOW - 1000),
        ]
        result, rounds = run(s, known, last_poll_time=NOW - 1000)
        self.assertEqual(
            shapes(result),
            [
                ("gap", 1, len(first), 7),
                ("finish", 1, False),
                ("drain", 2, f"{PATH}.2.gz", len(second), False),
                ("finish", 2, True),
                ("adopt", 3, f"{PATH}.1"),
                ("drain", 3, f"{PATH}.1", 0, False),
                ("finish", 3, True),
                ("adopt", 4, PATH),
                ("drain", 4, PATH, 0, True),
            ],
        )
        self.assertEqual(rounds, 1)

    def test_06_copytruncate_while_connected(self) -> None:
        """6: the bytes after the last read come from the copy; nothing suggests a lost window, so no gap."""
        s = Server()
        data = lines(0, 40)
        s.put(f"{PATH}.1", 20, data + lines(40, 3), NOW)
        s.put(PATH, 7, lines(43, 1), NOW)
        known = [gen(1, 7, data, last_size=len(data), last_mtime=NOW - 1, stream_idle=0.0)]
        result, _ = run(s, known)
        self.assertEqual(
            shapes(result),
            [("drain", 1, f"{PATH}.1", len(data), False), ("finish", 1, True), ("adopt", 2, PATH),
             ("drain", 2, PATH, 0, True)],
        )

    def test_06_copytruncate_window_reported(self) -> None:
        """6: the file was bigger at the last poll than its copy: the bytes between copy and truncate are a gap."""
        s = Server()
        data = lines(0, 40)
        copy = data + lines(40, 2)
        s.put(f"{PATH}.1", 20, copy, OLD)
        s.put(PATH, 7, lines(43, 1), NOW)
        result, _ = run(s, [gen(1, 7, data, last_size=len(copy) + 23, last_mtime=OLD - 5, stream_idle=0.0)])
        self.assertEqual(
            shapes(result)[:3],
            [("drain", 1, f"{PATH}.1", len(data), False), ("gap", 1, len(copy), 23), ("finish", 1, False)],
        )

    def test_06_truncated_no_copy(self) -> None:
        """6: a copy that ends before our offset cannot help: the bytes after it are a gap."""
        s = Server()
        data = lines(0, 40)
        s.put(f"{PATH}.1", 20, data[:-22], OLD)
        s.put(PATH, 7, lines(43, 1), NOW)
        result, _ = run(s, [gen(1, 7, data, last_size=len(data), last_mtime=OLD - 5, stream_idle=0.0)])
        self.assertEqual(shapes(result)[:2], [("gap", 1, len(data), None), ("finish", 1, False)])

    def test_07_copytruncate_while_disconnected_regrown(self) -> None:
        """7: same inode, bigger than our offset, but a different head: the copy is drained, the file is new."""
        s = Server()
        data = lines(0, 40)
        s.put(f"{PATH}.1", 20, data + lines(40, 2), OLD)
        s.put(PATH, 7, lines(42, 200), NOW)
        result, _ = run(s, [gen(1, 7, data, last_size=len(data), last_mtime=OLD - 5)])
        self.assertEqual(
            shapes(result),
            [("drain", 1, f"{PATH}.1", len(data), False), ("finish", 1, True), ("adopt", 2, PATH),
             ("drain", 2, PATH, 0, True)],
        )

    def test_07_regrown_with_the_same_head_caught_by_tail_check(self) -> None:
        """7: same head and a bigger size pass; the stream header's tail check fails; then the copy is used."""
        s = Server()
        header = lines(0, 60)  # the first 1024 bytes are identical in both
        s.put(f"{PATH}.1", 20, header + lines(60, 5), OLD)
        s.put(PATH, 7, header + lines(500, 50), NOW)
        known = [gen(1, 7, header + lines(60, 2), last_size=len(header) + 44, last_mtime=OLD - 5)]
        first, _ = run(s, known)
        self.assertEqual(shapes(first), [("drain", 1, PATH, known[0].length, True)])
        result, _ = run(s, known, mismatches={(1, 8, 7)})
        self.assertEqual(
            shapes(result),
            [("drain", 1, f"{PATH}.1", known[0].length, False), ("finish", 1, True), ("adopt", 2, PATH),
             ("drain", 2, PATH, 0, True)],
        )

    def test_08_truncate_and_rewrite_identical_first_line(self) -> None:
        """8: the head matches but the size is below our offset: a gap, then a new generation from 0."""
        s = Server()
        data = lines(0, 3)
        s.put(PATH, 7, data[:25], NOW)
        result, _ = run(s, [gen(1, 7, data, last_size=len(data), last_mtime=NOW - 5)])
        self.assertEqual(
            shapes(result),
            [("gap", 1, len(data), None), ("finish", 1, False), ("adopt", 2, PATH), ("drain", 2, PATH, 0, True)],
        )

    def test_08_rewritten_past_offset_tail_mismatch(self) -> None:
        """8: rewritten past our offset with the same first line: the tail-check mismatch turns it into gap + new."""
        s = Server()
        data = lines(0, 3)
        s.put(PATH, 7, data[:25] + b"other things\n" * 9, NOW)
        known = [gen(1, 7, data[:25], last_size=25)]
        result, _ = run(s, known, mismatches={(1, 8, 7)})
        self.assertEqual(
            shapes(result),
            [("gap", 1, 25, None), ("finish", 1, False), ("adopt", 2, PATH), ("drain", 2, PATH, 0, True)],
        )

    def test_09_sparse_copytruncate_flagged(self) -> None:
        """9: a truncated file led by NULs (writer kept its offset) is mirrored as is, and flagged."""
        s = Server()
        data = lines(0, 10)
        s.put(f"{PATH}.1", 20, data, OLD)
        s.put(PATH, 7, b"\0" * len(data) + lines(10, 1), NOW)
        result, _ = run(s, [gen(1, 7, data, last_size=len(data), last_mtime=OLD - 1)])
        adopt = next(a for a in result.actions if isinstance(a, Adopt))
        self.assertIn("NUL", adopt.note)
        self.assertEqual(shapes(result)[-1], ("drain", 2, PATH, 0, True))

    def test_10_inode_reuse(self) -> None:
        """10: a new file on a deleted file's inode, even of the same size, is a new generation."""
        s = Server()
        data = lines(0, 10)
        s.put(PATH, 7, lines(500, 10), NOW)
        result, _ = run(s, [gen(1, 7, data, last_size=len(data))])
        self.assertEqual(
            shapes(result),
            [("gap", 1, len(data), None), ("finish", 1, False), ("adopt", 2, PATH), ("drain", 2, PATH, 0, True)],
        )

    def test_11_deleted_while_open_connected(self) -> None:
        """11: while connected the stream drains the deleted file's descriptor: no gap; finished once idle."""
        s = Server()
        data = lines(0, 10)
        result, _ = run(s, [gen(1, 7, data, stream_idle=5.0)])
        self.assertEqual(shapes(result), [])
        result, _ = run(s, [gen(1, 7, data, stream_idle=float(QUIET))])
        self.assertEqual(shapes(result), [("finish", 1, True)])

    def test_11_deleted_while_disconnected(self) -> None:
        """11: while disconnected the lost bytes are a gap (with the count when the last poll saw more)."""
        s = Server()
        data = lines(0, 10)
        result, _ = run(s, [gen(1, 7, data, last_size=len(data) + 50)])
        self.assertEqual(shapes(result), [("gap", 1, len(data), 50), ("finish", 1, False)])

    def test_12_small_file_identity_firms_up(self) -> None:
        """12: a file smaller than the fingerprint size is matched over the bytes we have, and streams at once."""
        s = Server()
        s.put(PATH, 7, b"hi\nthere\n", NOW)
        first, rounds = run(s, [], last_poll_time=None)
        self.assertEqual(shapes(first), [("adopt", 1, PATH), ("drain", 1, PATH, 0, True)])
        self.assertEqual(rounds, 0)
        self.assertEqual(poll_head_sizes([gen(1, 7, b"hi\n")]), [3, 1024])
        result, rounds = run(s, [gen(1, 7, b"hi\n")])
        self.assertEqual((shapes(result), rounds), ([("drain", 1, PATH, 3, True)], 0))
        s.put(PATH, 7, b"ho\nthere\n", NOW)  # same inode, different first bytes: not ours
        result, _ = run(s, [gen(1, 7, b"hi\n")])
        self.assertEqual(shapes(result)[0], ("gap", 1, 3, None))

    def test_13_partial_last_line(self) -> None:
        """13: a mirror ending mid-line resumes at that byte: the planner works in bytes, not lines."""
        s = Server()
        data = lines(0, 5)
        s.put(PATH, 7, data, NOW)
        result, _ = run(s, [gen(1, 7, data[:-4])])
        self.assertEqual(shapes(result), [("drain", 1, PATH, len(data) - 4, True)])

    def test_14_torn_checkpoint_identity_unknown(self) -> None:
        """14: after a torn checkpoint (identity 0/0) the file is found by fingerprint and resumed, not re-ingested."""
        s = Server()
        data = lines(0, 80)
        s.put(PATH, 7, data + lines(80, 1), NOW)
        torn = replace(gen(1, 0, data), device=0)
        result, _ = run(s, [torn])
        self.assertEqual(shapes(result), [("drain", 1, PATH, len(data), True)])
        self.assertEqual((result.seen[0].device, result.seen[0].inode), (8, 7))

    def test_15_identity_without_name_following(self) -> None:
        """15: identity is (device, inode) plus heads from plain stat/md5 polling: any rename is followed."""
        s = Server()
        data = lines(0, 10)
        s.put(f"{PATH}-20261126", 7, data + lines(10, 1), OLD)
        s.put(PATH, 9, b"", NOW)
        result, _ = run(s, [gen(1, 7, data)])
        self.assertEqual(shapes(result)[:2], [("drain", 1, f"{PATH}-20261126", len(data), False), ("finish", 1, True)])

    def test_16_replay_keeps_generation_and_offset(self) -> None:
        """16: a replay after a crash drains the same generation from the same offset, so subscribers can dedupe."""
        s = Server()
        data = lines(0, 10)
        s.put(PATH, 7, data + lines(10, 3), NOW)
        once, _ = run(s, [gen(3, 7, data)])
        again, _ = run(s, [gen(3, 7, data)])
        self.assertEqual(once.actions, again.actions)
        self.assertEqual(shapes(once), [("drain", 3, PATH, len(data), True)])


class MoreDecisionTests(SynchronousTestCase):
    """Decisions around the scenarios: history, missing files, ordering, round trips."""

    def test_first_poll_ignores_history(self) -> None:
        """The first poll adopts the file at the path only, never the rotated history."""
        s = Server()
        s.put(f"{PATH}.1", 5, lines(0, 5), NOW)
        s.put(f"{PATH}.2.gz", 6, lines(5, 5), NOW)
        s.put(PATH, 7, lines(10, 5), NOW)
        result, rounds = run(s, [], last_poll_time=None)
        self.assertEqual((shapes(result), rounds), ([("adopt", 1, PATH), ("drain", 1, PATH, 0, True)], 0))

    def test_missing_file_waits(self) -> None:
        """A path that does not exist (yet) is waited for: no action, nothing lost."""
        self.assertEqual(plan(Snapshot(PATH, None, (), NOW), []).actions, ())

    def test_rotated_between_rename_and_create(self) -> None:
        """Between logrotate's rename and create the path is missing: drain the old file (to its end), adopt nothing."""
        s = Server()
        data = lines(0, 5)
        s.put(f"{PATH}.1", 7, data + lines(5, 1), NOW)
        result, _ = run(s, [gen(1, 7, data)])
        self.assertEqual(shapes(result), [("drain", 1, f"{PATH}.1", len(data), False)])

    def test_gzipped_generation_found_by_head(self) -> None:
        """A generation compressed while away is found by its decompressed head (gzip gives a new inode)."""
        s = Server()
        data = lines(0, 100)
        s.put(f"{PATH}.1.gz", 30, data + lines(100, 2), OLD)
        s.put(PATH, 9, b"", NOW)
        result, rounds = run(s, [gen(1, 7, data, last_mtime=OLD - 10)])
        self.assertEqual(shapes(result)[:2], [("drain", 1, f"{PATH}.1.gz", len(data), False), ("finish", 1, True)])
        self.assertEqual(rounds, 1)

    def test_gzip_of_other_file_is_not_ours(self) -> None:
        """A .gz whose head differs is not our generation: ours is reported gone."""
        s = Server()
        data = lines(0, 10)
        s.put(f"{PATH}.1.gz", 30, lines(50, 12), OLD)
        result, _ = run(s, [gen(1, 7, data, last_mtime=OLD - 10)])
        self.assertEqual(shapes(result)[:2], [("gap", 1, len(data), None), ("finish", 1, False)])

    def test_finished_generation_compressed_later_not_readopted(self) -> None:
        """A drained generation that is gzipped later is recognised (mtime kept by gzip) and not mirrored again."""
        s = Server()
        done = lines(0, 10)
        s.put(f"{PATH}.1.gz", 30, done, NOW - 5)
        s.put(PATH, 9, lines(10, 1), NOW)
        known = [gen(1, 7, done, "drained", last_mtime=NOW - 5), gen(2, 9, lines(10, 1))]
        result, _ = run(s, known, last_poll_time=NOW - 10)
        self.assertEqual(shapes(result), [("drain", 2, PATH, len(lines(10, 1)), True)])

    def test_finished_generation_compressed_with_new_mtime_not_a_copy(self) -> None:
        """A drained generation compressed by a tool that does not keep the mtime is still recognised by its head:
        it is neither re-adopted nor taken for the copy of a truncated empty generation (chaos: a duplicate)."""
        s = Server()
        done = lines(0, 10)
        s.put(f"{PATH}.3.gz", 30, done, NOW)  # compressed just now
        s.put(f"{PATH}.1", 31, b"", NOW)  # the copy of the empty generation
        s.put(PATH, 9, lines(10, 1), NOW)  # truncated below the size last seen, then written
        known = [gen(1, 7, done, "drained", last_mtime=NOW - 50),
                 gen(2, 9, b"", last_size=200, last_mtime=NOW - 1)]
        result, _ = run(s, known, last_poll_time=NOW - 1)
        self.assertNotIn(f"{PATH}.3.gz", [a.source.name for a in result.actions if isinstance(a, (Adopt, Drain))])

    def test_dateext_order(self) -> None:
        """Intermediate generations are adopted oldest first: by mtime, then by rotation suffix."""
        a = RemoteFile(f"{PATH}-20261124", 1, 1, 1, 100)
        b = RemoteFile(f"{PATH}-20261125.gz", 1, 2, 1, 100)
        c = RemoteFile(f"{PATH}.2", 1, 3, 1, 100)
        d = RemoteFile(f"{PATH}.1", 1, 4, 1, 100)
        here = RemoteFile(PATH, 1, 5, 1, 100)
        ordered = sorted([here, b, d, a, c], key=lambda f: age_key(PATH, f))
        self.assertEqual(ordered, [c, d, a, b, here])

    def test_one_round_trip_for_all_heads(self) -> None:
        """Everything the copy and adoption checks need is asked for in one NeedHeads."""
        s = Server()
        data = lines(0, 10)
        for i in range(1, 5):
            s.put(f"{PATH}.{i}.gz", 30 + i, lines(100 * i, 3), NOW - i)
        result, rounds = run(s, [gen(1, 7, data, last_mtime=NOW - 100)])
        self.assertEqual(rounds, 1)

    def test_empty_generation_inode_reused_at_a_newer_name(self) -> None:
        """An empty rotated generation's inode back at the path is another file (reuse): adopted, not taken as it."""
        s = Server()
        s.put(PATH, 50, lines(0, 3), NOW)
        result, _ = run(s, [gen(1, 50, b"", "draining", last_seen_name=f"{PATH}.1", last_size=0, last_mtime=NOW - 2)],
                        last_poll_time=NOW - 2)
        self.assertEqual(
            shapes(result), [("gap", 1, 0, None), ("finish", 1, False), ("adopt", 2, PATH), ("drain", 2, PATH, 0, True)]
        )

    def test_empty_generation_inode_back_at_the_path_after_a_newer_one(self) -> None:
        """An empty generation last seen at the path, whose inode is there again after a newer one was: reuse."""
        s = Server()
        s.put(f"{PATH}.1", 51, b"", NOW - 1)
        s.put(PATH, 50, lines(0, 3), NOW)
        known = [gen(1, 50, b"", last_seen_name=PATH, last_size=0, last_mtime=NOW - 3),
                 gen(2, 51, b"", last_seen_name=PATH, last_size=0, last_mtime=NOW - 2)]
        result, _ = run(s, known, last_poll_time=NOW - 2)
        self.assertEqual(
            shapes(result),
            [("gap", 1, 0, None), ("finish", 1, False), ("adopt", 3, PATH), ("drain", 3, PATH, 0, True)],
        )

    def test_plain_files_inode_on_a_gz_is_reuse(self) -> None:
        """gzip writes the .gz while the plain file still holds its inode: a .gz with that inode is another file."""
        s = Server()
        s.put(f"{PATH}.3.gz", 50, lines(100, 3), NOW - 1)
        s.put(PATH, 52, b"", NOW)
        known = [gen(1, 50, b"", "draining", last_seen_name=f"{PATH}.1", last_size=0, last_mtime=NOW - 3),
                 gen(2, 52, b"", last_seen_name=PATH, last_size=0, last_mtime=NOW - 2)]
        result, _ = run(s, known, last_poll_time=NOW - 2)
        self.assertNotIn(("drain", 1, f"{PATH}.3.gz", 0, False), shapes(result)[:1])
        self.assertEqual(shapes(result)[:2], [("gap", 1, 0, None), ("finish", 1, False)])

    def test_nul_only_generation_does_not_take_a_copy(self) -> None:
        """A generation of nothing but NULs cannot tell its copy from another NUL-led file: gap, and both adopted."""
        s = Server()
        s.put(f"{PATH}.1", 60, b"\0" * 40 + lines(0, 2), NOW)  # NUL-led: whose copy, nobody can tell
        s.put(PATH, 61, b"", NOW)
        known = [gen(1, 62, b"\0" * 40, last_seen_name=PATH, last_size=40, last_mtime=NOW - 2)]
        result, _ = run(s, known, last_poll_time=NOW - 2)
        self.assertEqual(
            shapes(result),
            [("gap", 1, 40, None), ("finish", 1, False), ("adopt", 2, f"{PATH}.1"), ("drain", 2, f"{PATH}.1", 0, False),
             ("adopt", 3, PATH), ("drain", 3, PATH, 0, True)],
        )

    def test_empty_generation_vanished(self) -> None:
        """An empty generation has no fingerprint: if its inode is gone and no .gz can be it, a gap of unknown size."""
        s = Server()
        s.put(PATH, 9, b"", NOW)
        result, _ = run(s, [gen(1, 7, b"", last_size=0, last_mtime=NOW - 2)], last_poll_time=NOW - 2)
        self.assertEqual(
            shapes(result), [("gap", 1, 0, None), ("finish", 1, False), ("adopt", 2, PATH), ("drain", 2, PATH, 0, True)]
        )

    def test_empty_generation_written_rotated_and_gzipped_while_away(self) -> None:
        """An empty generation that got bytes, rotated and was gzip'd while we were away: the new .gz is it (no gap)."""
        s = Server()
        s.put(f"{PATH}.1.gz", 30, lines(0, 3), NOW)
        s.put(PATH, 9, b"", NOW)
        result, _ = run(s, [gen(1, 7, b"", last_size=0, last_mtime=NOW - 2)], last_poll_time=NOW - 2)
        self.assertEqual(
            shapes(result),
            [("drain", 1, f"{PATH}.1.gz", 0, False), ("finish", 1, True), ("adopt", 2, PATH), ("drain", 2, PATH, 0, True)],
        )

    def test_empty_generation_compressed_while_empty(self) -> None:
        """An empty generation whose file was gzip'd while still empty: the empty .gz is it -- no gap, no adoption."""
        s = Server()
        s.put(f"{PATH}.2.gz", 30, b"", NOW)
        s.put(f"{PATH}.1", 31, lines(0, 3), OLD)  # history, not recent
        s.put(PATH, 9, b"", NOW)
        result, _ = run(s, [gen(1, 7, b"", last_size=0, last_mtime=NOW - 2), gen(2, 9, b"", last_size=0, last_mtime=NOW)],
                        last_poll_time=NOW - 2)
        self.assertEqual(shapes(result), [("finish", 1, True), ("drain", 2, PATH, 0, True)])
        self.assertIn((1, 30), [(x.generation, x.inode) for x in result.seen])

    def test_seen_reports_new_identity(self) -> None:
        """Plan.seen says where each generation is now, so the tap records the copy's or .gz's identity."""
        s = Server()
        data = lines(0, 10)
        s.put(f"{PATH}.1.gz", 30, data, OLD)
        s.put(PATH, 9, b"", NOW)
        result, _ = run(s, [gen(1, 7, data)])
        self.assertEqual([(x.generation, x.inode, x.size) for x in result.seen], [(1, 30, None), (2, 9, 0)])


class NameTests(SynchronousTestCase):
    """The helpers a glob tap uses to keep rotated names out of its file list."""

    def test_rotated_names(self) -> None:
        """``path.N``, ``path.N.gz`` and ``path-DATE`` are rotated names of ``path``; other files are not."""
        self.assertTrue(is_rotated_name(PATH, f"{PATH}.1"))
        self.assertTrue(is_rotated_name(PATH, f"{PATH}-20260101.gz"))
        self.assertFalse(is_rotated_name(PATH, "/var/log/app.logger"))
        self.assertFalse(is_rotated_name(PATH, PATH))

    def test_rotation_base(self) -> None:
        """A glob match is skipped when it is a rotated name of a watched path."""
        paths = ["/var/log/a.log", "/var/log/a.log.d"]
        self.assertEqual(rotation_base("/var/log/a.log.1", paths), "/var/log/a.log")
        self.assertEqual(rotation_base("/var/log/a.log.d.2.gz", paths), "/var/log/a.log.d")
        self.assertIsNone(rotation_base("/var/log/b.log", paths))

    def test_rotated_names_of_snapshot(self) -> None:
        """The snapshot's siblings are exactly the names a glob tap must not watch on their own."""
        snap = Snapshot(PATH, None, (RemoteFile(f"{PATH}.1", 1, 2, 3, 4),))
        self.assertEqual(rotated_names_of(snap), {f"{PATH}.1"})


class HeadsTests(SynchronousTestCase):
    """Heads fetched on demand (NeedHeads) belong to the polled file only if it is still the same inode."""

    def test_heads_of_a_rotated_name_are_dropped(self) -> None:
        """A rotation between the poll and the heads command: the name holds another inode; its head is not used."""
        from rill.filetap import _matching_heads
        from rill.watch import parse_heads_with_identity

        digest = hashlib.md5(b"").hexdigest()
        output = f"H 100 {digest} 8 99 {PATH}.1\nH 0 {digest} 8 9 {PATH}\nE\n".encode()  # as bounded
        snap = Snapshot(PATH, RemoteFile(PATH, 8, 9, 0, NOW), (RemoteFile(f"{PATH}.1", 8, 7, 500, NOW),), NOW)
        heads = _matching_heads(snap, ((f"{PATH}.1", 100), (PATH, 100)), parse_heads_with_identity(output))
        self.assertEqual(heads, {PATH: {100: digest}})

    def test_heads_requests_bounded_by_polled_size(self) -> None:
        """A file that grew after the poll is hashed over the polled bytes only, and answers under the n asked."""
        from rill.filetap import _bounded_requests, _matching_heads
        from rill.watch import parse_heads_with_identity

        snap = Snapshot(PATH, RemoteFile(PATH, 8, 9, 40, NOW), (RemoteFile(f"{PATH}.1.gz", 8, 7, 33, NOW),), NOW)
        requests = ((PATH, 1024), (f"{PATH}.1.gz", 1024))
        self.assertEqual(_bounded_requests(requests, snap), [(PATH, 40), (f"{PATH}.1.gz", 1024)])
        digest = hashlib.md5(b"x").hexdigest()
        output = f"H 40 {digest} 8 9 {PATH}\nH 1024 {digest} 8 7 {PATH}.1.gz\n".encode()
        heads = _matching_heads(snap, requests, parse_heads_with_identity(output))
        self.assertEqual(heads, {PATH: {1024: digest}, f"{PATH}.1.gz": {1024: digest}})


class FileTapPlanTests(SynchronousTestCase):
    """How the tap carries out a plan: a plain drain cut short stops the plan (its Finish would lose bytes)."""

    def setUp(self) -> None:
        from twisted.internet import defer
        from twisted.internet.task import Clock

        from rill.filetap import FileTap
        from rill.store.mirror import MirrorStore

        self.opened: list[object] = []
        opened = self.opened

        class Host:
            name = "h"

        class HostTap:
            host = Host()
            reactor = Clock()

            def open_channel(self, channel: object) -> defer.Deferred[object]:
                opened.append(channel)
                return defer.Deferred()  # the test decides what happens to it

            def channel_closed(self, channel: object) -> None:
                pass

        self.mirrored = MirrorStore(self.mktemp()).file("h", PATH)
        self.data = lines(0, 20)
        self.mirrored.new_generation(8, 7, PATH)
        self.mirrored.append(1, 0, self.data, 0.0)
        self.mirrored.record_seen(1, PATH, 8, 7, len(self.data), OLD)
        self.mirrored.last_poll_time = NOW - 100
        self.mirrored.save()
        self.tap = FileTap(HostTap(), self.mirrored, 0.2, lambda *a: None)
        # Rotated while we were away, and settled: drain the rest of .1 (not followed), finish it, adopt the new file.
        s = Server()
        s.put(f"{PATH}.1", 7, self.data + lines(20, 5), OLD)
        s.put(PATH, 9, b"", NOW)
        wanted: dict[str, dict[int, str]] = {}
        for _ in range(3):
            result = plan(s.snapshot(wanted), self.tap.known(), last_poll_time=NOW - 100)
            if result.need_heads is None:
                break
            for name, n in result.need_heads.requests:
                wanted.setdefault(name, {})[n] = ""
        self.assertEqual(
            shapes(result),
            [("drain", 1, f"{PATH}.1", len(self.data), False), ("finish", 1, True), ("adopt", 2, PATH), ("drain", 2, PATH, 0, True)],
        )
        self.snapshot = s.snapshot(wanted)

    def test_drain_cut_short_stops_the_plan(self) -> None:
        """The connection drops during a plain drain: the generation is not finished, nothing is adopted, the poll is not counted."""
        from twisted.python.failure import Failure

        self.tap.on_snapshot(self.snapshot)
        self.assertEqual(len(self.opened), 1)
        self.tap.disconnected()
        self.tap._reader_failed(self.opened[0], Failure(ConnectionError("lost")))  # type: ignore[arg-type]
        self.assertEqual(self.mirrored.generation(1).state, "draining")
        self.assertEqual([g.number for g in self.mirrored.generations()], [1])
        self.assertEqual(self.mirrored.last_poll_time, NOW - 100)
        self.assertEqual(self.mirrored.generation(1).name, f"{PATH}.1")  # Seen recorded before acting
        self.assertFalse(self.tap._busy)

    def test_completed_drain_goes_on(self) -> None:
        """A plain drain that ran to its end (exit status 0) lets the plan go on: Finish, Adopt, follow the new file."""
        self.tap.on_snapshot(self.snapshot)
        reader = self.opened[0]
        reader.accepted = True  # type: ignore[attr-defined]
        reader.exit_status = 0  # type: ignore[attr-defined]
        reader.ended.callback(None)  # type: ignore[attr-defined]
        self.assertEqual(self.mirrored.generation(1).state, "drained")
        self.assertEqual([g.number for g in self.mirrored.generations()], [1, 2])
        self.assertEqual(self.mirrored.generation(2).last_size, 0)  # its Seen recorded at its Adopt
        self.assertEqual(self.mirrored.last_poll_time, NOW)
        self.assertEqual(len(self.opened), 2)
