"""Rill's query language: a pure lexer and recursive-descent parser.

Grammar (``AND``, ``OR``, ``NOT`` are upper-case keywords; lower-case ``and``
is an ordinary term)::

    query    := or_expr EOF
    or_expr  := and_expr ("OR" and_expr)*
    and_expr := unary (["AND"] unary)*          -- juxtaposition means AND
    unary    := ("NOT" | "-") unary | primary
    primary  := "(" or_expr ")" | PHRASE | REGEX | FIELD | TERM
    PHRASE   := '"' chars '"'                   -- \\" escapes a quote
    REGEX    := '/' chars '/' ["i"]             -- \\/ escapes a slash
    FIELD    := ("host" | "path") ":" value     -- glob, value may be "quoted"
              | ("since" | "until") ":" time    -- ISO 8601 or -15m, -2h, -2d, -1w
              | "limit" ":" digits

``since:``, ``until:`` and ``limit:`` apply to the whole query and may only
appear at its top level (not inside ``OR``, ``NOT`` or parentheses).  Positions
in errors are 1-based character columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from rill.index.tokenizer import term_plan, words


class QueryError(ValueError):
    """A query that does not parse; names the 1-based position and what was expected."""

    def __init__(self, position: int, expected: str) -> None:
        super().__init__(f"error at position {position}: expected {expected}")
        self.position = position
        self.expected = expected


# ------------------------------------------------------------------ the tree


@dataclass(frozen=True)
class Term:
    """One token (a word or a compound), case-folded."""

    token: str


@dataclass(frozen=True)
class Phrase:
    """Words that must appear contiguously."""

    words: tuple[str, ...]


@dataclass(frozen=True)
class Regex:
    """A regular expression applied to the decoded line."""

    pattern: str
    ignore_case: bool = False

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE if self.ignore_case else 0)


@dataclass(frozen=True)
class Field:
    """``host:`` or ``path:`` matched as a glob (``fnmatch``, case-sensitive)."""

    name: str
    glob: str


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class MatchAll:
    """Every line (a query of only ``since:``/``until:``/``limit:``)."""


Node = Term | Phrase | Regex | Field | And | Or | Not | MatchAll


@dataclass(frozen=True)
class Time:
    """An absolute time (unix seconds) or one relative to now (``relative=True``)."""

    seconds: float
    relative: bool = False

    def resolve(self, now: float) -> float:
        return now + self.seconds if self.relative else self.seconds


@dataclass(frozen=True)
class Query:
    expr: Node
    since: Time | None = None
    until: Time | None = None
    limit: int | None = None
    highlights: tuple[str, ...] = field(default=(), compare=False)


# ------------------------------------------------------------------ the lexer

_SPECIAL = '()"'
_KEYWORDS = ("AND", "OR", "NOT")
_FIELDS = ("host", "path", "since", "until", "limit")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE_RE = re.compile(r"-(\d+(?:\.\d+)?)([smhdw])")
_ISO_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?)?"
    r"(Z|[+-]\d\d:?\d\d)?"
)


@dataclass(frozen=True)
class Token:
    kind: str  # word | phrase | regex | field | ( | ) | AND | OR | NOT | - | end
    text: str
    position: int  # 1-based
    value: object = None


def _read_quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """Read from just after an opening ``quote``; return (content, index after close)."""
    out = []
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1] if quote == '"' or text[i + 1] == quote else "\\\\")
            i += 2
        elif ch == quote:
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise QueryError(len(text) + 1, f"closing {quote!r} for the one at position {start}")


def _bare_end(text: str, i: int) -> int:
    while i < len(text) and not text[i].isspace() and text[i] not in _SPECIAL:
        i += 1
    return i


def tokenize_query(text: str) -> list[Token]:
    """Split a query into tokens; raises :class:`QueryError`."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        pos = i + 1
        if ch.isspace():
            i += 1
        elif ch in "()":
            tokens.append(Token(ch, ch, pos))
            i += 1
        elif ch == '"':
            content, i = _read_quoted(text, i + 1, '"')
            tokens.append(Token("phrase", content, pos))
        elif ch == "/":
            content, i = _read_quoted(text, i + 1, "/")
            flag = i < len(text) and text[i] == "i" and _bare_end(text, i) == i + 1
            i += 1 if flag else 0
            tokens.append(Token("regex", content, pos, value=flag))
        elif ch == "-" and i + 1 < len(text) and not text[i + 1].isspace() and text[i + 1] != ")":
            tokens.append(Token("-", ch, pos))
            i += 1
        else:
            i = _lex_bare(text, i, tokens)
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _lex_bare(text: str, i: int, tokens: list[Token]) -> int:
    end = _bare_end(text, i)
    word = text[i:end]
    pos = i + 1
    name, colon, rest = word.partition(":")
    if colon and name in _FIELDS:
        if not rest and end < len(text) and text[end] == '"':
            rest, end = _read_quoted(text, end + 1, '"')
        elif not rest:
            raise QueryError(end + 1, f"a value after {name}:")
        tokens.append(Token("field", name, pos, value=rest))
    elif word in _KEYWORDS:
        tokens.append(Token(word, word, pos))
    else:
        tokens.append(Token("word", word, pos))
    return end


# ------------------------------------------------------------------ the parser


