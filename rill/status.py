"""``rill status``: the status dict, as ``rich`` tables an operator can read at 80 columns.

Pure formatting, plus the control ROUTER's ``status`` handler.  The status
dict is :meth:`rill.service.RillService.status`'s: ``datetime``, ``taps``
(one row per watched file), ``hosts``, ``publish``, and when present ``ping``
(per host) and ``index``.

Narrower than :data:`WIDE` columns the tap table keeps what answers "is it
flowing?" -- host, path, state, generation, offset, lag, lines, reconnects --
and the host table below it carries each host's last error (errors belong to
the host's connection anyway).  From :data:`WIDE` columns on every field has
its own column.  Paths fold rather than being cut with an ellipsis, so
nothing that names a tap is ever hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from io import StringIO
from typing import Any

from rich import box, filesize
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

WIDE = 140

# Where the ``status`` command puts the status dict in its reply.  Not
# ``status``: the protocol's envelope already uses that key for ok/failed.
REPORT_KEY = "report"

STATE_STYLES = {
    "streaming": "green",
    "connected": "green",
    "responsive": "green",
    "auth failed": "bold red",
    "host key mismatch": "bold red",
    "unresponsive": "red",
    "paused by ping": "magenta",
    "backing off": "yellow",
    "file missing": "yellow",
    "stopped": "dim",
    "disabled": "dim",
}


def status_handler(rill_service: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The control ROUTER's ``status`` command: the status dict under :data:`REPORT_KEY`."""

    def status(request: dict[str, Any]) -> dict[str, Any]:
        return {REPORT_KEY: rill_service.status()}

    return status


def report_from_reply(reply: Mapping[str, Any]) -> dict[str, Any]:
    """The status dict in a ``status`` reply (also accepted: under ``status``, or inline)."""
    for key in (REPORT_KEY, "status"):
        if isinstance(reply.get(key), dict):
            return dict(reply[key])
    return {k: v for k, v in reply.items() if k in ("datetime", "taps", "hosts", "publish", "ping", "index", "control")}


# ---------------------------------------------------------------- cells


def size(value: object) -> str:
    """``1234567`` -> ``1.2 MB``; small numbers stay exact (``999 B``)."""
    if not isinstance(value, (int, float)):
        return "-"
    if value < 1000:
        return f"{int(value)} B"
    return filesize.decimal(int(value), precision=1)


def count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def short_count(value: object) -> str:
    """Exact below 100,000; then ``123k``, ``4.5M``, ``1.2G``."""
    if not isinstance(value, int):
        return "-"
    if value < 100_000:
        return f"{value:,}"
    for divisor, unit in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if value >= divisor:
            scaled = value / divisor
            return f"{scaled:.1f}{unit}" if scaled < 10 else f"{scaled:.0f}{unit}"
    return str(value)


def seconds(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if value < 60:
        return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"
    if value < 3600:
        return f"{value / 60:.0f}m{value % 60:02.0f}s"
    return f"{value / 3600:.0f}h{value % 3600 / 60:02.0f}m"


def state_text(state: object, detail: str | None = None) -> Text:
    label = str(state) if state is not None else "-"
    text = Text(label, style=STATE_STYLES.get(label, "yellow" if label != "-" else ""))
    if detail:
        text.append(f" {detail}", style="dim")
    return text


def lag(row: Mapping[str, Any]) -> Text:
    lag_bytes = row.get("lag_bytes") or 0
    if not lag_bytes:
        return Text("0", style="dim")
    return Text(f"{size(lag_bytes)}\n{seconds(row.get('lag_seconds'))}", style="yellow")


def rtt(ping: Mapping[str, Any] | None) -> str:
    value = (ping or {}).get("rtt_ms")
    return f"{value:.1f} ms" if isinstance(value, (int, float)) else "-"


# ---------------------------------------------------------------- tables


def _table(expand: bool = False) -> Table:
    # Left padding only: columns are two cells apart (the box's blank divider and one pad).
    return Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1), expand=expand, show_edge=False)


def tap_table(status: Mapping[str, Any], width: int) -> Table:
    """One row per tap: every field in its own column at ``width >= WIDE``, else grouped by host."""
    rows = sorted(status.get("taps", ()), key=lambda r: (str(r.get("host")), str(r.get("path"))))
    return _wide_tap_table(rows) if width >= WIDE else _narrow_tap_table(rows, width)


