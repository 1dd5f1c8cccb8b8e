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

GNU coreutils and BusyBox both have ``stat -L -c``, ``head -c``, ``md5sum``,
``date +%s`` and fractional ``sleep``.  Names holding a newline are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from typing import Any

from twisted.conch.ssh import common
from twisted.conch.ssh.channel import SSHChannel

from rill.remote import quote
from rill.sshclient import exec_request
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
        "emit() {",
        "  printf 'W %s\\n' \"$1\"",
        '  for c in "$1" "$1".* "$1"-*; do',
        '    [ -f "$c" ] || continue',
        "    s=$(stat -L -c '%d %i %s %Y %Z' -- \"$c\" 2>/dev/null) || continue",
        '    printf \'F %s %s\\n\' "$s" "$c"',
        '    [ "$c" = "$1" ] || continue',
        '    k="|$c $s|"; now="$now$k"',
        '    case "$prev" in *"$k"*) continue;; esac',
        # Hash exactly the bytes the stat saw (a small file may grow in between).
        "    set -- \"$1\" $s; n=$4; [ \"$n\" -gt " + str(FINGERPRINT_SIZE) + " ] && n=" + str(FINGERPRINT_SIZE),
        '    h=$(head -c "$n" -- "$c" | md5sum); printf \'H %s %s %s\\n\' "$n" "${h%% *}" "$c"',
        "  done",
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


def heads_command(requests: Iterable[tuple[str, int]]) -> str:
    """Fingerprints on demand: ``H n md5 name`` per (name, n); ``.gz`` files are read decompressed."""
    parts = []
    for name, n in requests:
        reader = f"gzip -dc -- {quote(name)} 2>/dev/null" if name.endswith(".gz") else f"head -c {n} -- {quote(name)}"
        limit = f" | head -c {n}" if name.endswith(".gz") else ""
        parts.append(f"h=$({reader}{limit} | md5sum); printf 'H {n} %s %s\\n' \"${{h%% *}}\" {quote(name)}")
    return "; ".join(parts) + "; echo E"


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
    """The output of :func:`heads_command`: name -> {n: md5}."""
    heads: dict[str, dict[int, str]] = {}
    for line in output.decode("utf-8", "surrogateescape").splitlines():
        kind, _, rest = line.partition(" ")
        if kind != "H":
            continue
        n, digest, name = (rest.split(" ", 2) + ["", ""])[:3]
        if n.isdigit() and re.fullmatch(r"[0-9a-f]{32}", digest):
            heads.setdefault(name, {})[int(n)] = digest
    return heads


class WatchChannel(SSHChannel):
    """The host's watch loop; every complete poll goes to ``host_tap.poll_received``."""

    name = b"session"

    def __init__(self, host_tap: Any, command: str) -> None:
        super().__init__(localWindow=2**20, localMaxPacket=2**15)
        self.host_tap = host_tap
        self.command = command
        self.parser = WatchParser()
        self.stopped = False

    def channelOpen(self, specificData: bytes) -> None:
        self.conn.channel_opened()
        self._rill_opened.callback(None)
        if getattr(self, "stopped", False):  # stopped while waiting for a connection
            self.loseConnection()
            return
        exec_request(self.conn, self, self.command).addErrback(lambda _: self.loseConnection())

    def openFailed(self, reason: Any) -> None:
        self._rill_opened.errback(reason)

    def dataReceived(self, data: bytes) -> None:
        for snapshots in self.parser.feed(data):
            self.host_tap.poll_received(snapshots)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.conn is None:  # never opened: nothing runs on the server
            return
        try:
            self.conn.sendRequest(self, b"signal", common.NS(b"TERM"))
        except Exception:
            pass
        self.loseConnection()

    def closed(self) -> None:
        self.conn.channel_closed()
        self.host_tap.channel_closed(self)
        self.host_tap._watch_ended(self)
