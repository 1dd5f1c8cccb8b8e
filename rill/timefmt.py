"""The one datetime format Rill speaks: ISO 8601 UTC with three millisecond digits and ``Z``."""

from __future__ import annotations

import datetime as _dt
import re

_ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def iso_utc(timestamp: float) -> str:
    """``1700000000.5`` -> ``'2023-11-14T22:13:20.500Z'``."""
    moment = _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso_utc(text: str) -> float:
    """The inverse of :func:`iso_utc`; raises ValueError on anything else."""
    if not isinstance(text, str) or not _ISO_MS.match(text):
        raise ValueError(f"expected YYYY-MM-DDTHH:MM:SS.mmmZ, got {text!r}")
    moment = _dt.datetime.strptime(text[:-1], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()
