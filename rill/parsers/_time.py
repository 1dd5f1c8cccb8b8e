"""Time arithmetic shared by the parsers: stamps in, integer milliseconds since the epoch out.

Times are integer milliseconds throughout, so a stamp's ``.123`` stays 123 (floats would
turn some of them into 122.99999).  The hot paths cache per second: consecutive lines of a
log share their second far more often than not, and a dictionary hit is ~20 times cheaper
than building a ``datetime``.  Caches are small and cleared when full: lines move forward
in time, so only the last few seconds are worth keeping.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

MONTHS = {m: i for i, m in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}

# A leading ISO 8601 / RFC 3339 stamp as three groups: the seconds ("2026-11-26T02:21:33",
# date and time separated by T or a space), the fraction digits and the zone.  A zone may
# follow after one space ("... 02:21:33 +0100", as Go and PostgreSQL print it).
ISO_STAMP = r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:[.,](\d+))?(Z|z| ?[+-]\d\d(?::?\d\d)?)?"
ISO_RE = re.compile(ISO_STAMP)

# Common Log Format: 10/Oct/2000:13:55:36 -0700 (the zone is optional for hand-made logs).
CLF_STAMP = r"(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d(?: [+-]\d{4})?)"
CLF_RE = re.compile(CLF_STAMP)

# RFC 3164: "Oct  5 12:34:56" or "Oct 5 12:34:56", optionally with a fraction; two groups,
# the stamp (taken apart only on a cache miss: fewer groups make a faster match) and fraction.
BSD_STAMP = r"((?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}\d{1,2} \d\d:\d\d:\d\d)(?:\.(\d{1,9}))?"
BSD_RE = re.compile(BSD_STAMP)

_EPOCH_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

_CACHE_LIMIT = 512
_PREFIXES: dict[int, str] = {}


def format_ms(ms: int) -> str:
    """UTC ISO 8601 with exactly three millisecond digits and ``Z``: 2026-11-26T02:21:33.123Z."""
    seconds, millis = divmod(ms, 1000)
    prefix = _PREFIXES.get(seconds)
    if prefix is None:
        prefix = _format_second(seconds)
    return f"{prefix}.{millis:03d}Z"


def _format_second(seconds: int) -> str:
    t = time.gmtime(seconds)
    if not 1 <= t.tm_year <= 9999:
        raise ValueError(f"year {t.tm_year} out of range")
    prefix = "%04d-%02d-%02dT%02d:%02d:%02d" % t[:6]
    if len(_PREFIXES) >= 4096:
        _PREFIXES.clear()
    _PREFIXES[seconds] = prefix
    return prefix


def received_ms(received: float) -> int:
    """A receipt time (float seconds) as integer milliseconds, rounded to the nearest."""
    return int(round(received * 1000))


def fraction_ms(digits: str | None) -> int:
    """Milliseconds in a fraction's digits, truncated (".123999" is 123, as written)."""
    if not digits:
        return 0
    return int((digits + "00")[:3])


def zone_offset(text: str) -> int:
    """Seconds east of UTC in "Z", "+05:30", "+0530", "+05" or " -0700"."""
    text = text.strip()
    if text in ("Z", "z"):
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"bad zone offset {text!r}")
    return sign * (hours * 3600 + minutes * 60)


def wall_to_epoch(y: int, mo: int, d: int, h: int, mi: int, s: int, zone: tzinfo) -> int:
    """Epoch seconds of a wall-clock time in ``zone``; raises ValueError for impossible dates.

    A leap second (:60) is read as :59 rather than rejected: the line is real, the second
    is not worth losing it over.  An ambiguous time in a DST fold is taken as its first
    occurrence, a time in a DST gap as if the clock had not jumped (Python's rules).
    """
    stamp = datetime(y, mo, d, h, mi, min(s, 59), tzinfo=zone)
    return int(stamp.timestamp())


