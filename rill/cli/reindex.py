"""``rill reindex``: rebuild the whole search index from the mirror, with a progress bar.

The new index is built beside the old one (``index.new``) and swapped in at
the end, so searches keep working meanwhile; stop the service first, or it
will keep writing to the old index while this runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from rill.cli.common import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("reindex", help="rebuild the search index from the mirror")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from rill.index.build import build
    from rill.index.core import Index
    from rill.index.mirror import parser_for_config
    from rill.store.mirror import MirrorStore

    config = load_config(args)
    live = os.path.join(config.data_dir, "index")
    fresh = os.path.join(config.data_dir, "index.new")
    shutil.rmtree(fresh, ignore_errors=True)
    store = MirrorStore(config.data_dir)
    index = Index(config.data_dir, store, parser_for_config(config), directory=fresh)
    started = time.monotonic()
    columns = (TextColumn("reindexing"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=not sys.stderr.isatty(), console=None) as progress:
        task = progress.add_task("reindex", total=index.pending_bytes())
        lines = build(index, progress=lambda n: progress.advance(task, n))
        index.flush()
        index.merge_all()
    index.close()
    old = live + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(live):
        os.rename(live, old)
    os.rename(fresh, live)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(os.path.getsize(os.path.join(live, n)) for n in os.listdir(live))
    print(f"reindexed {lines} lines in {time.monotonic() - started:.1f}s: "
          f"{len(index.entries)} segments, {size / 1e6:.1f} MB", file=sys.stderr)
    return 0
