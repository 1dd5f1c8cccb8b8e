"""The built-in parsers against real-world sample lines, one table per format.

Samples come from the formats' RFCs (3164 section 5.4, 5424 section 6.5), the Apache and
nginx documentation, and what common servers and loggers actually write.  Each row is a
line and the record it must give; ``R`` is the receipt time used throughout.
"""

from __future__ import annotations

import calendar
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from rill.config import TapConfig
from rill.parsers import make_parser, validate_datetime_format, validate_parser_spec

R = calendar.timegm((2026, 11, 26, 2, 21, 33)) + 0.25  # 2026-11-26T02:21:33.250Z
R_STAMP = "2026-11-26T02:21:33.250Z"


def tap(parser: str, **options: Any) -> TapConfig:
    return TapConfig(name="t", hosts=("web1",), paths=("/var/log/x",), parser=parser, **options)


def syslog(**fields: Any) -> dict[str, Any]:
    base = dict.fromkeys(
        ("facility", "severity", "hostname", "app_name", "procid", "msgid", "structured_data", "message")
    )
    base.update(fields)
    return base


def access(**fields: Any) -> dict[str, Any]:
    base = dict.fromkeys(
        ("remote_addr", "remote_user", "request", "method", "request_path", "protocol",
         "status", "bytes", "referer", "user_agent")
    )
    base.update(fields)
    return base


class TableMixin:
    """Runs a table of (line, expected datetime, expected fields) through one parser each."""

    def check_table(self, spec: str, rows: list[tuple[bytes, str, dict[str, Any]]], **options: Any) -> None:
        for line, when, fields in rows:
            record = make_parser(tap(spec, **options)).parse(line, R)
            expected = {"datetime": when, "contents": line.decode("utf-8", "surrogateescape"), **fields}
            self.assertEqual(record, expected, f"line {line!r}")  # type: ignore[attr-defined]


RFC3164 = [
    (b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
     "2026-10-11T22:14:15.000Z",
     syslog(facility=4, severity=2, hostname="mymachine", app_name="su",
            message="'su root' failed for lonvick on /dev/pts/8")),
    # No TAG: "Use" is the start of the message, not a program name.  Feb 5 2027 is closer
    # to the receipt time (Nov 2026) than Feb 5 2026: the closest-year rule.
    (b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
     "2027-02-05T17:32:18.000Z",
     syslog(facility=1, severity=5, hostname="10.0.0.99", message="Use the BFG!")),
    # A relay rewrote this one (RFC 3164 5.4): the words after the stamp are taken as they come.
    (b"<165>Aug 24 05:34:00 CST 1987 mymachine myproc[10]: %% It's time to make the do-nuts.",
     "2026-08-24T05:34:00.000Z",
     syslog(facility=20, severity=5, hostname="CST",
            message="1987 mymachine myproc[10]: %% It's time to make the do-nuts.")),
    # The year first (RFC 3164 5.4, example 4): taken as given.  "TZ-6" was meant as a zone.
    (b"<0>1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 sched[0]: That's All Folks!",
     "1990-10-22T10:52:01.000Z",
     syslog(facility=0, severity=0, hostname="TZ-6",
            message="scapegoat.dmz.example.org 10.1.2.3 sched[0]: That's All Folks!")),
    # As files hold it: no PRI, a single-digit day padded with a space.
    (b"Oct  5 09:04:31 web1 sshd[2514]: Accepted publickey for ops from 10.0.0.7 port 50522 ssh2",
     "2026-10-05T09:04:31.000Z",
     syslog(hostname="web1", app_name="sshd", procid="2514",
            message="Accepted publickey for ops from 10.0.0.7 port 50522 ssh2")),
    (b"Nov 5 09:04:31 web1 CRON[77]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
     "2026-11-05T09:04:31.000Z",
     syslog(hostname="web1", app_name="CRON", procid="77",
            message="(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)")),
    # From the local socket, before a host name was added: the first word is the tag.
    (b"<13>Nov 26 02:20:00 logger: hello", "2026-11-26T02:20:00.000Z",
     syslog(facility=1, severity=5, app_name="logger", message="hello")),
    # Fractional seconds (rsyslog's high-precision BSD variant).
    (b"Nov 26 02:21:33.075 web1 kernel: [    0.000000] Linux version 6.1.0-18-amd64",
     "2026-11-26T02:21:33.075Z",
     syslog(hostname="web1", app_name="kernel", message="[    0.000000] Linux version 6.1.0-18-amd64")),
    # rsyslog's RSYSLOG_FileFormat, Debian 12's default: RFC 3339 stamp, then host and tag.
    (b"2026-11-26T03:21:33.123456+01:00 web1 systemd[1]: Started session-4.scope - Session 4 of User ops.",
     "2026-11-26T02:21:33.123Z",
     syslog(hostname="web1", app_name="systemd", procid="1",
            message="Started session-4.scope - Session 4 of User ops.")),
]

