"""The POSIX-sh commands Rill sends to targets, and the parsing of what they print.

Everything here runs the same on GNU coreutils and BusyBox: ``stat -L -c``,
``tail -c +N``, ``head -c``, ``md5sum``, ``ls -i``, ``gzip -dc``.  No
``--follow=name`` anywhere: files are followed by descriptor, and identity is
watched separately.  Every path goes through :func:`quote`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

#: How many bytes before the resume offset are compared with the server's.
CHECK_SIZE = 1024


def quote(argument: str) -> str:
    """Single-quote ``argument`` for any POSIX shell (spaces, quotes, ``$`` are safe)."""
    return shlex.quote(argument)


@dataclass(frozen=True)
class StreamHeader:
    """The first line a stream channel prints: what it actually opened."""

    device: int
    inode: int
    size: int
    check: str  # md5 of the CHECK_SIZE bytes before the offset; "-" at offset 0


class HeaderError(ValueError):
    pass


MISSING = b"RILL-MISSING"
#: What GNU tail -f prints (on stderr, merged into the stream) when the followed file shrinks.
TRUNCATED = b"tail: /dev/fd/3: file truncated\n"


def stream_command(path: str, offset: int, follow: bool = True, check_size: int = CHECK_SIZE) -> str:
    """Stream ``path`` from byte ``offset``, first printing a :class:`StreamHeader` line.

    The file is opened once on descriptor 3 and everything else reads it
    through ``/dev/fd/3`` (on Linux a fresh open of the same inode), so the
    identity printed, the bytes hashed and the bytes streamed all come from
    the one generation even if the path is renamed meanwhile.  ``tail -f``
    then follows that descriptor: after a rotation it drains the old
    generation, which is what we want.
    """
    start = max(offset - check_size, 0)
    length = offset - start
    check = f"h=$(tail -c +{start + 1} /dev/fd/3 | head -c {length} | md5sum)" if offset else "h=-"
    # tail follows /dev/fd/3 by polling (no inotify on that name): GNU takes a 0.1 s
    # interval, BusyBox only whole seconds (its -s rejects fractions).  GNU tail
    # rewinds to byte 0 when the file is truncated and says so on stderr: its
    # stderr joins stdout, so TRUNCATED arrives in band, in order, before the new
    # file's bytes, and the tap stops right there.
    tail = f'tail -s "$s" -c +{offset + 1} -f /dev/fd/3 2>&1' if follow else f"tail -c +{offset + 1} /dev/fd/3"
    return (
        f"f={quote(path)}; "
        f'[ -r "$f" ] && [ ! -d "$f" ] || {{ echo {MISSING.decode()}; exit 0; }}; '
        'exec 3<"$f" || exit 0; '
        "set -- $(stat -L -c '%d %i %s' /dev/fd/3); "
        f"{check}; "
        "s=1; tail -s 0.1 -c 0 /dev/null >/dev/null 2>&1 && s=0.1; "
        'echo "RILL $1 $2 $3 ${h%% *}"; '
        f"exec {tail}"
    )


def gzip_stream_command(path: str, offset: int, check_size: int = CHECK_SIZE) -> str:
    """Stream a compressed generation's decompressed bytes from ``offset``, with the same header.

    The header's identity is the ``.gz`` file's; its size field is the compressed size.
    """
    start = max(offset - check_size, 0)
    check = f"h=$(gzip -dc /dev/fd/3 | head -c {offset} | tail -c {offset - start} | md5sum)" if offset else "h=-"
    return (
        f"f={quote(path)}; "
        f'[ -r "$f" ] || {{ echo {MISSING.decode()}; exit 0; }}; '
        'exec 3<"$f" || exit 0; '
        "set -- $(stat -L -c '%d %i %s' /dev/fd/3); "
        f"{check}; "
        'echo "RILL $1 $2 $3 ${h%% *}"; '
        f"gzip -dc /dev/fd/3 | tail -c +{offset + 1}"
    )


_HEADER = re.compile(rb"^RILL (\d+) (\d+) (\d+) ([0-9a-f]{32}|-)$")


def parse_header(line: bytes) -> StreamHeader | None:
    """The header line (without newline); None for ``RILL-MISSING``."""
    if line == MISSING:
        return None
    match = _HEADER.match(line)
    if not match:
        raise HeaderError(f"unexpected stream header {line[:200]!r}")
    return StreamHeader(int(match[1]), int(match[2]), int(match[3]), match[4].decode())


def probe_command() -> str:
    """A harmless command that proves a login works and says which tools the target has."""
    return "echo RILL-OK; for t in stat tail head md5sum gzip; do command -v $t >/dev/null 2>&1 || echo RILL-LACKS $t; done"
