"""A deterministic generated log corpus in the mirror layout (tests and bench).

Lines look like sshd, nginx and application logs, start with their own ISO
8601 time, and the ``.times`` records say each line was received at that very
time, so the receipt-time datetime equals the time written in the line.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Iterator
from datetime import datetime, timezone
from urllib.parse import quote

TIMES = struct.Struct("<Qd")
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

USERS = ["root", "admin", "ops", "deploy", "postgres", "www-data", "git", "backup", "oracle", "test"]
PATHS = ["/", "/api/v1/users", "/api/v1/orders", "/login", "/static/app.js", "/health", "/api/v2/search",
         "/favicon.ico", "/metrics", "/admin/settings"]
AGENTS = ["curl/8.5.0", "Mozilla/5.0", "python-requests/2.31", "Go-http-client/1.1", "kube-probe/1.29"]
LEVELS = ["INFO"] * 12 + ["DEBUG"] * 6 + ["WARN"] * 3 + ["ERROR"]
WORDS = ("cache flush queue worker retry timeout session token refresh batch commit rollback index shard "
         "replica leader follower snapshot compaction backlog throttle quota webhook invoice payment "
         "customer order shipment inventory catalog pricing discount coupon ledger audit").split()
RARE = ["zanzibar", "quokka", "xylophone", "pterodactyl", "kumquat"]


def iso(ms: int) -> str:
    when = datetime.fromtimestamp(ms // 1000, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _ip(r: random.Random) -> str:
    return f"10.{r.randrange(4)}.{r.randrange(256)}.{r.randrange(1, 255)}"


def make_line(r: random.Random, host: str, kind: int, ms: int) -> str:
    """One log line of the given kind (0 sshd, 1 nginx, 2 app)."""
    stamp = iso(ms)
    if kind == 0:
        pid = r.randrange(1000, 40000)
        if r.random() < 0.6:
            user = r.choice(USERS)
            return (f"{stamp} {host} sshd[{pid}]: Failed password for invalid user {user} from {_ip(r)} "
                    f"port {r.randrange(1024, 65535)} ssh2")
        return f"{stamp} {host} sshd[{pid}]: Accepted publickey for {r.choice(USERS)} from {_ip(r)} port {r.randrange(1024, 65535)} ssh2"
    if kind == 1:
        status = r.choice([200] * 20 + [301, 304, 404, 404, 500, 502])
        return (f'{stamp} {host} nginx: {_ip(r)} - - "GET {r.choice(PATHS)} HTTP/1.1" {status} '
                f'{r.randrange(100, 90000)} "-" "{r.choice(AGENTS)}" rt={r.randrange(1, 900) / 1000:.3f}')
    level = r.choice(LEVELS)
    words = " ".join(r.choice(WORDS) for _ in range(r.randrange(2, 6)))
    extra = f" note={r.choice(RARE)}" if r.random() < 0.0005 else ""
    return (f"{stamp} {host} app[{r.randrange(100, 999)}]: {level} req_id=req-{r.getrandbits(24):06x} "
            f"user={r.choice(USERS)} {words} took {r.randrange(1, 5000)}ms{extra}")


def file_dir(data_dir: str, host: str, path: str) -> str:
    return os.path.join(data_dir, "mirror", quote(host, safe=""), quote(path, safe=""))


def write_generation(data_dir: str, host: str, path: str, number: int, lines: list[tuple[int, str]],
                     tap: str = "logs", state: str = "drained", partial: bytes = b"") -> None:
    """Write one generation (lines of ``(ms, text)``) and add it to the checkpoint."""
    directory = file_dir(data_dir, host, path)
    os.makedirs(directory, exist_ok=True)
    out = bytearray()
    times = bytearray()
    for ms, text in lines:
        out += text.encode() + b"\n"
        times += TIMES.pack(len(out), ms / 1000)
    out += partial
    with open(os.path.join(directory, f"g{number:06d}.log"), "wb") as f:
        f.write(out)
    with open(os.path.join(directory, f"g{number:06d}.times"), "wb") as f:
        f.write(times)
        if partial:
            f.write(TIMES.pack(len(out), (lines[-1][0] if lines else START_MS) / 1000))
    checkpoint = os.path.join(directory, "checkpoint.json")
    state_doc = {"version": 1, "host": host, "path": path, "tap": tap, "generations": []}
    if os.path.exists(checkpoint):
        with open(checkpoint) as f:
            state_doc = json.load(f)
    state_doc["generations"] = [g for g in state_doc["generations"] if g["number"] != number]
    state_doc["generations"].append({"number": number, "device": 1, "inode": 1000 + number,
                                     "fingerprint": "", "state": state})
    state_doc["generations"].sort(key=lambda g: g["number"])
    with open(checkpoint, "w") as f:
        json.dump(state_doc, f)


def corpus_files(hosts: int, files: int) -> list[tuple[str, str, int]]:
    """(host, path, kind) of every generated file."""
    names = ["/var/log/auth.log", "/var/log/nginx/access.log", "/srv/app/app.log"]
    return [(f"web{h + 1:02d}", names[k % 3], k % 3) for h in range(hosts) for k in range(files)]


def generate(data_dir: str, lines: int, hosts: int = 4, files: int = 3, generations: int = 2,
             span_ms: int = 86_400_000, seed: int = 7) -> int:
    """Write a corpus of about ``lines`` lines; return the raw byte count."""
    specs = corpus_files(hosts, files)
    per_file = max(1, lines // len(specs))
    total = 0
    for n, (host, path, kind) in enumerate(specs):
        r = random.Random(seed * 1000 + n)
        stamps = sorted(START_MS + r.randrange(span_ms) for _ in range(per_file))
        made = [(ms, make_line(r, host, kind, ms)) for ms in stamps]
        cut = [len(made) * g // generations for g in range(generations + 1)]
        for g in range(generations):
            chunk = made[cut[g] : cut[g + 1]]
            state = "live" if g == generations - 1 else "drained"
            write_generation(data_dir, host, path, g + 1, chunk, state=state)
            total += sum(len(t) + 1 for _, t in chunk)
    return total


def iter_lines(data_dir: str) -> Iterator[tuple[str, str, int, int, bytes, float]]:
    """(host, path, generation, offset, line, receipt time) of every complete line, straight from the files."""
    root = os.path.join(data_dir, "mirror")
    for host_q in sorted(os.listdir(root)):
        for path_q in sorted(os.listdir(os.path.join(root, host_q))):
            directory = os.path.join(root, host_q, path_q)
            with open(os.path.join(directory, "checkpoint.json")) as f:
                doc = json.load(f)
            for g in doc["generations"]:
                yield from _generation_lines(directory, doc["host"], doc["path"], g["number"])


def _generation_lines(directory: str, host: str, path: str, number: int) -> Iterator[tuple[str, str, int, int, bytes, float]]:
    try:
        with open(os.path.join(directory, f"g{number:06d}.log"), "rb") as f:
            data = f.read()
        with open(os.path.join(directory, f"g{number:06d}.times"), "rb") as f:
            records = list(TIMES.iter_unpack(f.read()))
    except FileNotFoundError:
        return
    offset = 0
    k = 0
    for line in data.split(b"\n")[:-1]:
        while records[k][0] <= offset:
            k += 1
        yield host, path, number, offset, line, records[k][1]
        offset += len(line) + 1