RFC5424 = [
    (b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8",
     "2003-10-11T22:14:15.003Z",
     syslog(facility=4, severity=2, hostname="mymachine.example.com", app_name="su", msgid="ID47",
            message="'su root' failed for lonvick on /dev/pts/8")),
    (b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
     "2003-08-24T12:14:15.000Z",
     syslog(facility=20, severity=5, hostname="192.0.2.1", app_name="myproc", procid="8710",
            message="%% It's time to make the do-nuts.")),
    (b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] \xef\xbb\xbfAn application event log entry...',
     "2003-10-11T22:14:15.003Z",
     syslog(facility=20, severity=5, hostname="mymachine.example.com", app_name="evntslog", msgid="ID47",
            structured_data={"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}},
            message="An application event log entry...")),
    (b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]',
     "2003-10-11T22:14:15.003Z",
     syslog(facility=20, severity=5, hostname="mymachine.example.com", app_name="evntslog", msgid="ID47",
            structured_data={"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
                             "examplePriority@32473": {"class": "high"}})),
    # Escaped structured data: \" \\ and \] inside a value; a ']' inside quotes ends nothing.
    (rb'<13>1 2026-11-26T02:21:33.5+00:00 web1 app 42 - [meta@32473 note="a \"quoted\" word, back\\slash, \] bracket" raw="[x]"] done',
     "2026-11-26T02:21:33.500Z",
     syslog(facility=1, severity=5, hostname="web1", app_name="app", procid="42",
            structured_data={"meta@32473": {"note": 'a "quoted" word, back\\slash, ] bracket', "raw": "[x]"}},
            message="done")),
    # Every field NILVALUE, the stamp too: the receipt time stands in.
    (b"<14>1 - - - - - - no time at all", R_STAMP, syslog(facility=1, severity=6, message="no time at all")),
]

