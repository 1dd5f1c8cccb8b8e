"""Evaluating a parsed query against one line: pure, no index involved.

This is what the index uses to verify candidates (phrases, regexes) and what
``rill tail --grep`` uses on the live stream (:func:`compile_filter`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from fnmatch import fnmatchcase
from functools import lru_cache

from rill.index.query import And, Field, MatchAll, Node, Not, Or, Phrase, Query, Regex, Term, parse_query
from rill.index.tokenizer import index_terms, phrase_regex


class LineView:
    """One line with its host and path; tokens and folding computed lazily."""

    __slots__ = ("host", "path", "text", "_folded", "_terms")

    def __init__(self, host: str, path: str, text: str) -> None:
        self.host = host
        self.path = path
        self.text = text
        self._folded: str | None = None
        self._terms: set[str] | None = None

    @property
    def folded(self) -> str:
        if self._folded is None:
            self._folded = self.text.casefold()
        return self._folded

    @property
    def terms(self) -> set[str]:
        if self._terms is None:
            self._terms = index_terms(self.text)
        return self._terms


@lru_cache(maxsize=256)
def _phrase_re(words: tuple[str, ...]) -> re.Pattern[str]:
    return phrase_regex(words)


@lru_cache(maxsize=256)
def _regex(node: Regex) -> re.Pattern[str]:
    return node.compiled()


def field_matches(node: Field, host: str, path: str) -> bool:
    """``host:``/``path:`` glob match (``fnmatch`` rules, case-sensitive)."""
    return fnmatchcase(host if node.name == "host" else path, node.glob)


def matches(node: Node, line: LineView) -> bool:
    """True when ``line`` satisfies the boolean expression ``node``."""
    if isinstance(node, Term):
        return node.token in line.terms
    if isinstance(node, Phrase):
        return _phrase_re(node.words).search(line.folded) is not None
    if isinstance(node, And):
        return all(matches(x, line) for x in node.items)
    if isinstance(node, Or):
        return any(matches(x, line) for x in node.items)
    if isinstance(node, Not):
        return not matches(node.item, line)
    if isinstance(node, Regex):
        return _regex(node).search(line.text) is not None
    if isinstance(node, Field):
        return field_matches(node, line.host, line.path)
    if isinstance(node, MatchAll):
        return True
    raise TypeError(f"not a query node: {node!r}")


def iso_to_seconds(text: str) -> float:
    """Parse the ISO 8601 datetimes Rill publishes (``...Z`` or with an offset)."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text).timestamp()


def in_range(query: Query, seconds: float, now: float) -> bool:
    """True when ``seconds`` is within the query's ``since:`` (inclusive) and ``until:`` (exclusive)."""
    if query.since is not None and seconds < query.since.resolve(now):
        return False
    if query.until is not None and seconds >= query.until.resolve(now):
        return False
    return True


def compile_filter(query: str, clock: Callable[[], float] = time.time) -> Callable[[dict[str, object]], bool]:
    """A predicate over published line messages (host, path, datetime, line, ...).

    Raises :class:`~rill.index.query.QueryError` at once for a bad query.
    """
    parsed = parse_query(query)
    timed = parsed.since is not None or parsed.until is not None

    def accept(message: dict[str, object]) -> bool:
        line = LineView(str(message.get("host", "")), str(message.get("path", "")), str(message.get("line", "")))
        if timed and not in_range(parsed, iso_to_seconds(str(message.get("datetime"))), clock()):
            return False
        return matches(parsed.expr, line)

    return accept
