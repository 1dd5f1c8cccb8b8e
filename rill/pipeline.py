"""From a mirrored line to a published record: parse, group multi-line events, publish.

One :class:`LinePipeline` per watched file.  Lines arrive in order from the
:class:`rill.lines.MirrorFollower`; records leave in the same order, even
through an external parser (whose replies come back asynchronously but are
released in line order by :class:`rill.parsers.external.ExternalParser`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from rill.config import TapConfig
from rill.parsers import LineParser, make_parser
from rill.parsers.multiline import MultilineGrouper

#: Seconds of silence after which a pending multi-line event is published as it is.
QUIET = 1.0

Publish = Callable[[int, int, dict[str, Any]], None]  # (generation, offset, record)


class LinePipeline:
    def __init__(self, tap: TapConfig, clock: IReactorTime, publish: Publish, external: Any = None) -> None:
        self.parser: LineParser = make_parser(tap)
        self.external = external
        self.clock = clock
        self.publish = publish
        self.grouper = MultilineGrouper(tap.multiline) if tap.multiline else None
        self._generation = 0
        self._timer: Any = None

    def line(self, generation: int, offset: int, line: bytes, received: float) -> None:
        if self.external is None:
            self._parsed(self.parser.parse(line, received), generation, offset)
        else:
            d = self.external.parse(line, received, self.parser)
            d.addCallback(self._parsed, generation, offset)

    def _parsed(self, record: dict[str, Any], generation: int, offset: int) -> None:
        if self.grouper is None:
            self.publish(generation, offset, record)
            return
        if generation != self._generation:
            self.flush()  # an event never spans two generations
            self._generation = generation
        for event in self.grouper.feed(record, offset):
            self.publish(generation, event.offsets[0], event.record)
        self._cancel()
        if self.grouper.pending:
            self._timer = self.clock.callLater(QUIET, self.flush)

    def flush(self) -> None:
        self._cancel()
        event = self.grouper.flush() if self.grouper is not None else None
        if event is not None:
            self.publish(self._generation, event.offsets[0], event.record)

    def stop(self) -> None:
        self.flush()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