NGINX = [
    (b'203.0.113.9 - - [26/Nov/2026:02:21:33 +0000] "GET /index.html HTTP/1.1" 200 612 "-" "curl/8.5.0"',
     "2026-11-26T02:21:33.000Z",
     access(remote_addr="203.0.113.9", request="GET /index.html HTTP/1.1", method="GET",
            request_path="/index.html", protocol="HTTP/1.1", status=200, bytes=612, user_agent="curl/8.5.0")),
    # nginx escapes a quote in a value as \x22.
    (rb'198.51.100.4 - - [26/Nov/2026:03:21:33 +0100] "GET /search?q=%22x%22 HTTP/2.0" 200 1534 "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64) \x22Evil\x22 Bot/1.0"',
     "2026-11-26T02:21:33.000Z",
     access(remote_addr="198.51.100.4", request="GET /search?q=%22x%22 HTTP/2.0", method="GET",
            request_path="/search?q=%22x%22", protocol="HTTP/2.0", status=200, bytes=1534,
            referer="https://example.com/", user_agent='Mozilla/5.0 (X11; Linux x86_64) "Evil" Bot/1.0')),
    # Unescaped quotes in the user agent (hand-rolled formats): it runs to the last quote.
    (b'198.51.100.5 - - [26/Nov/2026:02:21:33 +0000] "GET / HTTP/1.1" 200 5 "-" "Mozilla "quoted" agent"',
     "2026-11-26T02:21:33.000Z",
     access(remote_addr="198.51.100.5", request="GET / HTTP/1.1", method="GET", request_path="/",
            protocol="HTTP/1.1", status=200, bytes=5, user_agent='Mozilla "quoted" agent')),
    # A TLS handshake sent to a plain-HTTP port: the request is bytes, escaped by nginx.
    (rb'192.0.2.77 - - [26/Nov/2026:02:21:33 +0000] "\x16\x03\x01\x00\xF1\x01" 400 157 "-" "-"',
     "2026-11-26T02:21:33.000Z",
     access(remote_addr="192.0.2.77", request="\x16\x03\x01\x00\udcf1\x01", status=400, bytes=157)),
    # UTF-8 in a path, escaped byte by byte by nginx, decoded back to text.
    (rb'192.0.2.8 - - [26/Nov/2026:02:21:33 +0000] "GET /caf\xC3\xA9 HTTP/1.1" 404 0 "-" "-"',
     "2026-11-26T02:21:33.000Z",
     access(remote_addr="192.0.2.8", request="GET /café HTTP/1.1", method="GET", request_path="/café",
            protocol="HTTP/1.1", status=404, bytes=0)),
    # A log_format with fields after the combined ones ($http_x_forwarded_for $request_time).
    (b'2001:db8::1 - alice [26/Nov/2026:02:21:33 +0000] "POST /api/v1/items HTTP/1.1" 201 48 "-" "python-requests/2.31.0" "10.1.1.1" 0.003',
     "2026-11-26T02:21:33.000Z",
     access(remote_addr="2001:db8::1", remote_user="alice", request="POST /api/v1/items HTTP/1.1",
            method="POST", request_path="/api/v1/items", protocol="HTTP/1.1", status=201, bytes=48,
            user_agent="python-requests/2.31.0")),
]

APACHE = [
    # The Apache documentation's Common Log Format example.
    (b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326',
     "2000-10-10T20:55:36.000Z",
     access(remote_addr="127.0.0.1", remote_user="frank", request="GET /apache_pb.gif HTTP/1.0",
            method="GET", request_path="/apache_pb.gif", protocol="HTTP/1.0", status=200, bytes=2326)),
    # ... and its Combined Log Format example.
    (b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"',
     "2000-10-10T20:55:36.000Z",
     access(remote_addr="127.0.0.1", remote_user="frank", request="GET /apache_pb.gif HTTP/1.0",
            method="GET", request_path="/apache_pb.gif", protocol="HTTP/1.0", status=200, bytes=2326,
            referer="http://www.example.com/start.html", user_agent="Mozilla/4.08 [en] (Win98; I ;Nav)")),
    # Apache escapes a quote as \" ; "-" bytes means none were sent.
    (rb'10.0.0.1 - - [26/Nov/2026:02:21:33 +0000] "HEAD / HTTP/1.1" 304 - "-" "Mozilla/5.0 \"compatible\" probe"',
     "2026-11-26T02:21:33.000Z",
     access(remote_addr="10.0.0.1", request="HEAD / HTTP/1.1", method="HEAD", request_path="/",
            protocol="HTTP/1.1", status=304, bytes=0, user_agent='Mozilla/5.0 "compatible" probe')),
    # HTTP/0.9 style request line, two words.
    (b'10.0.0.2 - - [26/Nov/2026:02:21:33 +0000] "GET /" 200 10',
     "2026-11-26T02:21:33.000Z",
     access(remote_addr="10.0.0.2", request="GET /", method="GET", request_path="/", status=200, bytes=10)),
]

