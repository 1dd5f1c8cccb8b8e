"""``syslog``: RFC 3164 (BSD), RFC 5424, and rsyslog's RFC 3339 file format.

Every record has the same fields, ``None`` where a format has no value (NILVALUE ``-``
in RFC 5424 is also ``None``):

- ``facility``, ``severity``: integers from ``<PRI>`` (``None`` in files, which have no PRI)
- ``hostname``, ``app_name`` (the RFC 3164 TAG), ``procid``, ``msgid``
- ``structured_data``: ``{sd_id: {param: value}}`` with ``\\"``, ``\\\\`` and ``\\]`` unescaped
- ``message``: the free text (a leading UTF-8 BOM removed)

RFC 3164 stamps have no year and no zone: the year closest to the receipt time, the tap's
``timezone``.  RFC 5424 stamps carry both; a NILVALUE stamp means the receipt time.
"""

from __future__ import annotations

import re
from typing import Any

from rill.parsers._time import BSD_STAMP, ISO_STAMP, received_ms
from rill.parsers.base import LineParser, Record

# "Oct 11 22:14:15 mymachine su[1]: msg".  The hostname is optional (messages from the
# local socket lack it): a first word ending in ':' is the tag, not a host.
_TAG = r"(?:([^\s\[\]:]+)(?:\[([^\]]*)\])?:(?: |$))?(.*)"
# Some devices put the year first ("<0>1990 Oct 22 10:52:01 ...", RFC 3164 5.4): it is used.
_RFC3164 = re.compile(
    r"(?:<(\d{1,3})>)?(?:(\d{4}) )?" + BSD_STAMP + r"(?: (?!\S+:(?: |$))(\S+))? ?" + _TAG, re.S
)
# rsyslog's RSYSLOG_FileFormat (Debian 12's default): "2026-11-26T02:21:33.123456+00:00 host tag: msg"
_RFC3339_FILE = re.compile(r"(?:<(\d{1,3})>)?" + ISO_STAMP + r" (\S+) ?" + _TAG, re.S)

# Quoted values "unrolled" (no alternation per character), several times faster.
_SD_VALUE = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_SD_ELEMENT = r'\[[^\s\]="]+(?:\s+[^\s\]="]+=' + _SD_VALUE + r')*\s*\]'
_RFC5424 = re.compile(
    r"<(\d{1,3})>\d{1,2} (?:-|" + ISO_STAMP + r") (\S+) (\S+) (\S+) (\S+) "
    r"(-|(?:" + _SD_ELEMENT + r")+)(?: (.*))?",
    re.S,
)
_SD_ONE = re.compile(r'\[([^\s\]="]+)((?:\s+[^\s\]="]+=' + _SD_VALUE + r')*)\s*\]', re.S)
_SD_PARAM = re.compile(r'([^\s\]="]+)="([^"\\]*(?:\\.[^"\\]*)*)"', re.S)
_SD_ESCAPE = re.compile(r'\\([\\"\]])')


class SyslogParser(LineParser):
    """RFC 3164, RFC 5424 and RFC 3339-stamped syslog lines."""

    name = "syslog"

    def _parse(self, text: str, received: float, record: Record) -> int | None:
        if text.startswith("<"):  # files rarely hold a PRI; RFC 5424 always has one
            m = _RFC5424.match(text)
            if m is not None:
                return self._rfc5424(m, received, record)
        m = _RFC3164.match(text)
        if m is not None:
            pri, year, stamp, fraction, host, app, procid, message = m.groups()
            _fields(record, pri, host, app, procid, None, None, message)
            return self.times.bsd(stamp, fraction, received, year)
        m = _RFC3339_FILE.match(text)
        if m is not None:
            pri, seconds, fraction, zone, host, app, procid, message = m.groups()
            _fields(record, pri, host, app, procid, None, None, message)
            return self.times.iso(seconds, fraction, zone)
        return None

    def _rfc5424(self, m: re.Match[str], received: float, record: Record) -> int:
        pri, seconds, fraction, zone, host, app, procid, msgid, sd, message = m.groups()
        if message is not None and message.startswith("\ufeff"):
            message = message[1:]
        _fields(record, pri, _nil(host), _nil(app), _nil(procid), _nil(msgid), structured_data(sd), message)
        return received_ms(received) if seconds is None else self.times.iso(seconds, fraction, zone)


def _fields(
    record: Record,
    pri: str | None,
    host: str | None,
    app: str | None,
    procid: str | None,
    msgid: str | None,
    sd: dict[str, dict[str, str]] | None,
    message: str | None,
) -> None:
    if pri is None:
        record["facility"] = record["severity"] = None
    else:
        value = int(pri)
        if value > 191:
            raise ValueError("PRI out of range")
        record["facility"], record["severity"] = value >> 3, value & 7
    record["hostname"] = host
    record["app_name"] = app
    record["procid"] = procid
    record["msgid"] = msgid
    record["structured_data"] = sd
    record["message"] = message


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def structured_data(text: str) -> dict[str, dict[str, Any]] | None:
    """RFC 5424 STRUCTURED-DATA as ``{sd_id: {param: value}}``; None for ``-``."""
    if text == "-":
        return None
    elements: dict[str, dict[str, Any]] = {}
    for sd_id, params in _SD_ONE.findall(text):
        elements[sd_id] = {
            name: _SD_ESCAPE.sub(r"\1", value) if "\\" in value else value
            for name, value in _SD_PARAM.findall(params)
        }
    return elements
