"""Line latency: from append on the server to arrival at a ZeroMQ SUB client.

Appends 10,000 lines at 1,000 lines/s to a file on the private test sshd (root
needed, as for the integration tests), each carrying its send time, and prints
p50/p99 for Rill (GNU and BusyBox logins) beside `ssh host tail -f` measured
the same way in the same run.

    .venv/bin/python bench/latency.py [--lines 10000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.target import bench_target  # noqa: E402
from tests.integration.rig import host_section  # noqa: E402
from tests.integration.sshd import free_port  # noqa: E402

BIN = os.path.dirname(sys.executable)


def write_lines(path: str, lines: int, rate: float) -> None:
    start = time.monotonic()
    with open(path, "a", buffering=1) as f:
        for i in range(lines):
            due = start + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            f.write(f"{time.time():.6f} line {i}\n")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99)] * 1000


def measure_ssh_tail(server, path: str, lines: int, rate: float, login) -> tuple[float, float, int]:
    proc = subprocess.Popen(
        ["sshpass", "-p", login.password, "ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-p", str(server.port), f"{login.username}@127.0.0.1", f"tail -n 0 -f '{path}'"],
        stdout=subprocess.PIPE,
    )
    time.sleep(1.0)  # let the login finish before the first line
    samples: list[float] = []

    def read() -> None:
        for raw in proc.stdout:
            samples.append(time.time() - float(raw.split()[0]))
            if len(samples) >= lines:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    write_lines(path, lines, rate)
    reader.join(timeout=30)
    proc.kill()
    return (*percentiles(samples), len(samples)) if samples else (float("nan"), float("nan"), 0)


def measure_rill(server, path: str, lines: int, rate: float, login) -> tuple[float, float, int]:
    work = tempfile.mkdtemp(prefix="rill-latency-")
    publish = f"tcp://127.0.0.1:{free_port()}"
    config = os.path.join(work, "config.ini")
    with open(config, "w") as f:
        f.write(
            f"[rill]\ndata_dir = {work}/data\npublish = {publish}\ncontrol = tcp://127.0.0.1:{free_port()}\n"
            + host_section("bench", server, login, ping="off")
            +
            f"[tap:latency]\nhosts = bench\npath = {path}\n"
        )
    rill = subprocess.Popen([os.path.join(BIN, "twistd"), "-n", "--pidfile=", "rill", "-c", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.connect(publish)
    sub.setsockopt(zmq.SUBSCRIBE, b"line/")
    time.sleep(2.0)  # login and first poll before the first line
    samples: list[float] = []
    import json

    def read() -> None:
        while len(samples) < lines and sub.poll(10000):
            message = json.loads(sub.recv_multipart()[1])
            samples.append(time.time() - float(message["line"].split()[0]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    write_lines(path, lines, rate)
    reader.join(timeout=30)
    rill.terminate()
    rill.wait()
    sub.close(linger=0)
    shutil.rmtree(work, ignore_errors=True)
    return (*percentiles(samples), len(samples)) if samples else (float("nan"), float("nan"), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args()
    with bench_target("rill-latency-target-") as (server, target):
        print(f"{args.lines} lines at {args.rate:g} lines/s, loopback; latency from append to arrival")
        print(f"{'path':<36} {'p50 ms':>8} {'p99 ms':>8} {'lines':>7}")
        for name, login in (("GNU", server.gnu), ("BusyBox", server.busybox)):
            for label, measure in (("ssh host tail -f", measure_ssh_tail), ("rill -> SUB", measure_rill)):
                path = os.path.join(target, f"{name}-{label.split()[0]}.log")
                open(path, "w").close()
                os.chmod(path, 0o644)
                p50, p99, n = measure(server, path, args.lines, args.rate, login)
                print(f"{label + ' (' + name + ')':<36} {p50:8.1f} {p99:8.1f} {n:7d}")


if __name__ == "__main__":
    main()