ISO8601 = [
    (b"2026-11-26T02:21:33Z GET /health 200", "2026-11-26T02:21:33.000Z", {"message": "GET /health 200"}),
    (b"2026-11-26T03:21:33.123456789+01:00 nanoseconds are cut, not rounded",
     "2026-11-26T02:21:33.123Z", {"message": "nanoseconds are cut, not rounded"}),
    (b"2026-11-26T07:51:33+0530 zone without a colon", "2026-11-26T02:21:33.000Z",
     {"message": "zone without a colon"}),
    (b"2026-11-25T21:21:33-05 hours-only zone", "2026-11-26T02:21:33.000Z", {"message": "hours-only zone"}),
    # Python logging's default: a space and a comma, no zone (the tap's, UTC here).
    (b"2026-11-26 02:21:33,123 INFO [main] app started", "2026-11-26T02:21:33.123Z",
     {"message": "INFO [main] app started"}),
    (b"[2026-11-26T02:21:33.000Z] bracketed", "2026-11-26T02:21:33.000Z", {"message": "bracketed"}),
    (b"2026-11-26 03:21:33 +0100 Go and PostgreSQL put a space before the zone",
     "2026-11-26T02:21:33.000Z", {"message": "Go and PostgreSQL put a space before the zone"}),
    (b"2026-11-26T02:21:33.5Z", "2026-11-26T02:21:33.500Z", {"message": ""}),
    (b"2026-11-26T02:21:33.123Z|INFO|worker-1|done", "2026-11-26T02:21:33.123Z", {"message": "|INFO|worker-1|done"}),
]

JSON = [
    (b'{"time":"2026-11-26T02:21:33.123Z","level":"info","http":{"method":"GET","status":200,"headers":{"accept":["*/*"]}}}',
     "2026-11-26T02:21:33.123Z",
     {"json": {"time": "2026-11-26T02:21:33.123Z", "level": "info",
               "http": {"method": "GET", "status": 200, "headers": {"accept": ["*/*"]}}}}),
    # pino: milliseconds since the epoch.
    (b'{"level":30,"time":1795659693123,"pid":1,"hostname":"web1","msg":"hello"}',
     "2026-11-26T02:21:33.123Z",
     {"json": {"level": 30, "time": 1795659693123, "pid": 1, "hostname": "web1", "msg": "hello"}}),
    # Seconds, and escapes in strings.
    (b'{"time":1795659693.5,"msg":"caf\\u00e9 \\"q\\""}', "2026-11-26T02:21:33.500Z",
     {"json": {"time": 1795659693.5, "msg": 'café "q"'}}),
    # No time field: kept, with the receipt time, flagged.
    (b'{"msg":"no time here"}', R_STAMP, {"json": {"msg": "no time here"}, "time_missing": True}),
    (b"[1, 2, 3]", R_STAMP, {"parse_error": True}),
    (b'{"time": NaN}', R_STAMP, {"parse_error": True}),
]


class SyslogTests(TableMixin, SynchronousTestCase):
    def test_rfc3164(self) -> None:
        """RFC 3164 lines, with and without PRI, host or tag, single-digit days, fractions."""
        self.check_table("syslog", RFC3164)

    def test_rfc5424(self) -> None:
        """RFC 5424 lines: zones, fractions, BOM, NILVALUEs and escaped structured data."""
        self.check_table("syslog", RFC5424)

    def test_tap_timezone(self) -> None:
        """An RFC 3164 stamp is read in the tap's time zone, DST included."""
        rows = [
            (b"Nov 26 03:21:33 web1 app: winter, UTC+1", "2026-11-26T02:21:33.000Z",
             syslog(hostname="web1", app_name="app", message="winter, UTC+1")),
            (b"Jul  1 12:00:00 web1 app: summer, UTC+2", "2026-07-01T10:00:00.000Z",
             syslog(hostname="web1", app_name="app", message="summer, UTC+2")),
        ]
        self.check_table("syslog", rows, timezone="Europe/Paris")

    def test_unparsable_takes_previous_time(self) -> None:
        """A line that is not syslog gets the previous line's time and a parse_error flag."""
        parser = make_parser(tap("syslog"))
        first = parser.parse(b"Nov 26 02:20:00 web1 java[9]: Exception in thread main", R)
        second = parser.parse(b"\tat com.example.Foo.bar(Foo.java:42)", R + 5)
        self.assertEqual(second["datetime"], first["datetime"])
        self.assertIs(second["parse_error"], True)

    def test_unparsable_first_line_takes_receipt_time(self) -> None:
        """With no previous line, an unparsable line gets the receipt time."""
        record = make_parser(tap("syslog")).parse(b"garbage", R)
        self.assertEqual(record, {"datetime": R_STAMP, "contents": "garbage", "parse_error": True})

    def test_pri_out_of_range(self) -> None:
        """A PRI above 191 is not syslog."""
        record = make_parser(tap("syslog")).parse(b"<192>Nov 26 02:20:00 web1 app: x", R)
        self.assertIs(record["parse_error"], True)


