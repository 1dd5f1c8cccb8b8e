"""Tests for rill.index: segments, tail, merges, durability, paging, retention, the service."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from rill.index import IndexService, QueryError, open_index, plan_retention
from rill.index.core import Index
from rill.index.merge import merge_plan
from rill.index.corpus import START_MS, generate, write_generation
from rill.index.retention import GenerationInfo
from rill.index.segment import CorruptSegment, Segment
from rill.index.tokenizer import phrase_in_words, words
from rill.store.mirror import MirrorStore


def keys(result: dict) -> list[tuple]:
    """The identity of each hit, in order."""
    return [(h["host"], h["path"], h["generation"], h["offset"]) for h in result["hits"]]


def all_hits(index: Index, query: str, page_size: int) -> list[tuple]:
    """Every hit of a query, page by page through the cursor."""
    out: list[tuple] = []
    cursor = None
    while True:
        result = index.search(query, cursor=cursor, page_size=page_size)
        out.extend(keys(result))
        cursor = result["cursor"]
        if cursor is None:
            return out


QUERIES = [
    "failed", "\"invalid user admin\"", "error OR warn", "host:web02 -info", "/payment|ledger/",
    "since:2026-01-01T06:00:00Z until:2026-01-01T07:00:00Z nginx", "user=root", "404 path:*nginx*",
]


class IndexTestCase(SynchronousTestCase):
    """A small corpus in a fresh data_dir per test."""

    lines = 6000

    def setUp(self) -> None:
        self.data_dir = self.mktemp()
        os.makedirs(self.data_dir)
        generate(self.data_dir, self.lines, hosts=2, files=3, generations=2)
        self.store = MirrorStore(self.data_dir)

    def open(self, **options) -> Index:
        index = Index(self.data_dir, MirrorStore(self.data_dir), **options)
        self.addCleanup(index.close)
        return index

    def answers(self, index: Index) -> list[list[tuple]]:
        return [keys(index.search(q, page_size=100_000)) for q in QUERIES]


class SegmentTests(IndexTestCase):
    """Flushing, reading, merging and checking segments."""

    def test_flush_keeps_answers(self) -> None:
        """A flushed segment answers exactly as the in-memory tail did."""
        index = self.open()
        index.catch_up()
        before = self.answers(index)
        self.assertTrue(any(before))
        index.flush()
        self.assertEqual(index.tail.lines, 0)
        self.assertEqual(self.answers(index), before)

    def test_merges_are_logarithmic_and_keep_answers(self) -> None:
        """Many small flushes merge into few segments with the same answers."""
        fresh = self.open()
        fresh.catch_up()
        expected = self.answers(fresh)
        index = self.open(flush_lines=200, base_lines=200)
        index.catch_up()
        index.flush()
        index.merge_all()
        self.assertLessEqual(len(index.segments), 4 * 3)
        self.assertEqual(self.answers(index), expected)

    def test_parallel_build_keeps_answers(self) -> None:
        """Bulk building on two processes answers exactly as catching up in process."""
        from rill.index.build import build

        fresh = self.open()
        total = fresh.catch_up()
        expected = self.answers(fresh)
        index = self.open(directory=os.path.join(self.data_dir, "index2"), flush_lines=1000)
        self.assertEqual(build(index, workers=2), total)
        self.assertGreater(len(index.segments), 2)
        self.assertEqual(self.answers(index), expected)
        reopened = self.open(directory=os.path.join(self.data_dir, "index2"))
        self.assertEqual(reopened.catch_up(), 0)

    def test_merge_plan_tiers(self) -> None:
        """The merge plan picks four segments of one tier."""
        self.assertEqual(merge_plan([10, 10, 10, 10], base=10), [0, 1, 2, 3])
        self.assertIsNone(merge_plan([10, 40, 160, 10], base=10))

    def test_corrupt_segment_detected(self) -> None:
        """A flipped byte fails the checksum."""
        index = self.open()
        index.catch_up()
        index.flush()
        path = index.segments[0].path
        index.close()
        with open(path, "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 0xFF]))
        self.assertRaises(CorruptSegment, Segment, path)

    def test_torn_segment_rebuilt_from_mirror(self) -> None:
        """A truncated segment is dropped at open and its lines re-read from the mirror."""
        index = self.open()
        index.catch_up()
        expected = self.answers(index)
        index.flush()
        path = index.segments[0].path
        index.close()
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        reopened = self.open()
        self.assertEqual(reopened.rebuilt, [os.path.basename(path)])
        reopened.catch_up()
        self.assertEqual(self.answers(reopened), expected)

    def test_positions_recorded(self) -> None:
        """After a flush the manifest covers each generation up to its last complete line."""
        index = self.open()
        index.catch_up()
        index.flush()
        reopened = self.open()
        self.assertEqual(reopened.catch_up(), 0)
        for fg, ranges in reopened.coverage().items():
            self.assertEqual(ranges, [[0, self.store.file(fg[0], fg[1]).length(fg[2])]])


class SearchTests(IndexTestCase):
    """Paging, counting, histograms and errors."""

    def test_cursor_pages_cover_everything_once(self) -> None:
        """Paging with the cursor gives the same hits as one big page."""
        index = self.open(flush_lines=1000)
        index.catch_up()
        for query in ("failed", "host:web01 OR \"invalid user\"", "/ERROR/"):
            self.assertEqual(all_hits(index, query, 37), keys(index.search(query, page_size=100_000)))

    def test_newest_first(self) -> None:
        """Hits come newest first."""
        index = self.open()
        index.catch_up()
        stamps = [h["datetime"] for h in index.search("sshd", page_size=500)["hits"]]
        self.assertEqual(stamps, sorted(stamps, reverse=True))

    def test_count_and_histogram(self) -> None:
        """count equals the number of hits and the histogram adds up to it."""
        index = self.open()
        index.catch_up()
        result = index.search("failed", page_size=100_000, count=True, histogram="1h")
        self.assertEqual(result["count"], len(result["hits"]))
        self.assertEqual(sum(n for _, n in result["histogram"]), result["count"])

    def test_limit(self) -> None:
        """limit: caps the hits and ends paging."""
        index = self.open()
        index.catch_up()
        result = index.search("sshd limit:3")
        self.assertEqual(len(result["hits"]), 3)
        self.assertIsNone(result["cursor"])

    def test_hit_fields(self) -> None:
        """A hit carries host, path, generation, offset, datetime and the exact line."""
        index = self.open()
        index.catch_up()
        hit = index.search("sshd", page_size=1)["hits"][0]
        data = self.store.file(hit["host"], hit["path"]).read(hit["generation"], hit["offset"], len(hit["line"]))
        self.assertEqual(data.decode(), hit["line"])
        self.assertTrue(hit["line"].startswith(hit["datetime"]))

    def test_repeated_queries_answer_alike(self) -> None:
        """Cached postings and minute buckets are frozen: no query changes another's answer."""
        index = self.open(flush_lines=2200)
        index.catch_up()
        self.assertTrue(index.segments and index.tail.lines)
        queries = ["zanzibar", "failed", "failed /admin/", "failed -admin", "failed OR zanzibar", "-failed",
                   "\"invalid user admin\"", "user=root host:web01", "failed since:2026-01-01T06:00:00Z"]

        def run() -> list[dict]:
            return [index.search(q, page_size=50, count=True, histogram="1h") for q in queries]

        first = run()
        self.assertEqual(run(), first)
        self.assertEqual([index.search(q, page_size=50, count=True, histogram="1h") for q in reversed(queries)],
                         first[::-1])
        segment = index.segments[0]
        with self.assertRaises(AttributeError):
            segment.postings("failed").add(0)
        with self.assertRaises(AttributeError):
            segment.bucket(segment.minutes[0]).add(0)

    def test_bad_query(self) -> None:
        """A bad query raises QueryError naming the position."""
        index = self.open()
        with self.assertRaises(QueryError) as raised:
            index.search("error AND (")
        self.assertEqual(str(raised.exception), "error at position 12: expected a term, a phrase, a regex, a field or '('")


