"""``rill search QUERY``: historical search over data_dir, with or without the service.

Human output (one hit a line: datetime, host:path, the line) highlights the
matched terms when stdout is a terminal; ``--json`` prints one JSON object per
hit, then -- when there is a next page, or ``--count``/``--histogram`` were
asked -- one last object without a ``line`` key holding ``cursor``, ``count``
and ``histogram``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from rill.cli.common import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="search the mirrored lines (works while the service is stopped)")
    parser.add_argument("query", help="e.g. 'error AND host:web1 since:-1h' (terms, \"phrases\", OR, NOT, /regex/)")
    parser.add_argument("--json", action="store_true", help="JSON lines for scripts")
    parser.add_argument("--limit", "-n", type=int, default=100, help="hits per page (default 100)")
    parser.add_argument("--count", action="store_true", help="also count every hit")
    parser.add_argument("--histogram", metavar="BUCKET", help="also count hits per time bucket, e.g. 1h")
    parser.add_argument("--cursor", help="the cursor printed by the previous page")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rill.index import QueryError, open_index
    from rill.index.mirror import parser_for_config

    config = load_config(args)
    try:
        index = open_index(config.data_dir, read_only=True, parser_for=parser_for_config(config), catch_up=False)
    except OSError as e:
        print(f"rill search: cannot open the index in {config.data_dir}: {e}", file=sys.stderr)
        return 1
    try:
        index.catch_up()
        result = index.search(args.query, cursor=args.cursor, page_size=max(1, args.limit), count=args.count,
                              histogram=args.histogram)
    except QueryError as e:
        print(f"rill search: {e}", file=sys.stderr)
        return 2
    finally:
        index.close()
    (_print_json if args.json else _print_human)(result, args)
    return 0


def _print_json(result: dict[str, Any], args: argparse.Namespace) -> None:
    out = sys.stdout
    for hit in result["hits"]:
        out.write(json.dumps(hit, ensure_ascii=False) + "\n")
    summary = {k: result[k] for k in ("cursor", "count", "histogram") if result.get(k) is not None}
    if summary:
        out.write(json.dumps(summary) + "\n")


def highlighter(query: str) -> re.Pattern[str] | None:
    """One regex matching the words and regexes of ``query`` (case-insensitive words)."""
    from rill.index.query import And, Or, Phrase, Regex, Term, parse_query

    parsed = parse_query(query)
    patterns: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Term):
            patterns.append(r"(?<!\w)" + re.escape(node.token) + r"(?!\w)")
        elif isinstance(node, Phrase):
            patterns.append(r"(?<!\w)" + r"\W+".join(re.escape(w) for w in node.words) + r"(?!\w)")
        elif isinstance(node, Regex):
            patterns.append(node.pattern if node.ignore_case else f"(?-i:{node.pattern})")
        elif isinstance(node, (And, Or)):  # negated parts are not highlighted
            for item in node.items:
                walk(item)

    walk(parsed.expr)
    if not patterns:
        return None
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    except re.error:
        return None


def _print_human(result: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    pattern = highlighter(args.query) if console.is_terminal else None
    for hit in result["hits"]:
        text = Text(f"{hit['datetime']} ", style="dim")
        text.append(f"{hit['host']}:{hit['path']} ", style="cyan")
        line = Text(hit["line"])
        if pattern is not None:
            line.highlight_regex(pattern, style="bold yellow")
        text.append_text(line)
        if console.is_terminal:
            console.print(text)
        else:
            sys.stdout.write(text.plain + "\n")
    err = sys.stderr
    if result.get("count") is not None:
        err.write(f"{result['count']} hits\n")
    for bucket, n in result.get("histogram") or []:
        err.write(f"{bucket}\t{n}\n")
    if result.get("cursor"):
        err.write(f"more: rill search --cursor {result['cursor']} {_quote(args.query)}\n")


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
