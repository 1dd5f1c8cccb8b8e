"""Acceptance 2: SIGKILL during a flush or a merge, restart, and the index answers
exactly as a fresh rebuild does."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from rill.index.core import Index
from rill.index.corpus import generate
from rill.store.mirror import MirrorStore

CHILD = """
import sys
from rill.index.core import Index
from rill.store.mirror import MirrorStore
index = Index(sys.argv[1], MirrorStore(sys.argv[1]), flush_lines=1500, base_lines=1500)
index.catch_up()
index.flush()
index.merge_all()
print("FINISHED", flush=True)
"""

QUERIES = ["failed", '"invalid user"', "error OR warn", "host:web02 -info", "/ERROR/ payment",
           "since:2026-01-01T06:00:00Z until:2026-01-01T09:00:00Z", "user=root"]


def answers(index: Index) -> list[tuple[int, list[tuple]]]:
    out = []
    for query in QUERIES:
        result = index.search(query, page_size=100_000, count=True)
        out.append((result["count"], [(h["host"], h["path"], h["generation"], h["offset"]) for h in result["hits"]]))
    return out


class CrashTests(SynchronousTestCase):
    """Kill the indexing child at a chosen point; the restarted index is exact."""

    def setUp(self) -> None:
        self.data_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.data_dir)
        generate(self.data_dir, 12_000, hosts=2, files=3, generations=2)
        fresh_dir = os.path.abspath(self.mktemp())
        shutil.copytree(os.path.join(self.data_dir, "mirror"), os.path.join(fresh_dir, "mirror"))
        fresh = Index(fresh_dir, MirrorStore(fresh_dir), read_only=True)
        fresh.catch_up()
        self.expected = answers(fresh)
        fresh.close()

    def kill_at(self, point: str) -> None:
        """Run the child until it reports ``point``, then SIGKILL it."""
        env = dict(os.environ, RILL_INDEX_CRASH_AT=point, PYTHONPATH=os.pathsep.join(sys.path))
        child = subprocess.Popen([sys.executable, "-c", CHILD, self.data_dir], stdout=subprocess.PIPE, env=env)
        self.addCleanup(child.stdout.close)
        ready, _, _ = select.select([child.stdout], [], [], 120)
        line = child.stdout.readline().decode() if ready else ""
        if line.strip() != f"CRASH-POINT {point}":
            child.kill()
            child.wait()
            self.fail(f"child did not reach {point}: {line!r}")
        os.kill(child.pid, signal.SIGKILL)
        self.assertEqual(child.wait(), -signal.SIGKILL)

    def restart_and_compare(self) -> None:
        index = Index(self.data_dir, MirrorStore(self.data_dir), flush_lines=1500, base_lines=1500)
        self.addCleanup(index.close)
        index.catch_up()
        self.assertEqual(answers(index), self.expected)
        index.flush()
        index.merge_all()
        self.assertEqual(answers(index), self.expected)
        names = {e["name"] for e in index.entries}
        leftovers = [n for n in os.listdir(index.directory) if n.endswith((".seg", ".tmp")) and n not in names]
        self.assertEqual(leftovers, [])

    def test_kill_while_writing_a_flush_segment(self) -> None:
        """SIGKILL with a flush segment half written."""
        self.kill_at("segment-half-written")
        self.restart_and_compare()

    def test_kill_after_flush_segment_before_manifest(self) -> None:
        """SIGKILL after the segment is durable but before the manifest names it."""
        self.kill_at("flush-before-manifest")
        self.restart_and_compare()

    def test_kill_at_merge_start(self) -> None:
        """SIGKILL as a merge begins."""
        self.kill_at("merge-started")
        self.restart_and_compare()

    def test_kill_while_writing_a_merged_segment(self) -> None:
        """SIGKILL with the merged segment half written."""
        self.kill_at("merge-segment-half-written")
        self.restart_and_compare()

    def test_kill_after_merge_before_manifest(self) -> None:
        """SIGKILL after the merged segment is durable but before the manifest swap."""
        self.kill_at("merge-before-manifest")
        self.restart_and_compare()

    def test_kill_after_merge_swap(self) -> None:
        """SIGKILL after the manifest swap, before the merged inputs are deleted."""
        self.kill_at("merge-swapped")
        self.restart_and_compare()

    def test_torn_named_segment(self) -> None:
        """A segment named by the manifest but torn (power loss, bit rot) is rebuilt from the mirror."""
        self.kill_at("merge-swapped")
        index = Index(self.data_dir, MirrorStore(self.data_dir))
        victim = index.segments[-1].path
        index.close()
        with open(victim, "r+b") as f:
            f.truncate(os.path.getsize(victim) - 7)
        self.restart_and_compare()
