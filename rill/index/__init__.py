"""Historical search over the mirror: tokenizer, query language, segments, search.

Public names:

* :class:`IndexService` -- the Twisted service (``index``) the tap notifies.
* :func:`open_index` -- an :class:`Index` over a data_dir without the service
  (``rill search``), read-only by default, caught up in memory.
* :func:`compile_filter` -- the live ``rill tail --grep`` predicate.
* :func:`apply_retention` / ``IndexService.apply_retention``: per-tap retention.
* :func:`parser_for_config`: the ``parser_for`` argument from a ``RillConfig``.
* :class:`QueryError`, :func:`parse_query`, :func:`index_terms`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rill.index.core import Index
from rill.index.match import compile_filter
from rill.index.mirror import parser_for_config
from rill.index.query import QueryError, parse_query
from rill.index.retention import apply_retention, delete_generation_files, plan_retention
from rill.index.tokenizer import index_terms


def open_index(data_dir: str, read_only: bool = True, store: Any = None,
               parser_for: Callable[[Any], Any] | None = None, catch_up: bool = True, **options: Any) -> Index:
    """Open the index of ``data_dir``; with ``catch_up``, index the rest of the mirror in memory."""
    if store is None:
        from rill.store.mirror import MirrorStore

        store = MirrorStore(data_dir)
    index = Index(data_dir, store, parser_for, read_only=read_only, **options)
    if catch_up:
        index.catch_up()
    return index


def __getattr__(name: str) -> Any:
    if name == "IndexService":  # keep Twisted out of ``import rill.index`` for pure users
        from rill.index.service import IndexService

        return IndexService
    raise AttributeError(name)


__all__ = [
    "Index",
    "IndexService",
    "QueryError",
    "apply_retention",
    "compile_filter",
    "delete_generation_files",
    "index_terms",
    "open_index",
    "parse_query",
    "parser_for_config",
    "plan_retention",
]
