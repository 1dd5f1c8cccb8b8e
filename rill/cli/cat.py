"""``rill cat HOST PATH``: the mirrored bytes exactly as stored, all generations oldest first."""

from __future__ import annotations

import argparse
import shutil
import sys

from rill.cli.common import load_config
from rill.store.mirror import MirrorStore


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cat", help="print the mirrored bytes of a file")
    parser.add_argument("host")
    parser.add_argument("path")
    parser.add_argument("--generation", "-g", type=int, help="only this generation (1 is the oldest)")
    parser.add_argument("--list", action="store_true", help="list the generations instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    mirrored = MirrorStore(config.data_dir).find(args.host, args.path)
    if mirrored is None:
        print(f"rill cat: nothing mirrored for {args.host}:{args.path} in {config.data_dir}", file=sys.stderr)
        return 1
    generations = mirrored.generations()
    if args.list:
        for g in generations:
            print(f"{g.number}\t{g.state}\t{mirrored.length(g.number)} bytes\tdevice {g.device} inode {g.inode}")
        return 0
    if args.generation is not None:
        generations = [g for g in generations if g.number == args.generation]
        if not generations:
            print(f"rill cat: {args.host}:{args.path} has no generation {args.generation}", file=sys.stderr)
            return 1
    out = sys.stdout.buffer
    for g in generations:
        with open(mirrored.mirror_path(g.number), "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
    out.flush()
    return 0
