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

5. **Word pairs (for phrases).** Two words adjacent in the word sequence
   (within a line) are also indexed as one pair token, ``"first second"``
   (:func:`pair_token`), when both are letters only (``str.isalpha``): the
   pairs of text words stay few while pairs with numbers and ids, nearly all
   unique, would swell the index.  A phrase of such words is answered from
   the pairs alone (see ``rill.index.search``).  Pair tokens hold a space, so
   no query term is ever one.
6. **Repeats (for phrases).** A letter-only word that occurs twice or more in
   a line also gives the line its repeat token, the word followed by
   :data:`REPEATED` (derived when a segment is written, from the word's ids).

:func:`index_chunk` is the bulk path (the index build): one regex pass per
rule over a whole chunk of lines, then C-level ``map``/``compress`` steps
with no Python code per token or per line.  :func:`index_terms` and
:func:`index_pairs` are the line-by-line reference it is tested against.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable
from itertools import chain, compress, count, repeat
from operator import add, and_, contains, eq, itemgetter, methodcaller, not_, sub, truth
from typing import Literal

WORD_RE = re.compile(r"\w+")
COMPOUND_RE = re.compile(r"(?<!\w)/?\w++(?:[.:/@=-]+\w++)+")
TIME_RE = re.compile(
    r"(?:\d{4}-\d\d-\d\d(?:t\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?z?)?"
    r"|\d\d?:\d\d(?::\d\d(?:[.,]\d+)?)?z?)"
)
_PORT_RE = re.compile(r":\d+$")
REPEATED = "\x00"  # suffix of a repeat token (rule 6): sorts right after the word itself
_CHUNK_WORDS_RE = re.compile(r"\w+|\n")
_CHUNK_COMPOUNDS_RE = re.compile(COMPOUND_RE.pattern + r"|\n")

__all__ = [
    "WORD_RE",
    "COMPOUND_RE",
    "index_terms",
    "index_chunk",
    "index_pairs",
    "is_indexed",
    "pair_token",
    "repeat_token",
    "pairs_indexed",
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
    """False for date/time compounds, which are not tokens (rule 4)."""
    return not (token[0].isdigit() and TIME_RE.fullmatch(token) is not None)


def pair_token(first: str, second: str) -> str:
    """The token of two adjacent letter-only words (rule 5)."""
    return first + " " + second


def repeat_token(word: str) -> str:
    """The repeat token of a letter-only word (rule 6)."""
    return word + REPEATED


def pairs_indexed(phrase: tuple[str, ...] | list[str]) -> list[bool]:
    """For each adjacent pair of ``phrase``, whether it is indexed as a pair token (rule 5)."""
    alpha = [w.isalpha() for w in phrase]
    return [a and b for a, b in zip(alpha, alpha[1:])]


def index_pairs(line: str) -> set[str]:
    """The pair tokens of ``line`` (rule 5), line by line: the reference for :func:`index_chunk`."""
    sequence = words(line)
    return {pair_token(a, b) for a, b in zip(sequence, sequence[1:]) if a.isalpha() and b.isalpha()}


def _append_all(postings: defaultdict[str, list[int]], tokens: Iterable[str], ids: Iterable[int]) -> None:
    deque(map(list.append, map(postings.__getitem__, tokens), ids), maxlen=0)


def _line_ids(tokens: list[str], first: int) -> list[int]:
    """The line id of each token, each line's tokens ended by ``"\\n"`` (one int object per line)."""
    ends = list(compress(count(), map(eq, tokens, repeat("\n"))))
    return list(chain.from_iterable(map(repeat, count(first), map(sub, ends, chain((-1,), ends)))))


def _compound_parts_bulk(compounds: list[str], ids: list[int]) -> tuple[list[str], list[int]]:
    """Rule 3 over a list of compounds, each step a C-level map: (parts that are compounds, their ids)."""
    parts: list[str] = []
    where: list[int] = []
    for sep, method, sides in (("=", "partition", (0, 2)), ("@", "rpartition", (2,))):
        mask = list(map(contains, compounds, repeat(sep)))
        split = list(map(methodcaller(method, sep), compress(compounds, mask)))
        for side in sides:
            parts += map(itemgetter(side), split)
            where += compress(ids, mask)
    mask = list(map(_PORT_RE.search, compounds))
    parts += map(_PORT_RE.sub, repeat(""), compress(compounds, mask))
    where += compress(ids, mask)
    good = list(map(and_, map(truth, map(COMPOUND_RE.fullmatch, parts)), map(not_, map(TIME_RE.fullmatch, parts))))
    return list(compress(parts, good)), list(compress(where, good))


def index_chunk(text: str, first: int, postings: defaultdict[str, list[int]]) -> int:
    """Add the tokens of every line of ``text`` (each line ended by ``\\n``) to ``postings``.

    Line ``k`` of the chunk gets id ``first + k``.  Line by line, the tokens
    equal :func:`index_terms` plus :func:`index_pairs`.  A word's ids ascend,
    repeated in a row when it occurs twice in a line (Roaring bitmaps remove
    repeats; rule 6 reads them).  Returns the id after the last line.
    """
    folded = text.casefold()
    found = _CHUNK_WORDS_RE.findall(folded)
    ids = _line_ids(found, first)
    _append_all(postings, found, ids)
    alpha = list(map(str.isalpha, found))  # the newline is not alpha: no pair spans two lines
    pairs = list(map(and_, alpha, alpha[1:]))
    firsts = map(add, compress(found, pairs), repeat(" "))
    _append_all(postings, map(add, firsts, compress(found[1:], pairs)), compress(ids, pairs))
    found = _CHUNK_COMPOUNDS_RE.findall(folded)
    keep = list(map(not_, map(TIME_RE.fullmatch, found)))  # no dates and times (rule 4)
    compounds = list(compress(found, keep))
    cids = list(compress(_line_ids(found, first), keep))
    _append_all(postings, compounds, cids)
    _append_all(postings, *_compound_parts_bulk(compounds, cids))
    postings.pop("\n", None)
    return ids[-1] + 1 if ids else first


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
