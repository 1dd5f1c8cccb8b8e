"""``rill status``: ask the running rill what every tap is doing.

The request goes to the control ROUTER (``[rill] control``) from a DEALER
socket, framed ``[b"", json]`` like a REQ client so the ROUTER's reply
envelope brings the answer back; a fresh socket per request, so a late answer
to an earlier request can never be taken for the current one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from typing import Any

import zmq

from rill.cli.common import connect_endpoint, load_config
from rill.protocols.signalling import format_datetime
from rill.status import report_from_reply, status_renderable

DEFAULT_TIMEOUT = 5.0
DEFAULT_WATCH = 2.0


class NoAnswer(Exception):
    """The instance did not answer (in time), or answered ``failed``; the message says which."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="every tap: state, offset, lag, reconnects (asks the running rill)")
    parser.add_argument("--json", action="store_true", help="the status as JSON, for scripts")
    parser.add_argument("--watch", nargs="?", type=float, const=DEFAULT_WATCH, metavar="SECONDS",
                        help=f"refresh every SECONDS (default {DEFAULT_WATCH:g}) until Ctrl-C")
    parser.add_argument("--progress", action="store_true",
                        help="progress bars (bytes, rate, time left) until every tap has caught up")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"how long to wait for an answer (default {DEFAULT_TIMEOUT:g})")
    parser.set_defaults(func=run)


def status_request(now: float) -> dict[str, str]:
    """A ``status`` request in the signalling protocol's envelope."""
    return {
        "command": "status",
        "unique_id": uuid.uuid4().hex,
        "client_id": f"rill-status-{os.getpid()}",
        "datetime": format_datetime(now),
    }


def ask_status(endpoint: str, timeout: float, context: zmq.Context | None = None) -> dict[str, Any]:
    """The status dict from the rill at ``endpoint`` (a connectable ZeroMQ endpoint); NoAnswer otherwise."""
    request = status_request(time.time())
    dealer = (context or zmq.Context.instance()).socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(endpoint)
        dealer.send_multipart([b"", json.dumps(request).encode()])
        reply = _await_reply(dealer, request["unique_id"], time.monotonic() + timeout)
    finally:
        dealer.close(linger=0)
    if reply is None:
        raise NoAnswer(f"no answer from {endpoint} (is rill running?)")
    if reply.get("status") != "ok":
        raise NoAnswer(f"{endpoint} refused the request: {reply.get('failure_reason') or reply.get('status')}")
    return report_from_reply(reply)


def _await_reply(dealer: zmq.Socket, unique_id: str, deadline: float) -> dict[str, Any] | None:
    while (left := deadline - time.monotonic()) > 0:
        if not dealer.poll(max(1, int(left * 1000)), zmq.POLLIN):
            return None
        frames = dealer.recv_multipart()
        try:
            reply = json.loads(frames[-1])
        except ValueError:
            continue
        if isinstance(reply, dict) and reply.get("unique_id") == unique_id:
            return reply
    return None


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    if not config.control:
        print("rill status: the config has no [rill] control endpoint to ask", file=sys.stderr)
        return 1
    endpoint = connect_endpoint(config.control)
    if args.watch is not None:
        return _watch(endpoint, args)
    if args.progress:
        return _progress(endpoint, args)
    try:
        report = ask_status(endpoint, args.timeout)
    except NoAnswer as e:
        print(f"rill status: {e}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        console = _console()
        console.print(status_renderable(report, console.width))
    return 0


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _watch(endpoint: str, args: argparse.Namespace) -> int:
    """Refresh until interrupted: in place on a terminal, one report after another otherwise."""
    from rich.live import Live
    from rich.text import Text

    console = _console()
    interval = max(args.watch, 0.1)
    live = Live(console=console, auto_refresh=False) if console.is_terminal and not args.json else None
    with live if live is not None else contextlib.nullcontext():
        while True:
            try:
                report: Any = ask_status(endpoint, min(args.timeout, interval * 5))
            except NoAnswer as e:
                report = None
                message = Text(f"rill status: {e}; asking again every {interval:g}s", style="red")
            if args.json:
                sys.stdout.write(json.dumps(report if report is not None else {"error": str(message)}) + "\n")
                sys.stdout.flush()
            elif live is not None:
                live.update(status_renderable(report, console.width) if report else message, refresh=True)
            else:
                console.print(status_renderable(report, console.width) if report else message)
            time.sleep(interval)



def _progress(endpoint: str, args: argparse.Namespace) -> int:
    """One bar per tap that is behind its server file, until all have caught up."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    bars: dict[tuple[str, str], Any] = {}
    with Progress(*columns, console=_console()) as progress:
        while True:
            try:
                report = ask_status(endpoint, args.timeout)
            except NoAnswer as e:
                print(f"rill status: {e}", file=sys.stderr)
                return 1
            behind = 0
            for tap in report.get("taps", []):
                key = (tap["host"], tap["path"])
                total = max(tap.get("remote_size") or 0, tap.get("offset") or 0)
                if key not in bars:
                    if not tap.get("lag_bytes"):
                        continue
                    bars[key] = progress.add_task(f"{tap['host']} {tap['path']}", total=total)
                progress.update(bars[key], completed=tap.get("offset") or 0, total=total)
                behind += bool(tap.get("lag_bytes"))
            if not behind:
                return 0
            time.sleep(0.5)
