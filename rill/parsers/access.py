"""``nginx`` and ``apache``: the Common and Combined Log Formats.

    127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326
    ... "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"

Fields: ``remote_addr``, ``remote_user``, ``request`` (the request line as sent),
``method``, ``request_path``, ``protocol``, ``status`` (int), ``bytes`` (int, 0 for ``-``),
``referer``, ``user_agent`` (``None`` for ``-`` and in the common format).  The request's
path is ``request_path``, not ``path``: ``path`` is the log file's path in Rill's messages.

nginx writes a quote inside a value as ``\\x22``, Apache as ``\\"``; both are decoded.  Some
servers write the user agent's quotes unescaped: the user agent is then everything up to
the line's last quote.  Fields added after the combined ones (nginx ``log_format``
extensions) are left in ``contents`` only.
"""

from __future__ import annotations

import re

from rill.parsers._time import CLF_STAMP
from rill.parsers.base import LineParser, Record

# A quoted value with backslash escapes, "unrolled" (no alternation per character): 5x faster.
_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_PREFIX = re.compile(r"(\S+) \S+ (\S+) \[" + CLF_STAMP + r"\] " + _QUOTED + r" (\d{3}|-) (\d+|-)", re.S)
_COMBINED = re.compile(" " + _QUOTED + " " + _QUOTED + r"(?:\s.*)?$", re.S)
_COMBINED_LOOSE = re.compile(r' "([^"]*)" "(.*)"$', re.S)
_COMMON_END = re.compile(r"\s*$")
_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})|\\(.)", re.S)


class AccessLogParser(LineParser):
    """Common and Combined Log Format lines, as nginx and Apache write them."""

    name = "nginx"

    def _parse(self, text: str, received: float, record: Record) -> int | None:
        m = _PREFIX.match(text)
        if m is None:
            return None
        addr, user, stamp, request, status, size = m.groups()
        referer = agent = None
        tail = _COMBINED.match(text, m.end()) or _COMBINED_LOOSE.match(text, m.end())
        if tail is not None:
            referer, agent = _dash(unescape(tail.group(1))), _dash(unescape(tail.group(2)))
        elif _COMMON_END.match(text, m.end()) is None:
            return None
        request = unescape(request)
        method, request_path, protocol = _split_request(request)
        record["remote_addr"] = addr
        record["remote_user"] = None if user == "-" else user
        record["request"] = request
        record["method"] = method
        record["request_path"] = request_path
        record["protocol"] = protocol
        record["status"] = None if status == "-" else int(status)
        record["bytes"] = 0 if size == "-" else int(size)
        record["referer"] = referer
        record["user_agent"] = agent
        return self.times.clf(stamp)


def _split_request(request: str) -> tuple[str | None, str | None, str | None]:
    parts = request.split(" ")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:  # HTTP/0.9: "GET /"
        return parts[0], parts[1], None
    return None, None, None  # "-", a TLS handshake sent to a plain port, ...


def _dash(value: str) -> str | None:
    return None if value == "-" else value


def unescape(value: str) -> str:
    """Decode ``\\xHH`` (nginx, Apache) and ``\\"``/``\\\\`` (Apache) in a log value.

    ``\\xHH`` are bytes (nginx escapes UTF-8 this way), so they are decoded as UTF-8 together,
    undecodable ones kept as surrogate escapes like the rest of the line.
    """
    if "\\" not in value:
        return value
    raw = value.encode("utf-8", "surrogateescape")
    decoded = _ESCAPE.sub(_unescape_one, raw)
    return decoded.decode("utf-8", "surrogateescape")


def _unescape_one(m: re.Match[bytes]) -> bytes:
    if m.group(1) is not None:
        return bytes([int(m.group(1), 16)])
    char = m.group(2)
    return char if char in b'"\\' else m.group(0)
