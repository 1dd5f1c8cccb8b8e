"""Acceptance 1: on a 200,000-line corpus, random queries from the grammar give
exactly the hits of a naive line-by-line evaluation over the mirror."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rill.index.core import Index
from rill.index.corpus import START_MS, generate, iso, iter_lines, write_generation
from rill.index.query import And, Field, MatchAll, Not, Or, Phrase, Regex, Term, parse_query
from rill.index.tokenizer import index_terms, phrase_in_words, words
from rill.store.mirror import MirrorStore

NOW = START_MS / 1000 + 86400  # "now" for relative since:/until:


@dataclass
class Line:
    host: str
    path: str
    generation: int
    offset: int
    text: str
    dt: int
    terms: set[str]
    words: list[str]

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.dt, self.host, self.path, self.generation, self.offset)


def naive(node: Any, line: Line) -> bool:
    """The reference semantics, written independently of the index and of rill.index.match."""
    if isinstance(node, Term):
        return node.token in line.terms
    if isinstance(node, Phrase):
        return phrase_in_words(node.words, line.words)
    if isinstance(node, Regex):
        return re.search(node.pattern, line.text, re.IGNORECASE if node.ignore_case else 0) is not None
    if isinstance(node, Field):
        return fnmatchcase(line.host if node.name == "host" else line.path, node.glob)
    if isinstance(node, And):
        return all(naive(x, line) for x in node.items)
    if isinstance(node, Or):
        return any(naive(x, line) for x in node.items)
    if isinstance(node, Not):
        return not naive(node.item, line)
    assert isinstance(node, MatchAll)
    return True


def naive_search(lines: list[Line], query: str) -> list[tuple[Any, ...]]:
    parsed = parse_query(query)
    lo = parsed.since.resolve(NOW) * 1000 if parsed.since else None
    hi = parsed.until.resolve(NOW) * 1000 if parsed.until else None
    hits = [
        line.key
        for line in lines
        if (lo is None or line.dt >= int(lo)) and (hi is None or line.dt < int(hi)) and naive(parsed.expr, line)
    ]
    hits.sort(reverse=True)
    return [(k[1], k[2], k[3], k[4]) for k in hits]


COMMON = ["failed", "password", "sshd", "nginx", "get", "info", "error", "debug", "warn", "user", "from",
          "port", "200", "404", "500", "app", "for", "invalid", "root", "admin", "payment", "ssh2", "http"]
RARE = ["zanzibar", "quokka", "kumquat", "xylophone", "nothere", "walrus"]
COMPOUNDS = ["user=root", "user=www-data", "http/1.1", "www-data", "curl/8.5.0", "kube-probe/1.29"]
FIELDS = ["host:web01", "host:web0[12]", "host:*3", "path:*auth*", "path:/var/log/*", 'path:"/srv/app/*"']
REGEXES = ["/Failed password for (root|admin)/", r"/took \d{4}ms/", "/ERROR/", "/error/i", r"/ 50[02] /"]
HOURS = [iso(START_MS + h * 3_600_000) for h in range(0, 25, 3)]


def leaf(phrases: list[str], compounds: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(COMMON),
        st.sampled_from(RARE),
        st.sampled_from(COMPOUNDS + compounds),
        st.sampled_from(phrases).map(lambda p: f'"{p}"'),
        st.sampled_from(FIELDS),
        st.sampled_from(REGEXES),
    )


def expressions(phrases: list[str], compounds: list[str]) -> st.SearchStrategy[str]:
    return st.recursive(
        leaf(phrases, compounds),
        lambda kids: st.one_of(
            kids.map(lambda x: f"-{x}" if not x.startswith(("-", "/", '"')) else f"NOT ({x})"),
            st.tuples(kids, st.sampled_from([" ", " AND "]), kids).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
            st.tuples(kids, kids).map(lambda t: f"({t[0]} OR {t[1]})"),
        ),
        max_leaves=4,
    )


def modifiers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        st.sampled_from(HOURS).map(lambda h: f" since:{h}"),
        st.sampled_from(HOURS).map(lambda h: f" until:{h}"),
        st.tuples(st.sampled_from(HOURS), st.sampled_from(HOURS)).map(lambda t: f" since:{min(t)} until:{max(t)}"),
        st.sampled_from(["-2h", "-12h", "-1d"]).map(lambda r: f" since:{r}"),
    )


class Corpus:
    """Built once per test run (trial has no setUpClass), removed at exit."""

    built: Corpus | None = None

    @classmethod
    def get(cls) -> Corpus:
        if cls.built is None:
            cls.built = cls()
            atexit.register(cls.built.close)
        return cls.built

    def __init__(self) -> None:
        cls = self
        cls.data_dir = tempfile.mkdtemp(prefix="rill-acceptance-")
        generate(cls.data_dir, 200_004, hosts=4, files=3, generations=2)
        write_generation(cls.data_dir, "web05", "/var/log/odd name.log", 1,
                         [(START_MS + 3_600_000 * k, f"odd walrus line {k} user=root") for k in range(24)],
                         partial=b"partial walrus")
        index = Index(cls.data_dir, MirrorStore(cls.data_dir), now=lambda: NOW, flush_lines=30_000, base_lines=30_000)
        index.catch_up()
        index.flush()
        forgotten = ("web02", "/srv/app/app.log", 1)
        index.forget([forgotten])  # retention, index side: merges must rebuild around it
        index.merge_all()
        write_generation(cls.data_dir, "web05", "/var/log/odd name.log", 2,
                         [(START_MS + 60_000 * k, f"tail walrus {k} from 10.9.9.{k % 3}") for k in range(500)],
                         state="live")
        index.ingest("web05", "/var/log/odd name.log", 2)  # stays in the in-memory tail
        cls.index = index
        cls.lines = [
            Line(h, p, g, o, raw.decode(), round(t * 1000), index_terms(raw.decode()), words(raw.decode()))
            for h, p, g, o, raw, t in iter_lines(cls.data_dir)
            if (h, p, g) != forgotten
        ]
        texts = [line.text for line in cls.lines[::997]]
        cls.phrases = [" ".join(words(t)[i : i + n]) for t in texts for i, n in ((7, 2), (9, 3))]
        cls.compounds = [t.split()[-1] for t in texts if "=" in t.split()[-1]][:20] + ["10.9.9.1"]

    def close(self) -> None:
        self.index.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class BruteForceTests(SynchronousTestCase):
    """Index answers equal brute force on >= 200,000 lines (segments, merges, tail, retention)."""

    def setUp(self) -> None:
        corpus = Corpus.get()
        self.index, self.lines = corpus.index, corpus.lines
        self.phrases, self.compounds = corpus.phrases, corpus.compounds

    def test_corpus_shape(self) -> None:
        """The corpus has >= 200,000 lines in several segments plus a tail."""
        self.assertGreaterEqual(len(self.lines), 200_000 - 20_000)
        self.assertGreaterEqual(sum(s.lines for s in self.index.segments) + self.index.tail.lines, 180_000)
        self.assertGreaterEqual(len(self.index.segments), 2)
        self.assertEqual(self.index.tail.lines, 500)

    def check(self, query: str, page: int) -> None:
        expected = naive_search(self.lines, query)
        result = self.index.search(query, page_size=page, count=True)
        self.assertEqual(result["count"], len(expected), query)
        got = [(h["host"], h["path"], h["generation"], h["offset"]) for h in result["hits"]]
        self.assertEqual(got, expected[:page], query)
        if result["cursor"]:
            second = self.index.search(query, cursor=result["cursor"], page_size=page)
            got = [(h["host"], h["path"], h["generation"], h["offset"]) for h in second["hits"]]
            self.assertEqual(got, expected[page : 2 * page], query)
        else:
            self.assertLessEqual(len(expected), page, query)
        if len(expected) <= 3000:
            everything = self.index.search(query, page_size=5000)
            self.assertEqual(len(everything["hits"]), len(expected), query)

    def test_random_queries(self) -> None:
        """Hypothesis draws queries from the grammar; hits, order, pages and count equal brute force."""

        @given(expressions(self.phrases, self.compounds), modifiers(), st.sampled_from([1, 7, 100]))
        @settings(max_examples=int(os.environ.get("RILL_ACCEPTANCE_EXAMPLES", "60")), deadline=None,
                  suppress_health_check=list(HealthCheck))
        def run(expr: str, mods: str, page: int) -> None:
            self.check(expr + mods, page)

        run()

    def test_fixed_queries(self) -> None:
        """A few hand-picked queries covering each construct."""
        for query in ["walrus", '"tail walrus"', "10.9.9.1", "host:web05 since:2026-01-01T05:00:00Z",
                      "failed -root", "(error OR warn) host:web01", "/ERROR/ payment", "since:-1h"]:
            self.check(query, 50)
