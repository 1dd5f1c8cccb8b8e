"""``rill``: the command line.  Each subcommand lives in its own module with a ``register``."""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("tail", "cat", "search", "status", "check", "reindex", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rill", description="Agentless log mirroring over SSH.")
    parser.add_argument(
        "-c", "--config", help="config file (default: $RILL_CONFIG, ./config.ini, /etc/rill/config.ini)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"rill.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"rill.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `rill cat ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
