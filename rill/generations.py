"""The local half of the resume check: what the server's stream header must match.

Before a generation is read on from offset N, the stream command prints the md5
of the CHECK_SIZE bytes before N on the server (rill.remote.stream_command);
the tap compares it with the same bytes of its mirror, so a file truncated and
regrown past N, or rewritten with the same first line, is caught.
"""

from __future__ import annotations

import hashlib

from rill.remote import CHECK_SIZE


def tail_check(tail: bytes) -> str:
    """What the server's ``md5sum`` prints for the CHECK_SIZE bytes before an offset ("-" at offset 0)."""
    return hashlib.md5(tail[-CHECK_SIZE:]).hexdigest() if tail else "-"
