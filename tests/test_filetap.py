"""FileTap's guards around the planner, on a fake clock with no connection: stale polls and foreign bytes."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from rill.filetap import STALE_POLLS_SKIPPED, FileTap
from rill.rotation import RemoteFile, Snapshot
from rill.store.mirror import MirrorStore

PATH = "/var/log/app.log"


class FileTapGuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="rill-filetap-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.store = MirrorStore(directory)
        self.addCleanup(self.store.close)
        self.mirrored = self.store.file("host", PATH)
        host_tap = SimpleNamespace(host=SimpleNamespace(name="host"), reactor=task.Clock())
        self.tap = FileTap(host_tap, self.mirrored, 1.0, lambda *args: None)
        self.planned: list[Snapshot] = []

        def plan_and_act(snapshot: Snapshot) -> defer.Deferred[Any]:
            self.planned.append(snapshot)
            return defer.succeed(None)

        self.tap._plan_and_act = plan_and_act  # type: ignore[method-assign]

    def streaming(self, data: bytes, stopped: bool = False) -> int:
        record = self.mirrored.new_generation(8, 7, PATH)
        self.mirrored.append(record.number, 0, data, 0.0)
        source = RemoteFile(PATH, 8, 7, len(data), 0)
        reader = SimpleNamespace(stopped=stopped, source=source, generation=record.number)
        self.tap.readers[record.number] = reader  # type: ignore[assignment]
        return record.number

    def poll(self, size: int) -> None:
        self.tap.on_snapshot(Snapshot(PATH, RemoteFile(PATH, 8, 7, size, 0), (), 0))

    def test_poll_older_than_the_stream_is_skipped(self) -> None:
        """A poll that saw less of the file than a running stream already delivered is not planned on."""
        self.streaming(b"x" * 100)
        self.poll(100)  # the lengths at this arrival are what the next poll is compared with
        self.assertEqual(len(self.planned), 1)
        self.poll(50)
        self.assertEqual(len(self.planned), 1)
        self.poll(120)
        self.assertEqual(len(self.planned), 2)

    def test_stale_polls_are_planned_after_a_few(self) -> None:
        """A stream that never reports a truncation cannot hold the planner off for ever."""
        self.streaming(b"x" * 100)
        self.poll(100)
        for _ in range(STALE_POLLS_SKIPPED):
            self.poll(50)
        self.assertEqual(len(self.planned), 1)
        self.poll(50)
        self.assertEqual(len(self.planned), 2)

    def test_a_stopped_stream_does_not_make_polls_stale(self) -> None:
        """A stream stopped by a truncation notice: the smaller file is news, planned at once."""
        self.streaming(b"x" * 100, stopped=True)
        self.poll(100)
        self.poll(50)
        self.assertEqual(len(self.planned), 2)

    def test_polls_wait_after_a_truncation_notice(self) -> None:
        """Right after a stream reports a truncation, polls (maybe taken before it) are not planned on."""
        number = self.streaming(b"x" * 100, stopped=True)
        self.tap.truncated(self.tap.readers[number], 100)  # type: ignore[arg-type]
        self.poll(60)
        self.assertEqual(self.planned, [])
        self.tap.clock.advance(self.tap.watch_interval + 1.5)
        self.poll(60)
        self.assertEqual(len(self.planned), 1)

    def test_bytes_not_starting_as_the_server_head_are_dropped(self) -> None:
        """A mirror whose first bytes differ from the head the poll recorded is cut back and its stream stopped."""
        number = self.streaming(b"new file after a truncation\n")
        stopped = []
        self.tap.readers[number].stop = lambda: stopped.append(True)  # type: ignore[attr-defined]
        self.mirrored.record_seen(number, PATH, 8, 7, 28, 0, (10, hashlib.md5(b"old file h").hexdigest()))
        self.tap._drop_foreign_bytes()
        self.assertEqual(self.mirrored.length(number), 0)
        self.assertEqual(stopped, [True])
        self.assertNotIn(number, self.tap.readers)

    def test_bytes_starting_as_the_server_head_are_kept(self) -> None:
        data = b"old file, streamed as it grew\n"
        number = self.streaming(data)
        self.mirrored.record_seen(number, PATH, 8, 7, 10, 0, (10, hashlib.md5(data[:10]).hexdigest()))
        self.tap._drop_foreign_bytes()
        self.assertEqual(self.mirrored.read(number), data)
        self.assertIn(number, self.tap.readers)

    def test_gz_heads_are_fetched_once(self) -> None:
        """A .gz's heads, once fetched, come with every later poll while it is the same file; a changed one is asked again."""
        gz = RemoteFile(f"{PATH}.3.gz", 8, 30, 99, 5, ctime=6)
        fetched = Snapshot(PATH, None, (RemoteFile(gz.name, 8, 30, 99, 5, {1024: "a" * 32}, 6),), 10)
        self.tap._cache_heads(fetched)
        later = self.tap._with_cached_heads(Snapshot(PATH, None, (gz,), 11))
        self.assertEqual(later.siblings[0].heads, {1024: "a" * 32})
        rewritten = RemoteFile(gz.name, 8, 31, 99, 5, ctime=7)  # same name, another file
        again = self.tap._with_cached_heads(Snapshot(PATH, None, (rewritten,), 12))
        self.assertEqual(again.siblings[0].heads, {})
        self.assertEqual(self.tap._with_cached_heads(Snapshot(PATH, None, (gz,), 13)).siblings[0].heads, {})

    def test_plain_file_heads_are_not_cached(self) -> None:
        """A plain file may be rewritten within the second at the same size: its heads are always fetched anew."""
        plain = Snapshot(PATH, None, (RemoteFile(f"{PATH}.1", 8, 40, 10, 5, {10: "b" * 32}, 6),), 10)
        self.tap._cache_heads(plain)
        later = self.tap._with_cached_heads(Snapshot(PATH, None, (RemoteFile(f"{PATH}.1", 8, 40, 10, 5, ctime=6),), 11))
        self.assertEqual(later.siblings[0].heads, {})
