"""``iso8601``: lines that start with an ISO 8601 / RFC 3339 timestamp.

Accepted: ``2026-11-26T02:21:33Z``, ``2026-11-26T02:21:33.123Z|INFO|...``, ``2026-11-26 02:21:33,123`` (Python logging),
``2026-11-26T02:21:33.123456+01:00``, ``2026-11-26T02:21:33 +0100``, optionally inside
``[...]``.  A stamp without a zone is read in the tap's ``timezone``.  Fractions are cut
to milliseconds.  Field: ``message``, the rest of the line after the stamp.
"""

from __future__ import annotations

import re

from rill.parsers._time import ISO_STAMP
from rill.parsers.base import LineParser, Record

# The stamp must end at a word boundary ("...33Zulu" is no stamp); then anything may follow:
# a space, "|INFO|", ": message".
_LINE = re.compile(r"\[?" + ISO_STAMP + r"\]?(?![0-9A-Za-z])\s*(.*)", re.S)


class Iso8601Parser(LineParser):
    """A leading ISO 8601 timestamp."""

    name = "iso8601"

    def _parse(self, text: str, received: float, record: Record) -> int | None:
        m = _LINE.match(text)
        if m is None:
            return None
        seconds, fraction, zone, message = m.groups()
        record["message"] = message
        return self.times.iso(seconds, fraction, zone)
