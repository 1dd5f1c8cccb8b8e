"""Tests for rill.index.query (the parser) and rill.index.match (line evaluation, live filter)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rill.index.match import LineView, compile_filter, matches
from rill.index.query import (
    And,
    Field,
    MatchAll,
    Node,
    Not,
    Or,
    Phrase,
    QueryError,
    Regex,
    Term,
    Time,
    parse_query,
)

word = st.from_regex(r"[a-z0-9][a-z0-9_]{0,6}", fullmatch=True)


def render(node: Node) -> str:
    """Query text for a tree, parenthesizing every compound operand."""
    if isinstance(node, Term):
        return node.token
    if isinstance(node, Phrase):
        return '"' + " ".join(node.words) + '"'
    if isinstance(node, Field):
        return f'{node.name}:"{node.glob}"'
    if isinstance(node, Regex):
        return "/" + node.pattern + "/" + ("i" if node.ignore_case else "")
    if isinstance(node, Not):
        return "-" + _operand(node.item) if isinstance(node.item, Term) else "NOT " + _operand(node.item)
    joiner = " AND " if isinstance(node, And) else " OR "
    return joiner.join(_operand(x) for x in node.items)


def _operand(node: Node) -> str:
    return f"({render(node)})" if isinstance(node, (And, Or)) else render(node)


leaves = st.one_of(
    word.map(Term),
    st.lists(word, min_size=2, max_size=3).map(lambda ws: Phrase(tuple(ws))),
    st.tuples(st.sampled_from(["host", "path"]), st.sampled_from(["web*", "/var/log/*.log", "db 1"])).map(
        lambda t: Field(*t)
    ),
    st.tuples(st.sampled_from(["a+b", r"x\d", "fail(ed)?"]), st.booleans()).map(lambda t: Regex(*t)),
)
trees = st.recursive(
    leaves,
    lambda kids: st.one_of(
        kids.map(Not),
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(kids, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=8,
)


class ParseTests(SynchronousTestCase):
    """Examples of the grammar."""

    def test_implicit_and(self) -> None:
        """Juxtaposed terms are ANDed."""
        self.assertEqual(parse_query("error timeout").expr, And((Term("error"), Term("timeout"))))

    def test_precedence(self) -> None:
        """NOT binds tighter than AND, AND tighter than OR."""
        q = parse_query("a b OR NOT c")
        self.assertEqual(q.expr, Or((And((Term("a"), Term("b"))), Not(Term("c")))))

    def test_modifiers(self) -> None:
        """since:, until: and limit: apply to the whole query."""
        q = parse_query("error since:-15m until:2026-01-31T12:00:00Z limit:5")
        self.assertEqual(q.since, Time(-900.0, relative=True))
        self.assertEqual(q.until, Time(1769860800.0))
        self.assertEqual(q.limit, 5)

    def test_only_modifiers_match_all(self) -> None:
        """A query of only since: matches every line in range."""
        self.assertEqual(parse_query("since:-2d").expr, MatchAll())

    def test_terms_resolve_with_tokenizer(self) -> None:
        """Compound terms stay whole; others become phrases."""
        self.assertEqual(parse_query("10.0.0.5").expr, Term("10.0.0.5"))
        self.assertEqual(parse_query("a,b").expr, Phrase(("a", "b")))

    def test_iso_with_offset(self) -> None:
        """ISO 8601 with an offset is converted to UTC."""
        self.assertEqual(parse_query("since:2026-01-31T13:00:00+01:00").since, Time(1769860800.0))

    @given(trees)
    @settings(max_examples=300, deadline=None)
    def test_round_trip(self, tree: Node) -> None:
        """Rendering a tree and parsing it gives the tree back."""
        self.assertEqual(parse_query(render(tree)).expr, tree)

    @given(st.text(alphabet=st.sampled_from('ab ()"/-:ANDORT\\hostpa*1'), max_size=30))
    @settings(max_examples=500, deadline=None)
    def test_only_query_errors(self, text: str) -> None:
        """Any input parses or raises QueryError with a position inside the text (+1)."""
        try:
            parse_query(text)
        except QueryError as e:
            self.assertTrue(1 <= e.position <= len(text) + 1)
            self.assertIn(f"error at position {e.position}: expected", str(e))


class ErrorTests(SynchronousTestCase):
    """Bad queries name the position and what was expected."""

    def check(self, text: str, position: int, expected: str) -> None:
        with self.assertRaises(QueryError) as raised:
            parse_query(text)
        self.assertEqual(raised.exception.position, position)
        self.assertIn(expected, raised.exception.expected)

    def test_empty(self) -> None:
        """An empty query expects a term."""
        self.check("", 1, "a term")

    def test_dangling_or(self) -> None:
        """OR at the end expects a term after it."""
        self.check("error OR", 9, "a term")

    def test_unclosed_paren(self) -> None:
        """A missing ')' is reported at the end."""
        self.check("(a b", 5, "')'")

    def test_stray_paren(self) -> None:
        """A stray ')' is reported where it is."""
        self.check("a )", 3, "AND, OR or the end")

    def test_unterminated_phrase(self) -> None:
        """An unterminated phrase names the opening quote."""
        self.check('a "b c', 7, "closing '\"' for the one at position 3")

    def test_bad_regex(self) -> None:
        """An invalid regex is reported."""
        self.check("/[a/", 2, "a valid regular expression")

    def test_bad_since(self) -> None:
        """A bad time names since:'s value."""
        self.check("error since:yesterday", 13, "ISO 8601")

    def test_since_inside_or(self) -> None:
        """since: is only allowed at the top level."""
        self.check("a OR since:-1h", 6, "top level")

    def test_bad_limit(self) -> None:
        """limit: needs a positive number."""
        self.check("limit:x", 7, "positive whole number")

    def test_empty_field(self) -> None:
        """A field needs a value."""
        self.check("host: x", 6, "a value after host:")


class MatchTests(SynchronousTestCase):
    """Evaluating queries on single lines and the live filter."""

    def line(self, text: str, host: str = "web1", path: str = "/var/log/syslog") -> LineView:
        return LineView(host, path, text)

    def test_terms_phrases_fields(self) -> None:
        """Terms, phrases, fields and NOT combine as expected."""
        line = self.line("Failed password for invalid user admin from 10.0.0.5 port 22")
        self.assertTrue(matches(parse_query('"invalid user" 10.0.0.5 host:web*').expr, line))
        self.assertFalse(matches(parse_query('"user invalid"').expr, line))
        self.assertFalse(matches(parse_query("failed -admin").expr, line))
        self.assertTrue(matches(parse_query("path:/var/log/* /pass\\w+/").expr, line))

    def test_compile_filter(self) -> None:
        """compile_filter accepts published messages by the same rules, since: included."""
        accept = compile_filter("error host:web1 since:-1h", clock=lambda: 1769860800.0)
        message = {"host": "web1", "path": "/x", "generation": 1, "offset": 0,
                   "datetime": "2026-01-31T11:30:00.000Z", "line": "an ERROR here"}
        self.assertTrue(accept(message))
        self.assertFalse(accept(dict(message, datetime="2026-01-31T10:30:00.000Z")))
        self.assertFalse(accept(dict(message, host="web2")))

    def test_compile_filter_rejects_bad_query(self) -> None:
        """A bad query fails at compile time."""
        self.assertRaises(QueryError, compile_filter, "(error")
