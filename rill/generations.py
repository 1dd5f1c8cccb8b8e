"""Pure decisions about a watched file's generations: resume, or start anew.

No I/O here: the tap feeds in what it knows (the current generation, the
mirror's length and the hash of its last bytes) and what the server says (a
stream header), and gets back what to do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from rill.remote import CHECK_SIZE, StreamHeader
from rill.store.mirror import GenerationRecord


@dataclass(frozen=True)
class Resume:
    """The server's file is the current generation and holds our bytes: go on at ``offset``."""

    offset: int


@dataclass(frozen=True)
class StartNew:
    """The file at the path is not (or no longer) the current generation: start a new one at 0.

    ``reason`` says why, for the log and the gap record; ``complete`` is False
    when the current generation may have bytes we never got.
    """

    reason: str
    complete: bool


Decision = Resume | StartNew


def tail_check(tail: bytes) -> str:
    """What the server's ``md5sum`` prints for the CHECK_SIZE bytes before an offset."""
    return hashlib.md5(tail[-CHECK_SIZE:]).hexdigest() if tail else "-"


def decide(current: GenerationRecord | None, length: int, local_check: str, header: StreamHeader) -> Decision:
    """Decide how to go on, given a stream header for offset ``length`` of ``current``."""
    if current is None:
        return StartNew("first sight", complete=True)
    same_file = (current.device, current.inode) in ((header.device, header.inode), (0, 0))
    if not same_file:
        return StartNew("rotated: a different file is at the path", complete=False)
    if header.size < length:
        return StartNew(f"truncated from {length} to {header.size} bytes", complete=False)
    if header.check != local_check:
        return StartNew("rewritten: the bytes before the resume offset differ", complete=False)
    return Resume(length)