class NewYearTests(SynchronousTestCase):
    def test_last_year(self) -> None:
        """'Dec 31 23:59:58' received on 1 January 00:00:05 is dated last year."""
        received = calendar.timegm((2027, 1, 1, 0, 0, 5))
        record = make_parser(tap("syslog")).parse(b"Dec 31 23:59:58 web1 app: bye", received)
        self.assertEqual(record["datetime"], "2026-12-31T23:59:58.000Z")

    def test_next_year(self) -> None:
        """'Jan  1 00:00:02' received on 31 December 23:59:59 (a fast clock) is next year."""
        received = calendar.timegm((2026, 12, 31, 23, 59, 59))
        record = make_parser(tap("syslog")).parse(b"Jan  1 00:00:02 web1 app: hi", received)
        self.assertEqual(record["datetime"], "2027-01-01T00:00:02.000Z")

    def test_cache_follows_receipt_time(self) -> None:
        """One parser instance, one stamp, receipt times years apart: the year follows them."""
        parser = make_parser(tap("syslog"))
        line = b"Dec 31 23:59:58 web1 app: bye"
        for year in (2026, 2027, 2030, 2027):
            received = calendar.timegm((year, 1, 1, 0, 0, 5))
            self.assertEqual(parser.parse(line, received)["datetime"], f"{year - 1}-12-31T23:59:58.000Z")

    def test_local_zone(self) -> None:
        """The New Year rule holds in the tap's zone: Paris' midnight is 23:00 UTC."""
        received = calendar.timegm((2026, 12, 31, 23, 0, 3))  # 00:00:03 in Paris
        record = make_parser(tap("syslog", timezone="Europe/Paris")).parse(b"Dec 31 23:59:58 h a: x", received)
        self.assertEqual(record["datetime"], "2026-12-31T22:59:58.000Z")

    def test_leap_day(self) -> None:
        """Feb 29 is placed in a leap year; a year-less Feb 29 with no leap year near is unparsable."""
        parser = make_parser(tap("syslog"))
        self.assertEqual(
            parser.parse(b"Feb 29 12:00:00 h a: x", calendar.timegm((2028, 3, 1, 0, 0, 0)))["datetime"],
            "2028-02-29T12:00:00.000Z",
        )
        record = make_parser(tap("syslog")).parse(b"Feb 29 12:00:00 h a: x", calendar.timegm((2026, 3, 1, 0, 0, 0)))
        self.assertIs(record["parse_error"], True)


class AccessLogTests(TableMixin, SynchronousTestCase):
    def test_nginx(self) -> None:
        """nginx combined lines, with \\x22 quotes, bare quotes, binary requests, extra fields."""
        self.check_table("nginx", NGINX)

    def test_apache(self) -> None:
        """Apache common and combined lines from its documentation, with \\" escapes."""
        self.check_table("apache", APACHE)

    def test_not_access_log(self) -> None:
        """A line missing the status is unparsable."""
        record = make_parser(tap("nginx")).parse(b'1.2.3.4 - - [26/Nov/2026:02:21:33 +0000] "GET /"', R)
        self.assertIs(record["parse_error"], True)