class MirrorTests(IndexTestCase):
    """Following the mirror: partial lines, read-only opening, cut-back mirrors."""

    lines = 600

    def test_partial_line_waits_for_its_newline(self) -> None:
        """A line without its newline is not indexed until it is complete."""
        write_generation(self.data_dir, "web09", "/p", 1, [(START_MS, "first zebra")], partial=b"second quagga")
        index = self.open()
        index.catch_up()
        self.assertEqual(len(index.search("zebra")["hits"]), 1)
        self.assertEqual(index.search("quagga")["hits"], [])
        mirrored = MirrorStore(self.data_dir).file("web09", "/p")
        mirrored.append(1, mirrored.length(1), b" done\n", START_MS / 1000 + 1)
        index.ingest("web09", "/p", 1)
        self.assertEqual([h["line"] for h in index.search("quagga")["hits"]], ["second quagga done"])

    def test_lines_read_after_the_mirror_grew(self) -> None:
        """A page mixing lines read before and after the mirror grew reads every line whole."""
        write_generation(self.data_dir, "web09", "/p", 1, [(START_MS, "first zebra")])
        index = self.open()
        index.catch_up()
        self.assertEqual([h["line"] for h in index.search("zebra")["hits"]], ["first zebra"])
        mirrored = MirrorStore(self.data_dir).file("web09", "/p")
        mirrored.append(1, mirrored.length(1), b"second zebra\n", START_MS / 1000 + 1)
        index.ingest("web09", "/p", 1)
        hits = index.search("zebra")["hits"]
        self.assertEqual([h["line"] for h in hits], ["second zebra", "first zebra"])
        self.assertEqual([h["datetime"] for h in hits], ["2026-01-01T00:00:01.000Z", "2026-01-01T00:00:00.000Z"])

    def test_non_ascii_phrases_and_regexes(self) -> None:
        """Phrases are case-folded (ß is ss) and regexes see the decoded line, ASCII or not."""
        write_generation(self.data_dir, "web09", "/p", 1, [(START_MS, "Grüße aus der STRASSE"), (START_MS + 1, "grüsse aus")])
        index = self.open()
        index.catch_up()
        self.assertEqual(index.search('"grüße aus der straße"', count=True)["count"], 1)
        self.assertEqual(index.search('"GRÜSSE aus"', count=True)["count"], 2)
        self.assertEqual(index.search("/ü[sß]+e aus/ host:web09", count=True)["count"], 2)

    def test_phrases_from_word_pairs(self) -> None:
        """Phrases answered from pair and repeat tokens equal the word-sequence rule, in the tail and in segments."""
        texts = ["a b c", "a b x b c", "b c a b", "a b b c", "a b c b c", "x a-b c y", "a b 7 c", "a b c a b c",
                 "c b a", "a. b, c!", "a b\tb c d", "b c d a b"]
        write_generation(self.data_dir, "web09", "/p", 1, [(START_MS + k, t) for k, t in enumerate(texts)])
        phrases = ["a b c", "b c", "a b c d", "b c d", "c b a", "a b 7 c", "b b", "a b c a b c", "c a b"]
        index = self.open()
        index.catch_up()
        for state in ("tail", "segment"):
            for phrase in phrases:
                expected = sum(phrase_in_words(words(phrase), words(t)) for t in texts)
                got = index.search(f'"{phrase}" host:web09', count=True)["count"]
                self.assertEqual(got, expected, (state, phrase))
            index.flush()

    def test_negation_and_bad_cursor(self) -> None:
        """A query of only NOT matches every other line; a forged cursor is a QueryError."""
        index = self.open()
        index.catch_up()
        total = index.search("since:2000-01-01", count=True)["count"]
        self.assertEqual(index.search("-sshd", count=True)["count"] + index.search("sshd", count=True)["count"], total)
        self.assertRaises(QueryError, index.search, "sshd", cursor="not-a-cursor")
        self.assertRaises(QueryError, index.search, "sshd", histogram="soon")

    def test_read_only_open_writes_nothing(self) -> None:
        """open_index(read_only=True) answers from memory and creates no files."""
        index = open_index(self.data_dir, read_only=True)
        self.addCleanup(index.close)
        self.assertTrue(index.search("sshd")["hits"])
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "index")))

    def test_cut_back_mirror_reindexed(self) -> None:
        """When a mirror shrinks below what was indexed, its generation is indexed afresh."""
        write_generation(self.data_dir, "web09", "/p", 1, [(START_MS, "alpha one"), (START_MS + 1, "beta two")])
        index = self.open()
        index.catch_up()
        index.flush()
        write_generation(self.data_dir, "web09", "/p", 1, [(START_MS, "gamma")])
        index.ingest("web09", "/p", 1)
        self.assertEqual(index.search("beta")["hits"], [])
        self.assertEqual(len(index.search("gamma")["hits"]), 1)