def parse_time(value: str, position: int) -> Time:
    """ISO 8601 (naive means UTC) or relative like ``-15m``; ``now`` too."""
    if value == "now":
        return Time(0.0, relative=True)
    m = _RELATIVE_RE.fullmatch(value)
    if m:
        return Time(-float(m.group(1)) * _UNITS[m.group(2)], relative=True)
    m = _ISO_RE.fullmatch(value)
    if m:
        try:
            return Time(_iso_seconds(m))
        except ValueError:
            pass
    raise QueryError(position, "an ISO 8601 time (2026-01-31T12:00:00Z) or a relative time like -15m")


def _iso_seconds(m: re.Match[str]) -> float:
    y, mo, d, h, mi, s, frac, zone = m.groups()
    tz = timezone.utc
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        from datetime import timedelta

        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    micro = int((frac or "0").ljust(6, "0"))
    when = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), micro, tzinfo=tz)
    return when.timestamp()


_PRIMARY = "a term, a phrase, a regex, a field or '('"


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize_query(text)
        self.i = 0
        self.depth = 0
        self.modifiers: dict[str, object] = {}
        self.modifier_positions: list[tuple[str, int]] = []
        self.highlights: list[str] = []

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def parse(self) -> Query:
        expr = self.or_expr()
        end = self.peek()
        if end.kind != "end":
            raise QueryError(end.position, "AND, OR or the end of the query" if end.kind == ")" else _PRIMARY)
        return Query(
            expr,
            since=self.modifiers.get("since"),  # type: ignore[arg-type]
            until=self.modifiers.get("until"),  # type: ignore[arg-type]
            limit=self.modifiers.get("limit"),  # type: ignore[arg-type]
            highlights=tuple(self.highlights),
        )

    def or_expr(self) -> Node:
        first_modifier = len(self.modifier_positions)
        items = [self.and_expr()]
        while self.peek().kind == "OR":
            self.take()
            items.append(self.and_expr())
        if len(items) == 1:
            return items[0]
        if len(self.modifier_positions) > first_modifier:
            name, position = self.modifier_positions[first_modifier]
            raise QueryError(position, f"{name}: only at the top level of the query, outside OR")
        return Or(tuple(_nonempty(x, self) for x in items))

    def and_expr(self) -> Node:
        items = [self.unary()]
        while True:
            kind = self.peek().kind
            if kind == "AND":
                self.take()
                items.append(self.unary())
            elif kind in ("word", "phrase", "regex", "field", "(", "-", "NOT"):
                items.append(self.unary())
            else:
                break
        real = tuple(x for x in items if x is not None)
        if not real:
            return MatchAll()
        return real[0] if len(real) == 1 else And(real)

    def unary(self) -> Node | None:
        token = self.peek()
        if token.kind in ("NOT", "-"):
            self.take()
            self.depth += 1
            item = self.unary()
            self.depth -= 1
            return Not(_nonempty(item, self, token.position))
        return self.primary()

    def primary(self) -> Node | None:
        token = self.take()
        if token.kind == "(":
            self.depth += 1
            expr = self.or_expr()
            self.depth -= 1
            close = self.take()
            if close.kind != ")":
                raise QueryError(close.position, "')' to close the '(' at position %d" % token.position)
            return expr
        if token.kind == "word":
            return self.word(token)
        if token.kind == "phrase":
            phrase = tuple(words(token.text))
            if not phrase:
                raise QueryError(token.position, "a phrase with letters or digits")
            self.highlights.append(token.text)
            return Phrase(phrase)
        if token.kind == "regex":
            return self.regex(token)
        if token.kind == "field":
            return self.field(token)
        raise QueryError(token.position, _PRIMARY)

    def word(self, token: Token) -> Node:
        kind, value = term_plan(token.text)
        if kind == "token":
            self.highlights.append(token.text)
            return Term(value)  # type: ignore[arg-type]
        if not value:
            raise QueryError(token.position, "a term with letters or digits")
        self.highlights.append(token.text)
        return Phrase(value)  # type: ignore[arg-type]

    def regex(self, token: Token) -> Node:
        if not token.text:
            raise QueryError(token.position, "a non-empty regular expression")
        node = Regex(token.text, bool(token.value))
        try:
            node.compiled()
        except re.error as e:
            raise QueryError(token.position + 1 + (e.pos or 0), f"a valid regular expression ({e.msg})") from None
        return node

    def field(self, token: Token) -> Node | None:
        value = str(token.value)
        if token.text in ("host", "path"):
            return Field(token.text, value)
        if self.depth:
            raise QueryError(token.position, f"{token.text}: only at the top level of the query")
        if token.text in self.modifiers:
            raise QueryError(token.position, f"at most one {token.text}:")
        self.modifier_positions.append((token.text, token.position))
        if token.text == "limit":
            if not value.isdigit() or int(value) < 1:
                raise QueryError(token.position + 6, "a positive whole number after limit:")
            self.modifiers["limit"] = int(value)
        else:
            self.modifiers[token.text] = parse_time(value, token.position + len(token.text) + 1)
        return None


def _nonempty(item: Node | None, parser: _Parser, position: int | None = None) -> Node:
    if item is None or isinstance(item, MatchAll):
        where = position if position is not None else parser.peek().position
        raise QueryError(where, _PRIMARY)
    return item


def parse_query(text: str) -> Query:
    """Parse ``text`` into a :class:`Query`; raises :class:`QueryError`."""
    return _Parser(text).parse()