class Iso8601Tests(TableMixin, SynchronousTestCase):
    def test_table(self) -> None:
        """Leading ISO 8601 stamps with and without zones and fractions."""
        self.check_table("iso8601", ISO8601)

    def test_dst_fold_and_gap(self) -> None:
        """In the tap's zone, an hour repeated by DST is its first occurrence; a skipped hour is read as before the jump."""
        rows = [
            (b"2026-10-25 02:30:00 fold", "2026-10-25T00:30:00.000Z", {"message": "fold"}),
            (b"2026-03-29 02:30:00 gap", "2026-03-29T01:30:00.000Z", {"message": "gap"}),
        ]
        self.check_table("iso8601", rows, timezone="Europe/Paris")

    def test_zone_less_uses_tap_zone(self) -> None:
        """A stamp without a zone is read in the tap's timezone (PostgreSQL's 'CET' is text)."""
        rows = [(b"2026-11-26 03:21:33.512 CET [123] LOG:  checkpoint starting: time",
                 "2026-11-26T02:21:33.512Z", {"message": "CET [123] LOG:  checkpoint starting: time"})]
        self.check_table("iso8601", rows, timezone="Europe/Paris")

    def test_not_a_stamp(self) -> None:
        """A traceback line, an impossible date, a stamp glued to a word: unparsable."""
        parser = make_parser(tap("iso8601"))
        for line in (b"Traceback (most recent call last):", b"2026-02-30T00:00:00Z x", b"2026-11-26T02:21:33Zulu"):
            self.assertIs(parser.parse(line, R)["parse_error"], True, line)


class JsonTests(TableMixin, SynchronousTestCase):
    def test_table(self) -> None:
        """JSON objects, nested ones kept nested, times as strings or numbers."""
        self.check_table("json", JSON)

    def test_time_field(self) -> None:
        """A dotted time_field reaches into nested objects; its zone-less value is in the tap's zone."""
        line = b'{"meta":{"ts":"2026-11-26 03:21:33"},"msg":"x"}'
        rows = [(line, "2026-11-26T02:21:33.000Z", {"json": {"meta": {"ts": "2026-11-26 03:21:33"}, "msg": "x"}})]
        self.check_table("json", rows, time_field="meta.ts", timezone="Europe/Paris")

    def test_zap_seconds(self) -> None:
        """zap's float seconds under 'ts'."""
        line = b'{"level":"info","ts":1795659693.123,"caller":"main.go:12","msg":"ok"}'
        rows = [(line, "2026-11-26T02:21:33.123Z",
                 {"json": {"level": "info", "ts": 1795659693.123, "caller": "main.go:12", "msg": "ok"}})]
        self.check_table("json", rows, time_field="ts")


