"""``rill check``: validate the config, then try every login and say which failed and why."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rill.cli.common import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check", help="validate the config and try every login")
    parser.add_argument("--no-login", action="store_true", help="only validate the config")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    print(f"{config.source}: configuration ok ({len(config.hosts)} hosts, {len(config.taps)} taps)")
    if args.no_login:
        return 0
    from twisted.internet import task

    from rill.login_check import check_all

    results: list[tuple[bool, str]] = []

    def main(reactor: Any) -> Any:
        return check_all(reactor, config).addCallback(results.extend)

    try:
        task.react(main)
    except SystemExit as e:
        if e.code:
            return int(e.code)
    for ok, line in results:
        print(line if ok else f"FAILED {line}", file=sys.stdout if ok else sys.stderr)
    return 0 if all(ok for ok, _ in results) else 1