class RetentionTests(IndexTestCase):
    """Retention by age and size, never the live generation."""

    lines = 1200

    def test_plan_by_age_and_size(self) -> None:
        """Old non-live generations go by age, then the oldest until under the size."""
        gens = [GenerationInfo("h", "p", 1, 100, 10.0, False), GenerationInfo("h", "p", 2, 100, 50.0, False),
                GenerationInfo("h", "p", 3, 100, 90.0, True)]
        self.assertEqual([g.number for g in plan_retention(gens, 100.0, 60.0, None)], [1])
        self.assertEqual([g.number for g in plan_retention(gens, 100.0, None, 150)], [1, 2])
        self.assertEqual(plan_retention(gens, 1000.0, 1.0, 0)[-1].number, 2)

    def test_apply_removes_hits_and_files(self) -> None:
        """Removed generations vanish from search and from disk; live ones stay."""
        index = self.open()
        index.catch_up()
        index.flush()
        from rill.index import apply_retention

        removed = apply_retention(index, "logs", 0.0, None, now=START_MS / 1000 + 10 * 86400)
        self.assertEqual({g for _, _, g in removed}, {1})
        gens = {h["generation"] for h in index.search("sshd OR nginx OR app", page_size=100_000)["hits"]}
        self.assertEqual(gens, {2})
        for host, path, gen in removed:
            self.assertFalse(os.path.exists(self.store.file(host, path).mirror_path(gen)))
        reopened = self.open()
        reopened.catch_up()
        self.assertEqual({h["generation"] for h in reopened.search("sshd", page_size=100_000)["hits"]}, {2})


