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


#: Seconds between the size checks of the BusyBox follow loop (see :func:`stream_command`).
FOLLOW_INTERVAL = 1


def _check(offset: int, head: int, check_size: int, reader: str) -> str:
    """The header's check: md5 of the ``check_size`` bytes before ``offset``, or of the first ``head`` bytes.

    ``head`` (> offset) is for a generation the mirror holds less of than the
    server's fingerprint covers: the file must still start with those bytes
    (at offset 0 there is nothing else to check, and a file truncated and
    rewritten before its stream started would otherwise pass for it).
    ``reader`` prints the file's (decompressed) bytes from 0.
    """
    if head > offset:
        return f"h=$({reader} | head -c {head} | md5sum)"
    if not offset:
        return "h=-"
    start = max(offset - check_size, 0)
    return f"h=$({reader} | head -c {offset} | tail -c {offset - start} | md5sum)"


def stream_command(path: str, offset: int, follow: bool = True, check_size: int = CHECK_SIZE, head: int = 0) -> str:
    """Stream ``path`` from byte ``offset``, first printing a :class:`StreamHeader` line.

    The file is opened once on descriptor 3 and everything else reads it
    through ``/dev/fd/3`` (on Linux a fresh open of the same inode), so the
    identity printed, the bytes hashed and the bytes streamed all come from
    the one generation even if the path is renamed meanwhile.  Following that
    descriptor drains the old generation after a rotation, which is what we
    want.

    A truncation must never pass unnoticed: the bytes a follower reads after
    it are the *next* generation's, and appending them at the old offset would
    mirror them twice.  GNU ``tail -f`` rewinds and says so on stderr (joined to
    stdout, so :data:`TRUNCATED` arrives in band, in order, before the new
    bytes) and polls every 0.1 s.  BusyBox ``tail -f`` rewinds *silently* and
    polls only whole seconds, so on BusyBox the follower is a loop instead:
    stat, read exactly the bytes the stat saw, and on a shrink print the same
    notice and stop (two or three forks per :data:`FOLLOW_INTERVAL`).  Both end
    within a second of their channel closing (see the stderr heartbeat below).
    """
    if head > offset:
        check = _check(offset, head, check_size, "cat /dev/fd/3")
    else:  # tail seeks: no need to read the bytes before the window
        start = max(offset - check_size, 0)
        check = f"h=$(tail -c +{start + 1} /dev/fd/3 | head -c {offset - start} | md5sum)" if offset else "h=-"
    if follow:
        notice = quote(TRUNCATED.decode().rstrip("\n"))
        size = "$(stat -L -c %s /dev/fd/3)"
        # A follower outlives its channel until it next writes (sshd does not
        # signal it), and an old generation is never written again: each second
        # one byte goes to stderr, whose failure (EPIPE, with SIGPIPE ignored)
        # ends it -- the client drops those bytes (StreamChannel.extReceived).
        reader = (
            "trap '' PIPE; "
            "if tail --version >/dev/null 2>&1; then "
            f"tail -s 0.1 -c +{offset + 1} -f /dev/fd/3 2>&1 & t=$!; "
            f"while printf . >&2 && kill -0 $t 2>/dev/null; do sleep {FOLLOW_INTERVAL}; done; "
            "kill $t 2>/dev/null; exit 0; fi; "
            f"o={offset}; "
            f"while printf . >&2 && n={size}; do "
            f'[ "$n" -lt "$o" ] && {{ echo {notice}; exit 0; }}; '
            f'if [ "$n" -gt "$o" ]; then tail -c +$((o + 1)) /dev/fd/3 | head -c $((n - o)) || exit 0; '
            # shrunk while we read: how much of it we printed is unknown; stop right here
            f'[ "$({size[2:-1]})" -lt "$n" ] && {{ echo {notice}; exit 0; }}; o=$n; fi; '
            f"sleep {FOLLOW_INTERVAL}; done"
        )
    else:
        reader = f"exec tail -c +{offset + 1} /dev/fd/3"
    return (
        f"f={quote(path)}; "
        f'[ -r "$f" ] && [ ! -d "$f" ] || {{ echo {MISSING.decode()}; exit 0; }}; '
        'exec 3<"$f" || exit 0; '
        "set -- $(stat -L -c '%d %i %s' /dev/fd/3); "
        f"{check}; "
        'echo "RILL $1 $2 $3 ${h%% *}"; '
        f"{reader}"
    )


def gzip_stream_command(path: str, offset: int, check_size: int = CHECK_SIZE, head: int = 0) -> str:
    """Stream a compressed generation's decompressed bytes from ``offset``, with the same header.

    The header's identity is the ``.gz`` file's; its size field is the compressed size.
    """
    check = _check(offset, head, check_size, "gzip -dc /dev/fd/3")
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
