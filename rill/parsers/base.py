"""The line parser contract and the ``raw`` parser.

A parser turns one line (bytes, without its newline) into a record::

    {"datetime": "2026-11-26T02:21:33.123Z", "contents": "<the line>", ...fields}

``contents`` is the line decoded as UTF-8 with ``surrogateescape``, so
``record["contents"].encode("utf-8", "surrogateescape") == line`` always holds: undecodable
bytes are escaped, never dropped.  ``parse`` never raises and does no I/O.

A parser instance keeps one piece of state: the time of the last line it parsed, which an
unparsable line (a stack trace's continuation, a garbled line) inherits, flagged with
``"parse_error": True``.  So make one instance per watched file.
"""

from __future__ import annotations

from datetime import timezone, tzinfo
from typing import Any

from rill.parsers._time import TimeResolver, format_ms, received_ms

Record = dict[str, Any]

# Names a parser's fields must not take: the record's own keys, its flags, and the keys
# Rill's published messages put around a record (host, path, generation, offset, line).
RESERVED_FIELDS = frozenset(
    ("datetime", "contents", "parse_error", "parser_fault", "host", "path", "generation", "offset", "line")
)


class LineParser:
    """Base class: subclasses implement :meth:`_parse`; :meth:`parse` handles failure."""

    name = "raw"

    def __init__(self, zone: tzinfo = timezone.utc) -> None:
        self.times = TimeResolver(zone)
        self.previous_ms: int | None = None

    def parse(self, line: bytes, received: float) -> Record:
        """The record for ``line``, received at ``received`` (unix seconds).  Never raises."""
        text = line.decode("utf-8", "surrogateescape")
        # Built in place, datetime first (a placeholder until the parser has found it):
        # one dict a line instead of two is worth ~10% of a parser's time.
        record: Record = {"datetime": None, "contents": text}
        try:
            ms = self._parse(text, received, record)
            if ms is not None:
                record["datetime"] = format_ms(ms)
                self.previous_ms = ms
                return record
        except Exception:  # noqa: BLE001 - a line a parser chokes on is unparsable, not fatal
            pass
        return self.unparsable(text, received)

    def unparsable(self, text: str, received: float) -> Record:
        """The record of a line this parser cannot read: the previous line's time, flagged."""
        if self.previous_ms is not None:
            stamp = format_ms(self.previous_ms)
        else:
            stamp = receipt_stamp(received)
        return {"datetime": stamp, "contents": text, "parse_error": True}

    def _parse(self, text: str, received: float, record: Record) -> int | None:
        """Add the parser's fields for ``text`` to ``record``; return its epoch milliseconds.

        None (or an exception) means the line is unparsable; ``record`` is then dropped.
        """
        raise NotImplementedError


class RawParser(LineParser):
    """``raw``: the datetime is the time of receipt; no fields."""

    name = "raw"

    def parse(self, line: bytes, received: float) -> Record:
        """The record for ``line``: its receipt time and its text."""
        try:
            stamp = format_ms(int(round(received * 1000)))
        except (ValueError, OverflowError, OSError):
            stamp = receipt_stamp(received)
        return {"datetime": stamp, "contents": line.decode("utf-8", "surrogateescape")}


def receipt_stamp(received: float) -> str:
    """The datetime string of a receipt time; never raises."""
    try:
        return format_ms(received_ms(received))
    except (ValueError, OverflowError, OSError):
        # Only a nonsensical receipt time (NaN, year 10000) gets here; keep the line anyway.
        return "1970-01-01T00:00:00.000Z"