class ServiceTests(IndexTestCase):
    """IndexService on a fake clock."""

    lines = 600

    def test_notify_then_flush_by_age(self) -> None:
        """Notified lines are searchable at once and flushed after flush_age."""
        clock = Clock()
        service = IndexService(self.data_dir, self.store, None, clock, flush_age=30.0)
        service.startService()
        mirrored = self.store.file("web01", "/var/log/auth.log")
        mirrored.append(2, mirrored.length(2), b"brand new walrus line\n", clock.seconds())
        service.notify("web01", "/var/log/auth.log", 2)
        self.assertEqual(len(service.search("walrus")["hits"]), 1)
        self.assertEqual(service.index.segments, [])
        self.assertEqual(service.status()["tail_lines"], 601)  # the start-up catch-up and the new line
        clock.advance(30)
        self.assertEqual(service.index.tail.lines, 0)
        self.assertEqual(service.status()["flushes"], 1)
        self.assertEqual(len(service.search("walrus")["hits"]), 1)
        self.successResultOf(service.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_inline_merges_keep_segments_logarithmic(self) -> None:
        """Small flushes on start-up are merged down to a few segments."""
        service = IndexService(self.data_dir, self.store, None, Clock(), index_options={"flush_lines": 20, "base_lines": 20})
        service.startService()
        self.assertLessEqual(len(service.index.segments), 3 * 4)
        self.assertEqual(service.search("sshd", count=True)["count"], 200)
        self.successResultOf(service.stopService())

    def test_stop_flushes(self) -> None:
        """stopService flushes the tail; a restart has nothing to catch up."""
        clock = Clock()
        service = IndexService(self.data_dir, self.store, None, clock)
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])
        index = self.open()
        self.assertEqual(index.catch_up(), 0)


class ThreadedMergeTests(TestCase):
    """Merges in a thread under the real reactor."""

    def test_threaded_merges(self) -> None:
        """Merges written in threads are swapped in; stopping waits for the running one."""
        from twisted.internet import reactor

        data_dir = self.mktemp()
        os.makedirs(data_dir)
        generate(data_dir, 3000, hosts=1, files=3, generations=2)
        service = IndexService(data_dir, MirrorStore(data_dir), None, reactor, threaded_merges=True,
                               index_options={"flush_lines": 100, "base_lines": 100})
        service.startService()
        self.assertIsNotNone(service._merging)
        merging = service._merging

        def merged(_: object) -> object:
            self.assertEqual(service.search("sshd", count=True)["count"], 1000)
            return service.stopService()

        return merging.addCallback(merged)
