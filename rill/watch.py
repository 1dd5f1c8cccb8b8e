"""The watch channel: one long-running POSIX-sh loop per host that reports, every
``watch_interval`` seconds, the identity and size of each watched file and of
its rotated siblings (``path.*``, ``path-*``), plus the fingerprint of the file
at the path when it changed.  Pure: the command text and the parser of its
output; the tap runs it and feeds the snapshots to :func:`rill.rotation.plan`.

Output, one poll::

    T <server time, epoch seconds>
    W <watched path>                       (a configured path, or a glob's match)
    F <dev> <ino> <size> <mtime> <ctime> <name>
    H <n> <md5 of the first n bytes> <name>  (only when the file changed since the last poll)
    E

GNU coreutils and BusyBox both have ``stat -L -c`` (with ``%F``), ``sed``, ``head -c``, ``md5sum``,
``date +%s`` and fractional ``sleep``.  Names holding a newline are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rill.channels import ExecChannel
from rill.remote import quote
from rill.rotation import RemoteFile, Snapshot
from rill.store.mirror import FINGERPRINT_SIZE

_GLOB = re.compile(r"([*?]|\[[^]]*\])")


def shell_glob(pattern: str) -> str:
    """A glob for sh: its wildcards unquoted, every other character quoted."""
    parts = _GLOB.split(pattern)
    return "".join(part if i % 2 else (quote(part) if part else "") for i, part in enumerate(parts))


def is_glob(path: str) -> bool:
    return bool(_GLOB.search(path))


def watch_command(patterns: Iterable[str], interval: float) -> str:
    """The loop reporting every pattern (a path or a glob) each ``interval`` seconds."""
    lines = [
        # One listing of a path and its siblings: renames during it (a rotation
        # shifting .1 -> .2 -> .3) could show one file twice and another not at
        # all, so the identities are listed before and after, and the listing is
        # repeated until nothing was renamed meanwhile.
        # One stat for all of them, whatever their number (a year of dateext
        # files is hundreds): a stat per file costs a fork each, every poll.
        # %F leads, so only regular files pass (GNU says "regular empty file").
        "ids() {",
        "  stat -L -c '%F|%d %i %n' -- \"$1\" \"$1\".* \"$1\"-* 2>/dev/null | sed -n 's/^regular[^|]*|//p'",
        "}",
        "files() {",
        "  stat -L -c '%F|F %d %i %s %Y %Z %n' -- \"$1\" \"$1\".* \"$1\"-* 2>/dev/null | sed -n 's/^regular[^|]*|//p'",
        "}",
        "emit() {",
        "  i=0",
        "  while :; do",
        '    a=$(ids "$1"); body=$(files "$1"); b=$(ids "$1")',
        '    [ "$a" = "$b" ] && break',
        "    i=$((i + 1)); [ $i -ge 5 ] && break",
        "  done",
        "  printf 'W %s\\n' \"$1\"",
        '  [ -n "$body" ] && printf \'%s\\n\' "$body"',
        '  c="$1"',
        "  s=$(printf '%s\\n' \"$body\" | while read -r t d i z m x n; do [ \"$n\" = \"$c\" ] && echo \"$d $i $z $m $x\" && break; done)",
        '  [ -n "$s" ] || return',
        '  k="|$c $s|"',
        '  case "$prev" in *"$k"*) now="$now$k"; return;; esac',
        # Hash exactly the bytes the stat saw (a small file may grow in between).
        "  set -- \"$1\" $s; n=$4; [ \"$n\" -gt " + str(FINGERPRINT_SIZE) + " ] && n=" + str(FINGERPRINT_SIZE),
        '  h=$(head -c "$n" -- "$c" | md5sum)',
        # A rotation between the stat and the hash: the bytes hashed are another file's.
        '  [ "$(stat -L -c \'%d %i\' -- "$c" 2>/dev/null)" = "$2 $3" ] || return',
        '  now="$now$k"; printf \'H %s %s %s\\n\' "$n" "${h%% *}" "$c"',
        "}",
        "prev=",
        "while :; do",
        "  now=",
        '  echo "T $(date +%s)"',
    ]
    for pattern in patterns:
        if is_glob(pattern):
            lines.append(f'  for m in {shell_glob(pattern)}; do [ -f "$m" ] && emit "$m"; done')
        else:
            lines.append(f"  emit {quote(pattern)}")
    lines += ['  prev="$now"', "  echo E", f"  sleep {interval:g} || exit 0", "done"]
    return "\n".join(lines)


#: Bytes of requests one heads command carries (Linux takes at most 128 KiB in one argument).
HEADS_COMMAND_BYTES = 64 * 1024
#: Marks the end of the request list in :func:`heads_command` (a name can never be this line).
_HEADS_END = "RILL_HEADS_END"


def heads_command(requests: Iterable[tuple[str, int]], limit: int = HEADS_COMMAND_BYTES) -> str:
    """Fingerprints on demand: ``H n md5 dev ino name`` per (name, n); ``.gz`` files are read decompressed.

    The file is stat'ed before and after hashing: a head is printed only if the
    name held the same (device, inode) both times, and with that identity, so a
    rotation between the poll and this command cannot pass off another file's
    head as the polled file's (the tap drops heads whose identity differs).

    The requests go in a quoted here-document, one ``n name`` line each, read
    by one loop: a host keeping hundreds of rotated files asks for hundreds of
    heads, and a command with the loop body repeated per file outgrew the
    kernel's limit on one argument (``sh -c``: "Argument list too long").
    Requests beyond ``limit`` bytes of that list are left out, in order.
    """
    lines, size = [], 0
    for name, n in requests:
        line = f"{n} {name}\n"
        if "\n" in name or name == _HEADS_END:
            continue
        if size + len(line) > limit:
            break  # the rest are asked for again at a later poll (the tap keeps .gz heads it got)
        lines.append(line)
        size += len(line)
    return (
        "while IFS= read -r r; do n=${r%% *}; f=${r#* }; "
        "a=$(stat -L -c '%d %i' -- \"$f\" 2>/dev/null); "
        "case $f in *.gz) h=$(gzip -dc -- \"$f\" 2>/dev/null | head -c \"$n\" | md5sum) ;; "
        "*) h=$(head -c \"$n\" -- \"$f\" 2>/dev/null | md5sum) ;; esac; "
        "b=$(stat -L -c '%d %i' -- \"$f\" 2>/dev/null); "
        "[ -n \"$a\" ] && [ \"$a\" = \"$b\" ] && printf 'H %s %s %s %s\\n' \"$n\" \"${h%% *}\" \"$a\" \"$f\"; "
        f"done <<'{_HEADS_END}'\n{''.join(lines)}{_HEADS_END}\necho E"
    )


@dataclass
class _Poll:
    server_time: int = 0
    blocks: dict[str, list[RemoteFile]] = field(default_factory=dict)
    heads: dict[str, dict[int, str]] = field(default_factory=dict)


class WatchParser:
    """Turns the watch loop's output into one list of snapshots per poll.

    Heads are printed only when a file changed, so the parser remembers the
    last heads of each (name, identity, size, mtime) and carries them over.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._poll: _Poll | None = None
        self._heads: dict[tuple[str, int, int, int, int], dict[int, str]] = {}

    def feed(self, data: bytes) -> list[list[Snapshot]]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        polls = []
        for raw in lines:
            done = self._line(raw.decode("utf-8", "surrogateescape"))
            if done is not None:
                polls.append(done)
        return polls

    def _line(self, line: str) -> list[Snapshot] | None:
        kind, _, rest = line.partition(" ")
        if kind == "T":
            self._poll = _Poll(server_time=int(rest) if rest.isdigit() else 0)
        elif self._poll is None:
            return None
        elif kind == "W":
            self._current = rest
            self._poll.blocks.setdefault(rest, [])
        elif kind == "F":
            fields = rest.split(" ", 5)
            if len(fields) == 6 and all(f.isdigit() for f in fields[:5]):
                dev, ino, size, mtime, ctime = (int(f) for f in fields[:5])
                self._poll.blocks.setdefault(self._current, []).append(
                    RemoteFile(fields[5], dev, ino, size, mtime, ctime=ctime)
                )
        elif kind == "H":
            n, digest, name = (rest.split(" ", 2) + ["", ""])[:3]
            if n.isdigit():
                self._poll.heads.setdefault(name, {})[int(n)] = digest
        elif kind == "E":
            poll, self._poll = self._poll, None
            return self._snapshots(poll)
        return None

    def _snapshots(self, poll: _Poll) -> list[Snapshot]:
        snapshots = []
        remembered: dict[tuple[str, int, int, int, int], dict[int, str]] = {}
        for path, files in poll.blocks.items():
            current, siblings = None, []
            for f in files:
                key = (f.name, f.device, f.inode, f.size, f.mtime)
                heads = poll.heads.get(f.name) or self._heads.get(key) or {}
                if heads:
                    remembered[key] = heads
                f = RemoteFile(f.name, f.device, f.inode, f.size, f.mtime, heads=dict(heads), ctime=f.ctime)
                if f.name == path:
                    current = f
                else:
                    siblings.append(f)
            snapshots.append(Snapshot(path, current, tuple(siblings), server_time=poll.server_time))
        self._heads = remembered
        return snapshots