class TimeResolver:
    """Stamp text to epoch milliseconds, for one time zone, with per-second caches.

    ``zone`` is the tap's time zone, used for stamps that carry none.  One resolver per
    parser instance; the caches are bounded, so many watched files cost little memory.
    """

    def __init__(self, zone: tzinfo = timezone.utc) -> None:
        self.zone = zone
        self._iso: dict[str, int] = {}
        self._clf: dict[str, int] = {}
        # stamp -> (epoch seconds, receipt window low (exclusive), high (inclusive))
        self._bsd: dict[str, tuple[int, float, float]] = {}

    def iso(self, seconds: str, fraction: str | None, zone: str | None) -> int:
        """Milliseconds for the three groups of :data:`ISO_STAMP`."""
        key = seconds if zone is None else seconds + zone
        epoch = self._iso.get(key)
        if epoch is None:
            epoch = self._iso_miss(seconds, zone)
            _remember(self._iso, key, epoch)
        return epoch * 1000 + (int((fraction + "00")[:3]) if fraction else 0)

    def _iso_miss(self, s: str, zone: str | None) -> int:
        fields = int(s[0:4]), int(s[5:7]), int(s[8:10]), int(s[11:13]), int(s[14:16]), int(s[17:19])
        if zone is None:
            return wall_to_epoch(*fields, self.zone)
        return wall_to_epoch(*fields, timezone(timedelta(seconds=zone_offset(zone))))

    def clf(self, stamp: str) -> int:
        """Milliseconds for a Common Log Format stamp (``10/Oct/2000:13:55:36 -0700``)."""
        epoch = self._clf.get(stamp)
        if epoch is None:
            epoch = self._clf_miss(stamp)
            _remember(self._clf, stamp, epoch)
        return epoch * 1000

    def _clf_miss(self, s: str) -> int:
        y, mo, d = int(s[7:11]), MONTHS[s[3:6]], int(s[0:2])
        h, mi, sec = int(s[12:14]), int(s[15:17]), int(s[18:20])
        zone = timezone(timedelta(seconds=zone_offset(s[21:]))) if len(s) > 20 else self.zone
        return wall_to_epoch(y, mo, d, h, mi, sec, zone)

    def bsd(self, stamp: str, fraction: str | None, received: float, year: str | None = None) -> int:
        """Milliseconds for :data:`BSD_STAMP`'s two groups (``Oct  5 12:34:56``, ``123``).

        Without ``year``, the year closest to the receipt time.  The cached answer holds
        for a window of receipt times, so the New Year case stays exact with the cache on.
        """
        if year is not None:
            return self._bsd_in_year(stamp, year) * 1000 + fraction_ms(fraction)
        hit = self._bsd.get(stamp)
        if hit is None or not hit[1] < received <= hit[2]:
            hit = nearest_year(*_bsd_fields(stamp), self.zone, received)
            _remember(self._bsd, stamp, hit)
        return hit[0] * 1000 + (int((fraction + "00")[:3]) if fraction else 0)

    def _bsd_in_year(self, stamp: str, year: str) -> int:
        key = f"{year} {stamp}"
        epoch = self._iso.get(key)
        if epoch is None:
            epoch = wall_to_epoch(int(year), *_bsd_fields(stamp), self.zone)
            _remember(self._iso, key, epoch)
        return epoch

    def guess(self, text: str, received: float) -> int | None:
        """Milliseconds for a stamp of any format the parsers know, or None.

        Tried in turn: ISO 8601, a number of seconds/ms/us/ns since the epoch, Common
        Log Format, RFC 3164.  Used where the stamp's format is not known in advance (a
        JSON time field, a ``regex:`` datetime group without ``datetime_format``).
        """
        text = text.strip()
        m = ISO_RE.fullmatch(text)
        if m:
            return self.iso(*m.groups())
        if _EPOCH_NUMBER.fullmatch(text):
            return epoch_number_ms(float(text))
        if CLF_RE.fullmatch(text):
            return self.clf(text)
        m = BSD_RE.fullmatch(text)
        if m:
            return self.bsd(m.group(1), m.group(2), received)
        return None


def _bsd_fields(stamp: str) -> tuple[int, int, int, int, int]:
    """(month, day, hour, minute, second) of ``Oct  5 12:34:56``."""
    day, clock = stamp[3:].split()
    return MONTHS[stamp[:3]], int(day), int(clock[0:2]), int(clock[3:5]), int(clock[6:8])


def epoch_number_ms(value: float) -> int:
    """Milliseconds for a number since the epoch, its unit told by its magnitude.

    Below 1e11 it is seconds (1e11 s is the year 5138), below 1e14 milliseconds, below
    1e17 microseconds, else nanoseconds: the units loggers actually use.
    """
    size = abs(value)
    if size < 1e11:
        return int(round(value * 1000))
    if size < 1e14:
        return int(value)
    if size < 1e17:
        return int(value // 1000)
    return int(value // 1_000_000)


def nearest_year(
    mo: int, d: int, h: int, mi: int, s: int, zone: tzinfo, received: float
) -> tuple[int, float, float]:
    """The epoch seconds of a year-less stamp in the year closest to ``received``.

    Returns (epoch, low, high): the same answer holds for any receipt time in (low, high].
    Candidates are the receipt's year and its neighbours; a tie goes to the earlier year
    (logs are read after they are written).  Feb 29 has candidates only in leap years.
    """
    year = time.gmtime(received).tm_year
    candidates = []
    for y in (year - 1, year, year + 1):
        try:
            candidates.append(wall_to_epoch(y, mo, d, h, mi, s, zone))
        except ValueError:
            continue
    if not candidates:
        raise ValueError("no year has this date")
    best = min(candidates, key=lambda c: abs(c - received))
    i = candidates.index(best)
    low = (candidates[i - 1] + best) / 2 if i > 0 else float("-inf")
    high = (best + candidates[i + 1]) / 2 if i + 1 < len(candidates) else float("inf")
    # The candidates depend on the receipt's year, so the answer only holds inside that year:
    # [start, end) written as (start - 1 ms, end - 1 ms] to match the window's other bound.
    year_start = calendar.timegm((year, 1, 1, 0, 0, 0)) - 0.001
    year_end = calendar.timegm((year + 1, 1, 1, 0, 0, 0)) - 0.001
    return best, max(low, year_start), min(high, year_end)


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