def _wide_tap_table(rows: list[Mapping[str, Any]]) -> Table:
    table = _table()
    table.add_column("Host", style="bold", overflow="fold")
    table.add_column("Path", overflow="fold", ratio=1)
    table.add_column("Tap", overflow="fold")
    table.add_column("State", overflow="fold")
    for name in ("Gen", "Offset", "Remote", "Lag", "Lines", "Bytes", "Gaps", "Re"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Last error", overflow="fold", ratio=1, style="red")
    for row in rows:
        table.add_row(
            str(row.get("host", "-")), str(row.get("path", "-")), str(row.get("tap") or "-"), _state_cell(row),
            count(row.get("generation")), size(row.get("offset")), size(row.get("remote_size")), lag(row),
            count(row.get("lines")), size(row.get("bytes")), count(row.get("gaps")), count(row.get("reconnects")),
            str(row.get("last_error") or ""),
        )
    return table


# Reconnects and errors are the host's: they are in the host table.
_NARROW_COLUMNS = ("State", "Gen", "Offset", "Lag", "Lines")


def _narrow_tap_table(rows: list[Mapping[str, Any]], width: int) -> Table:
    """Each host on a line of its own, its taps' paths indented below it (errors: see the host table)."""
    cells = [_narrow_cells(row) for row in rows]
    table = _table()
    table.add_column("Host / path", overflow="fold", min_width=max(16, width - _others_width(cells)))
    table.add_column("State", no_wrap=True)
    for name in _NARROW_COLUMNS[1:]:
        table.add_column(name, justify="right", no_wrap=True)
    host = None
    for row, row_cells in zip(rows, cells, strict=True):
        if row.get("host") != host:
            host = row.get("host")
            table.add_row(Text(str(host), style="bold"))
        path = Padding(Text(str(row.get("path", "-")), overflow="fold"), (0, 0, 0, 2))
        table.add_row(path, *row_cells)
    return table


def _narrow_cells(row: Mapping[str, Any]) -> list[Text]:
    return [_state_cell(row), Text(count(row.get("generation"))), Text(size(row.get("offset"))), lag(row),
            Text(short_count(row.get("lines")))]


def _others_width(cells: list[list[Text]]) -> int:
    """The cells every column but the first needs, with the 2-cell gaps between columns."""
    widths = [len(name) for name in _NARROW_COLUMNS]
    for row_cells in cells:
        for i, cell in enumerate(row_cells):
            widths[i] = max(widths[i], max(len(line) for line in cell.plain.split("\n")))
    return sum(widths) + 2 * len(widths)


def _state_cell(row: Mapping[str, Any]) -> Text:
    return state_text(row.get("state"), _next_attempt(row))


def _next_attempt(row: Mapping[str, Any]) -> str | None:
    when = row.get("next_attempt")
    if not isinstance(when, str):
        return None
    return f"(next {when[11:19]})" if len(when) >= 19 else f"(next {when})"


def host_table(status: Mapping[str, Any], width: int) -> Table:
    """One row per host: connection state, ping state and rtt (and at ``WIDE``, the last error)."""
    wide = width >= WIDE
    ping = status.get("ping") or {}
    table = _table()
    table.add_column("Host", style="bold", overflow="fold")
    table.add_column("State", overflow="fold", min_width=11)
    if wide:
        table.add_column("Address", overflow="fold")
        table.add_column("Attempts", justify="right", no_wrap=True)
    table.add_column("Conns", justify="right", no_wrap=True)
    table.add_column("Reconn.", justify="right", no_wrap=True)
    if ping:
        table.add_column("Ping", overflow="fold", min_width=7)
        table.add_column("RTT", justify="right", no_wrap=True)
    if wide:
        table.add_column("Last error", overflow="fold", ratio=1, style="red")
    hosts = status.get("hosts") or {}
    for name in sorted(set(hosts) | set(ping)):
        table.add_row(*_host_cells(name, hosts.get(name) or {}, ping.get(name), wide, bool(ping)))
    return table


def _host_cells(
    name: str, host: Mapping[str, Any], ping: Mapping[str, Any] | None, wide: bool, with_ping: bool
) -> list[RenderableType]:
    cells: list[RenderableType] = [name, state_text(host.get("state"))]
    if wide:
        cells += [str(host.get("address", "-")), count(host.get("connection_attempts"))]
    cells += [count(host.get("connections")), count(host.get("reconnects"))]
    if with_ping:
        cells += [state_text((ping or {}).get("state")), rtt(ping)]
    if wide:
        cells.append(str(host.get("last_error") or ""))
    return cells


def host_errors(status: Mapping[str, Any]) -> Text:
    """Each host's last error on a line of its own, full width (for narrow terminals)."""
    text = Text()
    for name, host in sorted((status.get("hosts") or {}).items()):
        if host.get("last_error"):
            text.append(f"{name}: ", style="bold")
            text.append(f"{host['last_error']}\n", style="red")
    text.rstrip()
    return text


def headline(status: Mapping[str, Any]) -> Text:
    taps = status.get("taps") or []
    streaming = sum(1 for row in taps if row.get("state") == "streaming")
    text = Text(f"rill at {status.get('datetime', '?')}: ", style="bold")
    text.append(f"{streaming} of {len(taps)} taps streaming")
    publish = status.get("publish") or {}
    if publish:
        text.append(f"; published {count(publish.get('sent'))} lines", style="")
        if publish.get("failed"):
            text.append(f", {count(publish.get('failed'))} failed", style="red")
    return text


def index_line(index: Mapping[str, Any]) -> Text:
    parts = [f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}"
             for key, value in index.items() if isinstance(value, (int, float, str))]
    return Text("index: " + ", ".join(parts), style="dim")


def status_renderable(status: Mapping[str, Any], width: int = 80) -> Group:
    """The whole report: headline, the tap table, the host table, the index line."""
    parts: list[RenderableType] = [headline(status)]
    if status.get("taps"):
        parts.append(tap_table(status, width))
    else:
        parts.append(Text("no taps: the config watches no file yet", style="dim"))
    if status.get("hosts") or status.get("ping"):
        parts.append(host_table(status, width))
        errors = host_errors(status)
        if width < WIDE and errors:
            parts += [Text("Last errors:", style="bold"), errors]
    if status.get("index"):
        parts.append(index_line(status["index"]))
    return Group(*parts)


def render_text(status: Mapping[str, Any], width: int = 80) -> str:
    """The report as plain text ``width`` columns wide (what a terminal shows, minus colour)."""
    console = Console(file=StringIO(), width=width, record=True, color_system=None, highlight=False)
    console.print(status_renderable(status, width))
    return console.export_text()
