"""Lines per second of each built-in parser, printed beside the ``raw`` parser's rate.

    .venv/bin/python bench/parsers.py [--lines 1000000] [--only syslog,iso8601]

Each parser gets its own generated lines (realistic shapes, timestamps 37 ms apart so a
second's cache entry serves ~27 lines, as on a busy server) and parses them on one core,
one instance, as a tap would.  ``raw`` is the anchor: the cost of decoding a line and
building its record, with no parsing at all.  The issue's aim: syslog and iso8601 at
200,000 lines/s or more.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rill.config import TapConfig
from rill.parsers import make_parser

START = 1795659693.0  # 2026-11-26T02:21:33Z
STEP = 0.037
SLICES = 10
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
AGENTS = ["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"]


def _parts(i: int) -> tuple[time.struct_time, int]:
    t = START + i * STEP
    return time.gmtime(t), int(t * 1000) % 1000


def syslog_3164(i: int) -> bytes:
    g, _ = _parts(i)
    return (f"{MONTHS[g.tm_mon - 1]} {g.tm_mday:2d} {g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} "
            f"web{i % 7} sshd[{1000 + i % 5000}]: Accepted publickey for ops from 10.0.{i % 256}.7 "
            f"port {40000 + i % 20000} ssh2").encode()


def syslog_5424(i: int) -> bytes:
    g, ms = _parts(i)
    return (f"<165>1 {time.strftime('%Y-%m-%dT%H:%M:%S', g)}.{ms:03d}Z web{i % 7}.example.com app "
            f"{i % 5000} ID47 [meta@32473 seq=\"{i}\" zone=\"eu\"] request handled in {i % 97} ms").encode()


def iso8601(i: int) -> bytes:
    g, ms = _parts(i)
    return (f"{time.strftime('%Y-%m-%dT%H:%M:%S', g)}.{ms:03d}+00:00 INFO [worker-{i % 8}] "
            f"job {i} finished in {i % 997} ms").encode()


def nginx(i: int) -> bytes:
    g, _ = _parts(i)
    return (f'203.0.113.{i % 256} - - [{time.strftime("%d/%b/%Y:%H:%M:%S", g)} +0000] '
            f'"GET /api/items/{i} HTTP/1.1" 200 {i % 9000} "https://example.com/" "{AGENTS[i % 2]}"').encode()


def apache(i: int) -> bytes:
    g, _ = _parts(i)
    return (f'198.51.100.{i % 256} - frank [{time.strftime("%d/%b/%Y:%H:%M:%S", g)} +0000] '
            f'"GET /apache_pb.gif HTTP/1.0" 200 {i % 9000}').encode()


def json_line(i: int) -> bytes:
    g, ms = _parts(i)
    return (f'{{"time":"{time.strftime("%Y-%m-%dT%H:%M:%S", g)}.{ms:03d}Z","level":"info",'
            f'"msg":"request","http":{{"method":"GET","status":200,"path":"/items/{i}"}}}}').encode()


def regex_line(i: int) -> bytes:
    g, _ = _parts(i)
    return f"{time.strftime('%d/%m/%Y %H:%M:%S', g)} [INFO] worker {i % 8} done".encode()


REGEX = r"regex:^(?P<datetime>\S+ \S+) \[(?P<level>\w+)\] (?P<message>.*)"
# (row name, parser spec, line generator, tap options)
CASES: list[tuple[str, str, Callable[[int], bytes], dict[str, str]]] = [
    ("raw", "raw", syslog_3164, {}),
    ("syslog (RFC 3164)", "syslog", syslog_3164, {}),
    ("syslog (RFC 5424)", "syslog", syslog_5424, {}),
    ("iso8601", "iso8601", iso8601, {}),
    ("nginx (combined)", "nginx", nginx, {}),
    ("apache (common)", "apache", apache, {}),
    ("json", "json", json_line, {}),
    ("regex + datetime_format", REGEX, regex_line, {"datetime_format": "%d/%m/%Y %H:%M:%S"}),
]


def run(spec: str, make_line: Callable[[int], bytes], count: int, options: dict[str, str]) -> tuple[float, int]:
    """(lines per second, unparsable lines) for ``count`` generated lines.

    The lines are parsed in ten consecutive slices by one parser instance; the rate is the
    median slice's, so a burst of load from elsewhere on the machine does not set the figure.
    """
    lines = [make_line(i) for i in range(count)]
    received = [START + i * STEP + 0.2 for i in range(count)]
    parser = make_parser(TapConfig("bench", ("h",), ("/p",), parser=spec, **options))
    parse = parser.parse
    size = max(1, count // SLICES)
    rates, errors = [], 0
    gc.collect()
    gc.disable()  # the records are dropped at once; a collection would time the allocator
    try:
        for start in range(0, count, size):
            began = time.perf_counter()
            for line, when in zip(lines[start:start + size], received[start:start + size], strict=True):
                if "parse_error" in parse(line, when):
                    errors += 1
            rates.append(min(size, count - start) / (time.perf_counter() - began))
    finally:
        gc.enable()
    return statistics.median(rates), errors


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--lines", type=int, default=1_000_000, help="lines per parser (default 1,000,000)")
    options.add_argument("--only", default="", help="comma-separated parser specs to run (raw always runs)")
    args = options.parse_args()
    only = {s for s in args.only.split(",") if s}
    print(f"{args.lines:,} lines per parser, one core, Python {sys.version.split()[0]} (median of {SLICES} slices)")
    print(f"{'parser':<26}{'lines/s':>12}{'vs raw':>9}{'unparsable':>12}")
    raw_rate = None
    for name, spec, make_line, tap_options in CASES:
        if only and spec != "raw" and spec not in only and name not in only:
            continue
        rate, errors = run(spec, make_line, args.lines, tap_options)
        raw_rate = raw_rate or rate
        print(f"{name:<26}{rate:>12,.0f}{rate / raw_rate:>8.0%} {errors:>11,}", flush=True)


if __name__ == "__main__":
    main()
