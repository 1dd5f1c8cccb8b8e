"""Mirror throughput: Rill from offset 0 beside `ssh host cat file > /dev/null`, in one run.

Starts the private test sshd (root needed, as for the integration tests), writes a
file of numbered log lines (200 MB by default), and prints MB/s and CPU seconds for:

* the anchor: OpenSSH's `ssh` client (via sshpass) catting the file to /dev/null;
* `twistd rill` mirroring it from offset 0, no subscriber;
* the same with a ZeroMQ SUB client connected and reading every line.

    .venv/bin/python bench/throughput.py [--megabytes 200]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.target import bench_target  # noqa: E402
from tests.integration.rig import host_section  # noqa: E402
from tests.integration.sshd import free_port  # noqa: E402

BIN = os.path.dirname(sys.executable)


def make_file(path: str, megabytes: int) -> int:
    line = b" the quick brown fox jumps over the lazy dog; status=200 bytes=5120 request_id=abcdef\n"
    with open(path, "wb") as f:
        n = 0
        while f.tell() < megabytes * 1_000_000:
            f.write(b"".join(b"%09d" % (n + i) + line for i in range(10000)))
            n += 10000
    os.chmod(path, 0o644)
    return os.path.getsize(path)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ssh_cat(server, path: str) -> tuple[float, float]:
    login = server.gnu
    cpu = child_cpu()
    start = time.monotonic()
    subprocess.run(
        ["sshpass", "-p", login.password, "ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-p", str(server.port), f"{login.username}@127.0.0.1", f"cat '{path}'"],
        stdout=subprocess.DEVNULL, check=True,
    )
    return time.monotonic() - start, child_cpu() - cpu


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rill_mirror(server, path: str, size: int, with_subscriber: bool, expected_lines: int = 0) -> tuple:
    work = tempfile.mkdtemp(prefix="rill-bench-")
    publish = f"tcp://127.0.0.1:{free_port()}"
    config = os.path.join(work, "config.ini")
    with open(config, "w") as f:
        f.write(
            f"[rill]\ndata_dir = {work}/data\npublish = {publish}\ncontrol = tcp://127.0.0.1:{free_port()}\n"
            f"publish_hwm = 100000\n"
            + host_section("bench", server, server.gnu)
            +
            f"[tap:big]\nhosts = bench\npath = {path}\n"
        )
    subscriber = None
    if with_subscriber:
        subscriber = subprocess.Popen(
            [sys.executable, "-c", _SUBSCRIBER, publish, str(expected_lines)], stdout=subprocess.PIPE, text=True
        )
    from urllib.parse import quote

    mirror = os.path.join(work, "data", "mirror", "bench", quote(path, safe=""), "g000001.log")
    start = time.monotonic()
    rill = subprocess.Popen(
        [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "rill", "-c", config],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    while not (os.path.exists(mirror) and os.path.getsize(mirror) >= size):
        time.sleep(0.01)
        if rill.poll() is not None:
            raise RuntimeError("twistd rill exited")
    elapsed = time.monotonic() - start
    cpu = process_cpu(rill.pid)
    published = None
    if subscriber is not None:
        try:  # the subscriber exits when it has every line
            subscriber.wait(timeout=300)
            published = time.monotonic() - start
        except subprocess.TimeoutExpired:
            subscriber.terminate()
    rill.terminate()
    rill.wait()
    lines = int(subscriber.communicate()[0].strip() or 0) if subscriber is not None else -1
    shutil.rmtree(work, ignore_errors=True)
    return elapsed, cpu, lines, published


_SUBSCRIBER = """
import signal, sys, zmq
count = 0
def done(*_):
    print(count, flush=True); sys.exit(0)
signal.signal(signal.SIGTERM, done)
sub = zmq.Context().socket(zmq.SUB)
sub.setsockopt(zmq.RCVHWM, 1000000)
sub.connect(sys.argv[1]); sub.setsockopt(zmq.SUBSCRIBE, b"")
expected = int(sys.argv[2])
while count < expected:
    sub.recv_multipart(); count += 1
done()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    with bench_target("rill-bench-target-") as (server, target):
        path = os.path.join(target, "big.log")
        size = make_file(path, args.megabytes)
        with open(path, "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        mb = size / 1e6
        print(f"file: {mb:.0f} MB, {lines:,} lines, loopback, one CPU-bound reactor")
        print(f"{'path':<34} {'seconds':>8} {'MB/s':>8} {'CPU s':>7}")
        elapsed, cpu = ssh_cat(server, path)
        anchor = mb / elapsed
        print(f"{'ssh host cat file > /dev/null':<34} {elapsed:8.2f} {anchor:8.1f} {cpu:7.2f}   (anchor)")
        elapsed, cpu, _, _ = rill_mirror(server, path, size, with_subscriber=False)
        print(f"{'rill mirror, no subscriber':<34} {elapsed:8.2f} {mb / elapsed:8.1f} {cpu:7.2f}   "
              f"({100 * mb / elapsed / anchor:.0f}% of ssh cat)")
        elapsed, cpu, got, published = rill_mirror(server, path, size, with_subscriber=True, expected_lines=lines)
        print(f"{'rill mirror, SUB client reading':<34} {elapsed:8.2f} {mb / elapsed:8.1f} {cpu:7.2f}   "
              f"({100 * mb / elapsed / anchor:.0f}% of ssh cat)")
        if published is not None:
            print(f"{'  every line at the SUB client':<34} {published:8.2f} {mb / published:8.1f}"
                  f"           ({got:,} lines, {got / published:,.0f} lines/s)")
        else:
            print(f"  the SUB client got {got:,} of {lines:,} lines within 300 s (PUB high-water mark drops)")


if __name__ == "__main__":
    main()
