"""``json``: one JSON object a line.

The object goes into the record whole, under ``json`` (nested objects stay nested): its
keys cannot clash with ``datetime``, ``contents`` or the fields Rill adds around a record.
The time comes from the tap's ``time_field`` (default ``time``; a dotted name such as
``meta.ts`` reaches into nested objects).  Its value may be an ISO 8601 string (zone-less
ones read in the tap's ``timezone``), a Common Log Format or RFC 3164 string, or a number
of seconds, milliseconds, microseconds or nanoseconds since the epoch (told apart by size).

A line that is not a JSON object is unparsable.  An object without a usable time keeps its
``json`` but takes the previous line's time (or the receipt time), flagged ``time_missing``.
"""

from __future__ import annotations

import json
from datetime import timezone, tzinfo
from typing import Any

from rill.parsers._time import epoch_number_ms, received_ms
from rill.parsers.base import LineParser, Record


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: accepting them would make Rill publish invalid JSON.
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` without NaN and Infinity, which would make Rill publish invalid JSON."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return _decoder.decode(text)


class JsonParser(LineParser):
    """JSON objects, one a line, with a configurable time field."""

    name = "json"

    def __init__(self, zone: tzinfo = timezone.utc, time_field: str = "time") -> None:
        super().__init__(zone)
        self.time_field = time_field

    def _parse(self, text: str, received: float, record: Record) -> int | None:
        value = _decoder.decode(text)
        if not isinstance(value, dict):
            return None
        record["json"] = value
        ms = self._time_of(value, received)
        if ms is None:
            record["time_missing"] = True
            return self.previous_ms if self.previous_ms is not None else received_ms(received)
        return ms

    def _time_of(self, value: dict[str, Any], received: float) -> int | None:
        stamp = lookup(value, self.time_field)
        if isinstance(stamp, bool) or stamp is None:
            return None
        if isinstance(stamp, (int, float)):
            return epoch_number_ms(stamp)
        if isinstance(stamp, str):
            return self.times.guess(stamp, received)
        return None


def lookup(value: dict[str, Any], name: str) -> Any:
    """``value[name]``, or for a dotted name the nested value; None when absent."""
    if name in value:
        return value[name]
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
