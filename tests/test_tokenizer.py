"""Tests for rill.index.tokenizer: the one rule set used at index and query time."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rill.index.tokenizer import (
    WORD_RE,
    index_chunk,
    index_pairs,
    index_terms,
    pairs_indexed,
    phrase_in_words,
    phrase_regex,
    term_plan,
    words,
)

# Log-ish text: letters, digits and the punctuation the rules care about.
log_text = st.text(
    alphabet=st.sampled_from("abcXYZ019_ .:/-@=,;[]()\"'\tÄßİ"), max_size=40
)


class ExampleTests(SynchronousTestCase):
    """The documented rules, one example each."""

    def test_words_are_case_folded(self) -> None:
        """Words are maximal \\w runs, case-folded."""
        self.assertEqual(words("Failed PASSWORD for_me"), ["failed", "password", "for_me"])

    def test_ipv4_whole_and_parts(self) -> None:
        """An IPv4 address is one token, and its numbers are words."""
        terms = index_terms("from 10.0.0.5 port 22")
        self.assertTrue({"10.0.0.5", "10", "0", "5", "from", "port", "22"} <= terms)

    def test_ipv6_hostnames_paths_uuids(self) -> None:
        """IPv6 addresses, hostnames, paths and UUIDs are whole tokens."""
        line = "fe80::1 web1.example.net /var/log/syslog 550e8400-e29b-41d4-a716-446655440000 req-7f3a"
        terms = index_terms(line)
        for token in ("fe80::1", "web1.example.net", "/var/log/syslog",
                      "550e8400-e29b-41d4-a716-446655440000", "req-7f3a"):
            self.assertIn(token, terms)

    def test_key_value_whole_and_sides(self) -> None:
        """key=value pairs are indexed whole, by side and by word."""
        terms = index_terms("path=/var/log/x user=bob")
        self.assertTrue({"path=/var/log/x", "/var/log/x", "user=bob", "user", "bob", "path"} <= terms)

    def test_host_port_and_user_at_host(self) -> None:
        """host:port also yields the host, user@host the host."""
        terms = index_terms("to 10.0.0.5:22 as ops@web1.example.net")
        self.assertTrue({"10.0.0.5:22", "10.0.0.5", "ops@web1.example.net", "web1.example.net"} <= terms)

    def test_times_are_not_compounds(self) -> None:
        """Dates and times are indexed by their words only."""
        terms = index_terms("2026-01-31T12:00:59.123Z at 12:00:59")
        self.assertNotIn("2026-01-31t12:00:59.123z", terms)
        self.assertNotIn("12:00:59", terms)
        self.assertIn("2026", terms)

    def test_term_plan(self) -> None:
        """A query term is a token when it is a word or compound, else a phrase."""
        self.assertEqual(term_plan("ERROR"), ("token", "error"))
        self.assertEqual(term_plan("10.0.0.5"), ("token", "10.0.0.5"))
        self.assertEqual(term_plan("foo,bar"), ("phrase", ("foo", "bar")))


class PropertyTests(SynchronousTestCase):
    """Hypothesis: index time and query time agree."""

    @given(st.lists(log_text, max_size=8))
    @settings(max_examples=300, deadline=None)
    def test_chunk_equals_line_by_line(self, lines: list[str]) -> None:
        """index_chunk gives every line exactly its index_terms and index_pairs; a word's ids ascend."""
        postings: defaultdict[str, list[int]] = defaultdict(list)
        end = index_chunk("".join(line + "\n" for line in lines), 5, postings)
        self.assertEqual(end, 5 + len(lines))
        for k, line in enumerate(lines):
            got = {t for t, ids in postings.items() if 5 + k in ids}
            self.assertEqual(got, index_terms(line) | index_pairs(line))
            for word in set(words(line)):  # ids in a row, once per occurrence (rule 6 reads the repeats)
                self.assertEqual(postings[word].count(5 + k), words(line).count(word))
        for token, ids in postings.items():
            if WORD_RE.fullmatch(token):
                self.assertEqual(ids, sorted(ids))

    def test_pairs_of_letter_words_only(self) -> None:
        """Adjacent letter-only words give a pair token; numbers and lines break pairs."""
        postings: defaultdict[str, list[int]] = defaultdict(list)
        index_chunk("Failed password for user1 from x\ny z\n", 0, postings)
        pairs = {t for t in postings if " " in t}
        self.assertEqual(pairs, {"failed password", "password for", "from x", "y z"})
        self.assertEqual(pairs_indexed(("failed", "password", "for", "user1")), [True, True, False])

    @given(log_text)
    @settings(max_examples=300, deadline=None)
    def test_indexed_tokens_are_query_tokens(self, line: str) -> None:
        """Every indexed token, typed as a query term, resolves to itself."""
        for token in index_terms(line):
            self.assertEqual(term_plan(token), ("token", token))

    @given(st.text(alphabet=st.sampled_from("abcXYZ019_ .:/-@="), max_size=40))
    @settings(max_examples=200, deadline=None)
    def test_case_insensitive(self, line: str) -> None:
        """Tokens do not depend on case (ASCII)."""
        self.assertEqual(index_terms(line), index_terms(line.swapcase()))

    @given(log_text, st.lists(st.sampled_from(["a", "b", "abc", "0", "x_y", "1"]), min_size=1, max_size=3))
    @settings(max_examples=400, deadline=None)
    def test_phrase_regex_matches_word_sequence(self, line: str, phrase: list[str]) -> None:
        """The phrase regex used for verification equals contiguity in the word sequence."""
        expected = phrase_in_words(phrase, words(line))
        self.assertEqual(phrase_regex(phrase).search(line.casefold()) is not None, expected)

    @given(log_text)
    @settings(max_examples=200, deadline=None)
    def test_words_are_terms(self, line: str) -> None:
        """Every word of a line is one of its tokens."""
        self.assertTrue(set(words(line)) <= index_terms(line))
