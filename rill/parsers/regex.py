"""``regex:<pattern>``: a regular expression with named groups, one of them ``datetime``.

The pattern is searched in the line (anchor it with ``^`` to match at the start).  Every
named group but ``datetime`` becomes a field (``None`` when it did not take part).  The
``datetime`` group is read with the tap's ``datetime_format`` (``strptime`` directives) when
set, else as any stamp Rill knows (ISO 8601, epoch numbers, Common Log Format, RFC 3164).
A format without ``%Y``/``%y`` gets the year closest to the receipt time, one without
``%z`` the tap's ``timezone``, as for syslog.  A line the pattern does not match, or whose
stamp does not fit the format, is unparsable.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone, tzinfo

from rill.parsers._time import nearest_year
from rill.parsers.base import RESERVED_FIELDS, LineParser, Record

_CACHE_LIMIT = 512


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled pattern; raises ValueError (with a one-line reason) if it is unusable."""
    try:
        compiled = re.compile(pattern, re.S)
    except re.error as e:
        raise ValueError(f"bad regular expression: {e}") from None
    if "datetime" not in compiled.groupindex:
        raise ValueError("the regular expression needs a named group (?P<datetime>...)")
    clashes = sorted(RESERVED_FIELDS.intersection(compiled.groupindex) - {"datetime"})
    if clashes:
        raise ValueError(f"group name {clashes[0]!r} is reserved; rename the group")
    return compiled


class RegexParser(LineParser):
    """Lines matched by a user's regular expression."""

    name = "regex"

    def __init__(
        self, pattern: str, zone: tzinfo = timezone.utc, datetime_format: str | None = None
    ) -> None:
        super().__init__(zone)
        self.pattern = compile_pattern(pattern)
        self.datetime_format = datetime_format
        fmt = datetime_format or ""
        self._has_year = "%Y" in fmt or "%y" in fmt or "%G" in fmt
        # strptime is slow (~10 us); lines of one second share their stamp, so remember it.
        self._cache: dict[str, int] = {}
        self._yearless: dict[str, tuple[int, float, float]] = {}

    def _parse(self, text: str, received: float, record: Record) -> int | None:
        m = self.pattern.search(text)
        if m is None:
            return None
        fields = m.groupdict()
        stamp = fields.pop("datetime")
        if stamp is None:
            return None
        record.update(fields)
        return self._stamp_ms(stamp, received)

    def _stamp_ms(self, stamp: str, received: float) -> int | None:
        if self.datetime_format is None:
            return self.times.guess(stamp, received)
        if self._has_year:
            ms = self._cache.get(stamp)
            if ms is None:
                ms = self._strptime_ms(stamp)
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[stamp] = ms
            return ms
        return self._yearless_ms(stamp, received)

    def _strptime_ms(self, stamp: str) -> int:
        when = datetime.strptime(stamp, self.datetime_format or "")
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.times.zone)
        return int(when.timestamp()) * 1000 + when.microsecond // 1000

    def _yearless_ms(self, stamp: str, received: float) -> int:
        hit = self._yearless.get(stamp)
        if hit is not None and hit[1] < received <= hit[2]:
            return hit[0]
        # 1904 is a leap year, so "Feb 29" survives strptime; nearest_year picks the year.
        when = datetime.strptime("1904 " + stamp, "%Y " + (self.datetime_format or ""))
        offset = when.utcoffset()
        zone = self.times.zone if offset is None else timezone(offset)
        epoch, low, high = nearest_year(
            when.month, when.day, when.hour, when.minute, when.second, zone, received
        )
        ms = epoch * 1000 + when.microsecond // 1000
        if len(self._yearless) >= _CACHE_LIMIT:
            self._yearless.clear()
        self._yearless[stamp] = (ms, low, high)
        return ms


def validate_datetime_format(fmt: str) -> str | None:
    """A one-line problem with a ``datetime_format =`` value, or None when strptime takes it."""
    try:
        datetime.strptime(datetime.now(timezone.utc).strftime(fmt), fmt)
    except ValueError as e:
        return f"bad datetime_format {fmt!r}: {e}"
    return None
