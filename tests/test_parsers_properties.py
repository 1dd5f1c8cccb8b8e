"""Properties of every parser, checked by Hypothesis on arbitrary and near-valid bytes."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rill.config import TapConfig
from rill.parsers import make_parser
from rill.parsers._time import format_ms, nearest_year

SPECS = [
    "raw", "syslog", "iso8601", "nginx", "apache", "json",
    r"regex:^(?P<datetime>\S+ \S+) (?P<level>\w+)? ?(?P<rest>.*)",
]
SAMPLES = [
    b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
    b"Oct  5 09:04:31 web1 sshd[2514]: Accepted publickey",
    b'<165>1 2003-10-11T22:14:15.003Z host app - ID47 [id@1 a="\\"x\\]" b="2"] msg',
    b"2026-11-26T03:21:33.123456+01:00 web1 systemd[1]: Started.",
    b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a HTTP/1.0" 200 2326 "-" "UA \\x22q\\x22"',
    b'{"time":"2026-11-26T02:21:33.123Z","a":{"b":[1,{"c":null}]}}',
    b"2026-11-26 02:21:33,123 INFO message",
]
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
RECEIVED = st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False)


@st.composite
def near_valid_lines(draw: Any) -> bytes:
    """A real sample with random bytes spliced in, to reach deep into the parsers."""
    line = draw(st.sampled_from(SAMPLES))
    at = draw(st.integers(0, len(line)))
    cut = draw(st.integers(0, 8))
    return line[:at] + draw(st.binary(max_size=12)) + line[at + cut:]


LINES = st.one_of(st.binary(max_size=300), near_valid_lines())


def check_record(case: SynchronousTestCase, spec: str, line: bytes, received: float) -> dict[str, Any]:
    parser = make_parser(TapConfig("t", ("h",), ("/p",), parser=spec, timezone="Europe/Paris"))
    record = parser.parse(line, received)
    case.assertEqual(record["contents"].encode("utf-8", "surrogateescape"), line)
    case.assertTrue(STAMP.fullmatch(record["datetime"]), record["datetime"])
    json.dumps(record, allow_nan=False)  # what goes out on the PUB socket must be JSON
    return record


class NeverRaiseTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(spec=st.sampled_from(SPECS), line=LINES, received=RECEIVED)
    def test_any_bytes(self, spec: str, line: bytes, received: float) -> None:
        """No parser raises on arbitrary bytes; contents round-trips; datetime is well formed; JSON-safe."""
        check_record(self, spec, line, received)

    @settings(max_examples=100, deadline=None)
    @given(spec=st.sampled_from(SPECS), lines=st.lists(LINES, max_size=10), received=RECEIVED)
    def test_stream(self, spec: str, lines: list[bytes], received: float) -> None:
        """Through one instance (with its previous-time state) every line still gives a sound record."""
        parser = make_parser(TapConfig("t", ("h",), ("/p",), parser=spec))
        for line in lines:
            record = parser.parse(line, received)
            self.assertEqual(record["contents"].encode("utf-8", "surrogateescape"), line)
            self.assertTrue(STAMP.fullmatch(record["datetime"]))


class TimeTests(SynchronousTestCase):
    @given(ms=st.integers(0, 253402300799999))
    def test_format_ms(self, ms: int) -> None:
        """format_ms agrees with datetime for every millisecond from 1970 to 9999."""
        expected = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
        millis = f"{expected.microsecond // 1000:03d}Z"
        self.assertEqual(format_ms(ms), expected.strftime("%Y-%m-%dT%H:%M:%S.") + millis)

    @given(
        stamp=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
        skew=st.floats(min_value=-150 * 86400, max_value=150 * 86400),
    )
    def test_nearest_year(self, stamp: datetime, skew: float) -> None:
        """A year-less stamp received within five months of when it was written gets its own year."""
        stamp = stamp.replace(microsecond=0, tzinfo=timezone.utc)
        written = stamp.timestamp()
        epoch, low, high = nearest_year(
            stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second, timezone.utc, written + skew
        )
        self.assertEqual(epoch, written)
        self.assertTrue(low < written + skew <= high)