def parse_heads(output: bytes) -> dict[str, dict[int, str]]:
    """The output of :func:`heads_command`: name -> {n: md5} (identities ignored)."""
    return {name: heads for name, (_, heads) in parse_heads_with_identity(output).items()}


def parse_heads_with_identity(output: bytes) -> dict[str, tuple[tuple[int, int] | None, dict[int, str]]]:
    """The output of :func:`heads_command`: name -> ((device, inode) hashed, {n: md5}).

    A name whose heads came from two identities (rotated between two requests)
    keeps only the first identity's.  Lines without an identity (``H n md5 name``)
    give None.
    """
    heads: dict[str, tuple[tuple[int, int] | None, dict[int, str]]] = {}
    for line in output.decode("utf-8", "surrogateescape").splitlines():
        kind, _, rest = line.partition(" ")
        if kind != "H":
            continue
        fields = rest.split(" ", 4)
        identity: tuple[int, int] | None = None
        if len(fields) == 5 and fields[2].isdigit() and fields[3].isdigit():
            n, digest, name = fields[0], fields[1], fields[4]
            identity = (int(fields[2]), int(fields[3]))
        else:
            n, digest, name = (rest.split(" ", 2) + ["", ""])[:3]
        if not (n.isdigit() and re.fullmatch(r"[0-9a-f]{32}", digest)):
            continue
        known = heads.setdefault(name, (identity, {}))
        if known[0] == identity:
            known[1][int(n)] = digest
    return heads


class WatchChannel(ExecChannel):
    """The host's watch loop; every complete poll goes to ``host_tap.poll_received``."""

    def __init__(self, host_tap: Any, command: str) -> None:
        super().__init__(command)
        self.host_tap = host_tap
        self.parser = WatchParser()

    def dataReceived(self, data: bytes) -> None:
        for snapshots in self.parser.feed(data):
            self.host_tap.poll_received(snapshots)

    def closed(self) -> None:
        self.conn.channel_closed()
        self.host_tap.channel_closed(self)
        self.host_tap._watch_ended(self)
