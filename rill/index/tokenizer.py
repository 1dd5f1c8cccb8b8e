"""The one tokenizer Rill uses, at index time and at query time alike.

Pure: no I/O, no Twisted.  The rule set, applied to the line after
``str.casefold()``:

1. **Words.** A word is a maximal run of ``\\w`` characters (Unicode letters,
   digits and the underscore).  The words of a line, in order, are its *word
   sequence*; a phrase matches when its words appear contiguously in it
   (so punctuation between words is ignored by phrases, as in most engines).
2. **Compounds.** A compound is a match of :data:`COMPOUND_RE`: two or more
   words joined by any of ``. : / - @ =`` (optionally led by one ``/``).  It
   is indexed whole, so IPv4 (``10.0.0.5``) and IPv6 (``fe80::1``) addresses,
   hostnames (``web1.example.net``), paths (``/var/log/syslog``), UUIDs,
   request ids (``req-7f3a9c``) and ``key=value`` pairs are each one token,
   besides their words.
3. **Parts of compounds.** From each compound, these are indexed too when they
   are compounds themselves: each side of the first ``=`` (``path=/a/b`` gives
   ``path=/a/b``, ``/a/b``), the address of ``host:port`` (``10.0.0.5:22``
   gives ``10.0.0.5``) and the host of ``user@host``.
4. **Not compounds.** Dates and times (``2026-01-31``, ``12:00:59.123``,
   ``2026-01-31t12:00:59.123z``) are not indexed whole -- nearly every line
   has a unique one -- only their words are.  Use ``since:``/``until:``.

A query term is resolved with the same rules (:func:`term_plan`): a single
word or a compound is one token; anything else is the phrase of its words.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable
from itertools import accumulate, compress, repeat
from operator import add, eq, not_
from typing import Literal

WORD_RE = re.compile(r"\w+")
COMPOUND_RE = re.compile(r"(?<!\w)/?\w++(?:[.:/@=-]+\w++)+")
TIME_RE = re.compile(
    r"(?:\d{4}-\d\d-\d\d(?:t\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?z?)?"
    r"|\d\d?:\d\d(?::\d\d(?:[.,]\d+)?)?z?)"
)
_PORT_RE = re.compile(r":\d+$")
_CHUNK_WORDS_RE = re.compile(r"\w+|\n")
_CHUNK_COMPOUNDS_RE = re.compile(COMPOUND_RE.pattern + r"|\n")
_SPECIAL_RE = re.compile(r"[=@]|:\d+$")

__all__ = [
    "WORD_RE",
    "COMPOUND_RE",
    "index_terms",
    "index_chunk",
    "is_indexed",
    "words",
    "normalize",
    "term_plan",
    "phrase_regex",
    "phrase_in_words",
]


def normalize(text: str) -> str:
    """Case-fold ``text`` exactly as the index does."""
    return text.casefold()


def _is_compound(text: str) -> bool:
    return COMPOUND_RE.fullmatch(text) is not None and TIME_RE.fullmatch(text) is None


def _compound_parts(compound: str) -> list[str]:
    """The extra tokens a compound yields (rule 3), compounds only."""
    parts = []
    if "=" in compound:
        parts.extend(compound.split("=", 1))
    if "@" in compound:
        parts.append(compound.rsplit("@", 1)[1])
    stripped = _PORT_RE.sub("", compound)
    if stripped != compound:
        parts.append(stripped)
    return [p for p in parts if _is_compound(p)]


def _compound_tokens(compound: str) -> list[str]:
    """A compound and its parts (rules 2-4); empty for a date or time."""
    if compound[0].isdigit() and TIME_RE.fullmatch(compound) is not None:
        return []
    if "=" in compound or "@" in compound or ":" in compound:
        return [compound, *_compound_parts(compound)]
    return [compound]


def index_terms(line: str) -> set[str]:
    """Every token of ``line``: its words, compounds and compound parts."""
    text = line.casefold()
    terms = set(WORD_RE.findall(text))
    for compound in COMPOUND_RE.findall(text):
        terms.update(_compound_tokens(compound))
    return terms


def is_indexed(token: str) -> bool:
    """False for the date/time compounds :func:`index_chunk` lets through (rule 4)."""
    return not (token[0].isdigit() and TIME_RE.fullmatch(token) is not None)


def _append_all(postings: defaultdict[str, list[int]], tokens: list[str], ids: Iterable[int]) -> None:
    # map/accumulate run in C: about a third faster than a Python loop per token
    deque(map(list.append, map(postings.__getitem__, tokens), ids), maxlen=0)


def index_chunk(text: str, first: int, postings: defaultdict[str, list[int]]) -> int:
    """Add the tokens of every line of ``text`` (each line ended by ``\\n``) to ``postings``.

    Line ``k`` of the chunk gets id ``first + k``.  For the tokens that pass
    :func:`is_indexed`, the result equals :func:`index_terms` line by line,
    with ids possibly repeated within a list (Roaring bitmaps remove them);
    date/time compounds are left in and dropped when a segment is written.
    Returns the id after the last line.
    """
    folded = text.casefold()
    words = _CHUNK_WORDS_RE.findall(folded)
    _append_all(postings, words, accumulate(map(eq, words, repeat("\n")), add, initial=first))
    compounds = _CHUNK_COMPOUNDS_RE.findall(folded)
    ids = list(accumulate(map(eq, compounds, repeat("\n")), add, initial=first))
    keep = list(map(not_, map(TIME_RE.fullmatch, compounds)))  # no dates and times (C speed)
    _append_all(postings, list(compress(compounds, keep)), compress(ids, keep))
    for j in compress(range(len(compounds)), map(_SPECIAL_RE.search, compounds)):
        for part in _compound_parts(compounds[j]):
            postings[part].append(ids[j])
    postings.pop("\n", None)
    return ids[-1]


def words(text: str) -> list[str]:
    """The word sequence of ``text`` (rule 1), case-folded."""
    return WORD_RE.findall(text.casefold())


def term_plan(text: str) -> tuple[Literal["token"], str] | tuple[Literal["phrase"], tuple[str, ...]]:
    """How a query term matches: one token, or the phrase of its words."""
    folded = text.casefold()
    if WORD_RE.fullmatch(folded) or _is_compound(folded):
        return ("token", folded)
    return ("phrase", tuple(WORD_RE.findall(folded)))


def phrase_in_words(phrase: tuple[str, ...] | list[str], sequence: list[str]) -> bool:
    """True when ``phrase`` occurs contiguously in the word ``sequence``."""
    n = len(phrase)
    if n == 0:
        return True
    phrase = list(phrase)
    first = phrase[0]
    for i in range(len(sequence) - n + 1):
        if sequence[i] == first and sequence[i : i + n] == phrase:
            return True
    return False


def phrase_regex(phrase: tuple[str, ...] | list[str]) -> re.Pattern[str]:
    """A regex over the case-folded line equivalent to :func:`phrase_in_words`.

    Words are maximal ``\\w`` runs, so consecutive words are separated by one
    or more ``\\W``; the look-arounds pin the first and last word's edges.
    """
    # ``w(?<!\ww)`` is ``(?<!\w)w`` with the literal first, which lets the
    # regex engine scan for it quickly: about twice as fast on log lines.
    first = re.escape(phrase[0])
    body = r"\W+".join(re.escape(w) for w in phrase[1:])
    head = first + r"(?<!\w" + first + ")"
    return re.compile(head + (r"\W+" + body if body else "") + r"(?!\w)")
