"""Line parsers: a line of bytes becomes a timestamped record (SPEC section 7).

Pure: nothing here does I/O or imports Twisted, except :mod:`rill.parsers.external` (the
ZeroMQ client for external parser processes), which is therefore not imported here.

    parser = make_parser(tap)                  # one per watched file: it keeps the last time
    record = parser.parse(line, received)      # {"datetime", "contents", ...fields}

See :mod:`rill.parsers.base` for the record's contract, :mod:`rill.parsers.multiline` for
grouping stack traces into one event.
"""

from __future__ import annotations

import re
from datetime import timezone, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from rill.parsers.access import AccessLogParser
from rill.parsers.base import LineParser, RawParser, Record
from rill.parsers.iso8601 import Iso8601Parser
from rill.parsers.jsonlines import JsonParser
from rill.parsers.multiline import Event, MultilineGrouper
from rill.parsers.regex import RegexParser, compile_pattern, validate_datetime_format
from rill.parsers.syslog import SyslogParser

if TYPE_CHECKING:
    from rill.config import TapConfig

__all__ = [
    "BUILTIN_PARSERS",
    "Event",
    "LineParser",
    "MultilineGrouper",
    "Record",
    "external_endpoint",
    "make_parser",
    "validate_datetime_format",
    "validate_parser_spec",
]

BUILTIN_PARSERS = ("raw", "syslog", "iso8601", "nginx", "apache", "json")

# tcp://host:port (host a name, an IPv4 address or a bracketed IPv6 one) or ipc://path.
_ZMQ_ENDPOINT = re.compile(r"tcp://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+|\*):(\d{1,5})|ipc://.+")


def validate_parser_spec(spec: str) -> str | None:
    """Return a one-line problem with a ``parser =`` value, or None when it is valid."""
    if spec in BUILTIN_PARSERS:
        return None
    if spec.startswith("regex:"):
        try:
            compile_pattern(spec[6:])
        except ValueError as e:
            return str(e)
        return None
    if spec.startswith("zmq:"):
        m = _ZMQ_ENDPOINT.fullmatch(spec[4:])
        if m is None or (m.group(1) is not None and not 0 < int(m.group(1)) < 65536):
            return f"expected zmq:tcp://host:port or zmq:ipc://path, got {spec!r}"
        return None
    names = ", ".join(BUILTIN_PARSERS)
    return f"unknown parser {spec!r} (expected one of {names}, regex:<pattern> or zmq:tcp://host:port)"


def external_endpoint(spec: str) -> str | None:
    """The ZeroMQ endpoint of a ``zmq:`` parser spec, None for a built-in parser."""
    return spec[4:] if spec.startswith("zmq:") else None


def make_parser(tap: TapConfig) -> LineParser:
    """A fresh parser for one file of ``tap``; raises ValueError for an invalid spec.

    For ``zmq:`` taps this is the ``raw`` parser: the fallback to hand to
    :meth:`rill.parsers.external.ExternalParser.parse`.
    """
    spec = tap.parser
    problem = validate_parser_spec(spec)
    if problem is not None:
        raise ValueError(problem)
    zone = _zone(tap.timezone)
    if spec == "syslog":
        return SyslogParser(zone)
    if spec == "iso8601":
        return Iso8601Parser(zone)
    if spec in ("nginx", "apache"):
        parser = AccessLogParser(zone)
        parser.name = spec
        return parser
    if spec == "json":
        return JsonParser(zone, tap.time_field)
    if spec.startswith("regex:"):
        return RegexParser(spec[6:], zone, tap.datetime_format)
    return RawParser(zone)


def _zone(name: str) -> tzinfo:
    # datetime arithmetic with the fixed UTC zone is cheaper than with ZoneInfo("UTC").
    return timezone.utc if name in ("UTC", "Etc/UTC") else ZoneInfo(name)
