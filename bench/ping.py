"""Benchmark: rill.ping.PingService beside fping, pinging the same loopback addresses.

    .venv/bin/python bench/ping.py [--hosts 1000] [--seconds 30] [--interval 1.0]

Linux answers the whole of 127.0.0.0/8 on loopback, so 127.1.x.y needs no set-up; nothing
but loopback is pinged. Needs root (raw sockets; fping -i below 10 ms). For each tool it
prints requests, replies, packets per second both ways, replies missed (Rill: requests not
answered by the time the next one was due, so those still in flight at the end are not
counted; fping: sent - received), the mean of the hosts' rtts (Rill: last; fping: average),
state changes to unresponsive (Rill only), and CPU seconds used (Rill: this process, whose
only work is the service; fping: resource.RUSAGE_CHILDREN).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from rill.ping import PingService  # noqa: E402


@dataclass
class Result:
    tool: str
    seconds: float
    sent: int
    received: int
    missed: int
    cpu: float
    rtt_ms: float | None
    flaps: int = 0

    def row(self) -> str:
        rtt = "-" if self.rtt_ms is None else f"{self.rtt_ms:.3f}"
        return (f"{self.tool:<6} {self.seconds:7.1f} {self.sent:9d} {self.received:9d} "
                f"{self.sent / self.seconds:9.1f} {self.received / self.seconds:9.1f} "
                f"{self.missed:7d} {rtt:>8} {self.cpu:7.2f} "
                f"{100 * self.cpu / self.seconds:6.1f}% {self.flaps:6d}")


HEADER = (f"{'tool':<6} {'wall_s':>7} {'requests':>9} {'replies':>9} {'out_pps':>9} "
          f"{'in_pps':>9} {'missed':>7} {'rtt_ms':>8} {'cpu_s':>7} {'cpu%':>7} {'downs':>6}")


def addresses(count: int) -> list[str]:
    """``count`` loopback addresses 127.1.x.y (y from 1 to 250)."""
    return [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(count)]


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def run_rill(reactor: Any, hosts: list[str], seconds: float, interval: float) -> Result:
    downs: list[str] = []
    service = PingService([(a, a) for a in hosts], interval=interval, reactor=reactor)
    service.add_observer(lambda host, up: None if up else downs.append(host))
    cpu, wall = cpu_seconds(resource.RUSAGE_SELF), time.monotonic()
    service.startService()
    await task.deferLater(reactor, seconds, lambda: None)
    rows = service.status().values()
    cpu, wall = cpu_seconds(resource.RUSAGE_SELF) - cpu, time.monotonic() - wall
    await defer.maybeDeferred(service.stopService)
    rtts = [r["rtt_ms"] for r in rows if r["rtt_ms"] is not None]
    sent, received = sum(r["sent"] for r in rows), sum(r["received"] for r in rows)
    return Result("rill", wall, sent, received, sum(r["lost"] for r in rows), cpu,
                  sum(rtts) / len(rtts) if rtts else None, len(downs))


SUMMARY = re.compile(r"xmt/rcv/%loss = (\d+)/(\d+)/\d+%(?:, min/avg/max = [\d.]+/([\d.]+)/)?")


def run_fping(hosts: list[str], seconds: float, interval: float) -> Result | None:
    fping = shutil.which("fping")
    if fping is None:
        print("fping not found (apt-get install fping): skipped", file=sys.stderr)
        return None
    count = max(1, round(seconds / interval))
    spacing = max(0.01, interval * 1000 / len(hosts))  # ms between any two requests: paced
    with tempfile.NamedTemporaryFile("w", suffix=".hosts") as listing:
        listing.write("\n".join(hosts) + "\n")
        listing.flush()
        command = [fping, "-q", "-c", str(count), "-p", str(int(interval * 1000)),
                   "-i", f"{spacing:g}", "-f", listing.name]
        cpu, wall = cpu_seconds(resource.RUSAGE_CHILDREN), time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True)
        cpu, wall = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu, time.monotonic() - wall
    sent = received = 0
    averages = []
    for match in SUMMARY.finditer(done.stderr):
        sent, received = sent + int(match[1]), received + int(match[2])
        if match[3]:
            averages.append(float(match[3]))
    if not sent:
        print(f"fping printed no summary:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    print(f"fping: {' '.join(command[:-2])} -f <{len(hosts)} hosts>")
    return Result("fping", wall, sent, received, sent - received, cpu,
                  sum(averages) / len(averages) if averages else None)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--no-fping", action="store_true", help="run Rill alone")
    return parser.parse_args(argv)


async def main(reactor: Any, argv: list[str]) -> None:
    options = parse(argv)
    hosts = addresses(options.hosts)
    print(f"{len(hosts)} loopback hosts, {options.seconds:g} s, one request per host "
          f"every {options.interval:g} s")
    rill = await run_rill(reactor, hosts, options.seconds, options.interval)
    results: list[Result | None] = [rill]
    if not options.no_fping:
        results.append(run_fping(hosts, options.seconds, options.interval))
    print(HEADER)
    for result in results:
        if result is not None:
            print(result.row())


if __name__ == "__main__":
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
