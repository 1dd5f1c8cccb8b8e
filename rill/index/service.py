"""``IndexService``: the index as a Twisted service named ``index``.

The tap calls :meth:`IndexService.notify` right after appending to a mirror;
the new complete lines go to the in-memory tail and are searchable at once.
The tail is flushed to a segment when it is large (``FLUSH_LINES`` /
``FLUSH_BYTES``) or ``flush_age`` seconds after its first line, on the
injected clock.  Merges keep the segment count logarithmic; with
``threaded_merges=True`` (recommended under a real reactor: a merge of a
million lines takes seconds) they are written in a thread (``deferToThread``)
and swapped in back in the reactor thread; by default they run inline, which
is what unit tests on a fake clock want.  Start-up catch-up runs inline.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from rill.index.core import Index
from rill.index.retention import apply_retention


class IndexService(Service):
    """The search index of one data_dir, kept up to date with the mirror."""

    log = Logger()
    name = "index"

    def __init__(self, data_dir: str, store: Any, parser_for: Callable[[Any], Any] | None, clock: IReactorTime,
                 flush_age: float = 30.0, threaded_merges: bool = False,
                 index_options: dict[str, Any] | None = None) -> None:
        self.data_dir = data_dir
        self.store = store
        self.parser_for = parser_for
        self.clock = clock
        self.flush_age = flush_age
        self.threaded_merges = threaded_merges
        self.index_options = index_options or {}  # e.g. flush_lines, base_lines (see rill.index.core.Index)
        self.index: Index | None = None
        self._flush_call: Any = None
        self._merging: Deferred[Any] | None = None

    def startService(self) -> None:
        """Open the index (dropping damaged segments) and catch up from the mirror, inline."""
        super().startService()
        self.index = Index(self.data_dir, self.store, self.parser_for, now=self.clock.seconds, **self.index_options)
        if self.index.rebuilt:
            self.log.warn("index segments {names} were damaged; re-reading their lines from the mirror",
                          names=self.index.rebuilt)
        added = self.index.catch_up()
        self.log.info("index caught up: {lines} lines from the mirror", lines=added)
        self._after_ingest()

    def stopService(self) -> Deferred[None]:
        """Wait for a running merge, then flush the tail and close."""
        super().stopService()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        waiting = self._merging if self._merging is not None else succeed(None)

        def finish(_: object) -> None:
            if self.index is not None:
                self.index.flush()
                self.index.close()
                self.index = None

        return waiting.addBoth(finish)

    def notify(self, host: str, path: str, generation: int, max_bytes: int | None = None) -> int:
        """New bytes are in this generation's mirror: index its new complete lines (up to ``max_bytes``)."""
        if self.index is None:
            return 0
        added = self.index.ingest(host, path, generation, max_bytes=max_bytes)
        self._after_ingest()
        return added

    def indexed_to(self, host: str, path: str, generation: int) -> int:
        """How far into this generation's mirror the index reaches."""
        if self.index is None:
            return 0
        if self.index._covered is None:
            self.index._covered = self.index.coverage()
        ranges = self.index._covered.get((host, path, generation), [])
        return ranges[-1][1] if ranges else 0

    def search(self, query: str, cursor: str | None = None, page_size: int = 100, count: bool = False,
               histogram: str | None = None) -> dict[str, Any]:
        """See :func:`rill.index.search.run_search`; raises ``QueryError``."""
        if self.index is None:
            raise RuntimeError("the index service is not running")
        return self.index.search(query, cursor, page_size, count, histogram)

    def status(self) -> dict[str, int]:
        """Numbers for ``rill status`` and the metrics (``rill_index_<key>``)."""
        index = self.index
        if index is None:
            return {}
        return {
            "segments": len(index.segments),
            "lines": sum(s.lines for s in index.segments) + index.tail.lines,
            "tail_lines": index.tail.lines,
            "bytes": sum(os.path.getsize(s.path) for s in index.segments if os.path.exists(s.path)),
            "flushes": index.flushes,
            "merges": index.merges,
            "merging": int(self._merging is not None),
        }

    def apply_retention(self, tap: str, max_age: float | None, max_size: int | None) -> list[tuple[str, str, int]]:
        """Remove the tap's oldest non-live generations beyond age/size, index entries first."""
        if self.index is None:
            return []
        removed = apply_retention(self.index, tap, max_age, max_size, self.clock.seconds())
        for host, path, gen in removed:
            self.log.info("retention removed {host}:{path} generation {generation}", host=host, path=path, generation=gen)
        return removed

    def apply_retention_all(self, taps: Iterable[Any]) -> list[tuple[str, str, int]]:
        """Retention for every tap of a config (``TapConfig``: name, retention_age, retention_size)."""
        removed = []
        for tap in taps:
            if tap.retention_age is not None or tap.retention_size is not None:
                removed += self.apply_retention(tap.name, tap.retention_age, tap.retention_size)
        return removed

    def flush(self) -> None:
        """Flush the tail now, then merge as the policy asks."""
        if self.index is None:
            return
        self.index.flush()
        self._maybe_merge()

    def _after_ingest(self) -> None:
        assert self.index is not None
        if self.index.tail.lines and self._flush_call is None:
            self._flush_call = self.clock.callLater(self.flush_age, self._aged)
        elif not self.index.tail.lines and self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        self._maybe_merge()

    def _aged(self) -> None:
        self._flush_call = None
        self.flush()

    def _maybe_merge(self) -> None:
        if self.index is None or self._merging is not None:
            return
        job = self.index.start_merge()
        if job is None:
            return
        names, path, inputs = job
        if not self.threaded_merges:
            self.index.run_merge(path, inputs)
            self.index.finish_merge(names, path)
            return self._maybe_merge()
        self._merging = deferToThread(self.index.run_merge, path, inputs)
        self._merging.addCallbacks(lambda _: self._merged(names, path), lambda f: self._merge_failed(f, path))

    def _merged(self, names: list[str], path: str) -> None:
        self._merging = None
        if self.index is not None:
            self.index.finish_merge(names, path)
            if self.running:
                self._maybe_merge()

    def _merge_failed(self, failure: Any, path: str) -> None:
        """A merge that failed (an input removed by retention meanwhile, a full disk) is dropped."""
        self._merging = None
        self.log.failure("index merge into {path} failed; the inputs stay as they are", failure, path=path)
        if os.path.exists(path):
            os.remove(path)
