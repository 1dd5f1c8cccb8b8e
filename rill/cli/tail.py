"""``rill tail [HOST [PATH]]``: live lines from the data PUB socket."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import zmq

from rill.cli.common import connect_endpoint, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tail", help="print lines as they arrive")
    parser.add_argument("host", nargs="?", help="only this host")
    parser.add_argument("path", nargs="?", help="only this file")
    parser.add_argument("--json", action="store_true", help="print the raw JSON messages")
    parser.add_argument("--grep", metavar="QUERY", help="only lines matching QUERY (the search language)")
    parser.add_argument("--count", type=int, help="stop after this many lines")
    parser.set_defaults(func=run)


def _grep(query: str | None) -> Callable[[dict], bool]:
    if not query:
        return lambda message: True
    from rill.index import QueryError, compile_filter

    try:
        return compile_filter(query)
    except QueryError as e:
        print(f"rill tail: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def topic_prefix(host: str | None, path: str | None) -> bytes:
    if host is None:
        return b"line/"
    if path is None:
        return f"line/{host}/".encode()
    return f"line/{host}/{path}".encode("utf-8", "surrogateescape")


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    matches = _grep(args.grep)
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100000)
    sub.connect(connect_endpoint(config.publish))
    sub.setsockopt(zmq.SUBSCRIBE, topic_prefix(args.host, args.path))
    sys.stdout.reconfigure(errors="surrogateescape")  # undecodable bytes come out as they went in
    out = sys.stdout
    seen = 0
    try:
        while args.count is None or seen < args.count:
            frames = sub.recv_multipart()
            if len(frames) != 2:
                continue
            message = json.loads(frames[1])
            if args.path is not None and message.get("path") != args.path:
                continue  # the prefix also matches app.log.1 when tailing app.log
            if not matches(message):
                continue
            seen += 1
            if args.json:
                out.write(frames[1].decode() + "\n")
            elif args.host and args.path:
                out.write(message["line"] + "\n")
            else:
                out.write(f"{message['host']} {message['path']}: {message['line']}\n")
            out.flush()
    finally:
        sub.close(linger=0)
    return 0