class RegexTests(TableMixin, SynchronousTestCase):
    PATTERN = r"regex:^(?P<datetime>\d\d/\d\d/\d{4} \d\d:\d\d:\d\d) \[(?P<level>\w+)\] (?P<message>.*)"

    def test_datetime_format(self) -> None:
        """Named groups become fields; the datetime group is read with datetime_format."""
        rows = [(b"26/11/2026 02:21:33 [ERROR] disk full", "2026-11-26T02:21:33.000Z",
                 {"level": "ERROR", "message": "disk full"}),
                (b"26/11/2026 02:21:33 oops", R_STAMP, {"parse_error": True})]
        self.check_table(self.PATTERN, rows, datetime_format="%d/%m/%Y %H:%M:%S")

    def test_format_with_zone_and_fraction(self) -> None:
        """%z and %f in datetime_format."""
        spec = r"regex:^(?P<datetime>\S+) (?P<rest>.*)"
        rows = [(b"2026-11-26T03:21:33.123456+0100 x", "2026-11-26T02:21:33.123Z", {"rest": "x"})]
        self.check_table(spec, rows, datetime_format="%Y-%m-%dT%H:%M:%S.%f%z")

    def test_yearless_format(self) -> None:
        """A format without a year gets the closest year, in the tap's zone."""
        spec = r"regex:^(?P<datetime>\w{3} +\d+ [\d:]+) (?P<rest>.*)"
        rows = [(b"Nov 26 03:21:33 x", "2026-11-26T02:21:33.000Z", {"rest": "x"})]
        self.check_table(spec, rows, datetime_format="%b %d %H:%M:%S", timezone="Europe/Paris")

    def test_without_format(self) -> None:
        """Without datetime_format the datetime group may be any known stamp; unmatched groups are None."""
        spec = r"regex:^(?P<datetime>\S+)(?: pid=(?P<pid>\d+))? (?P<rest>.*)"
        rows = [(b"2026-11-26T02:21:33.5Z pid=7 a", "2026-11-26T02:21:33.500Z", {"pid": "7", "rest": "a"}),
                (b"1795659693 b", "2026-11-26T02:21:33.000Z", {"pid": None, "rest": "b"}),
                (b"26/Nov/2026:02:21:33 c", "2026-11-26T02:21:33.000Z", {"pid": None, "rest": "c"})]
        self.check_table(spec, rows)


class RawTests(SynchronousTestCase):
    def test_raw(self) -> None:
        """raw: the receipt time, the line, nothing else, even for a line that looks like syslog."""
        record = make_parser(tap("raw")).parse(b"Oct 11 22:14:15 mymachine su: x\xff", R)
        self.assertEqual(record, {"datetime": R_STAMP, "contents": "Oct 11 22:14:15 mymachine su: x\udcff"})

    def test_zmq_spec_gives_raw(self) -> None:
        """A zmq: tap's parser from make_parser is the raw fallback."""
        record = make_parser(tap("zmq:tcp://127.0.0.1:7000")).parse(b"x", R)
        self.assertEqual(record, {"datetime": R_STAMP, "contents": "x"})


class SpecTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """Every built-in name, a regex with a datetime group and zmq endpoints are accepted."""
        for spec in ("raw", "syslog", "iso8601", "nginx", "apache", "json", r"regex:(?P<datetime>\S+)",
                     "zmq:tcp://127.0.0.1:5000", "zmq:tcp://parser.example.net:5000", "zmq:tcp://[::1]:5000",
                     "zmq:ipc:///run/rill/parser.sock"):
            self.assertIsNone(validate_parser_spec(spec), spec)

    def test_invalid(self) -> None:
        """Unknown names, bad regexes, regexes without datetime and bad endpoints get a one-line reason."""
        cases = {
            "sislog": "unknown parser 'sislog'",
            "regex:(?P<datetime>": "bad regular expression",
            r"regex:(?P<when>\S+)": "needs a named group (?P<datetime>...)",
            "zmq:tcp://127.0.0.1": "expected zmq:tcp://host:port",
            "zmq:tcp://127.0.0.1:70000": "expected zmq:tcp://host:port",
            "zmq:udp://x:1": "expected zmq:tcp://host:port",
            r"regex:(?P<datetime>\S+) (?P<path>\S+)": "group name 'path' is reserved",
        }
        for spec, reason in cases.items():
            problem = validate_parser_spec(spec)
            assert problem is not None, spec
            self.assertIn(reason, problem)
            self.assertNotIn("\n", problem)

    def test_make_parser_rejects_invalid(self) -> None:
        """make_parser raises ValueError for a spec that config validation would refuse."""
        self.assertRaises(ValueError, make_parser, tap("nope"))

    def test_datetime_format(self) -> None:
        """validate_datetime_format accepts strptime formats and names a bad one."""
        self.assertIsNone(validate_datetime_format("%d/%m/%Y %H:%M:%S.%f%z"))
        problem = validate_datetime_format("%Y %Q")
        assert problem is not None
        self.assertIn("%Y %Q", problem)
