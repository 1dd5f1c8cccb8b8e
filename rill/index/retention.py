"""Retention per tap: the oldest non-live generations go, by age and total size.

:func:`plan_retention` is pure; :func:`apply_retention` removes the index
entries first, then the mirror files (:func:`delete_generation_files`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rill.index.mirror import read_times, times_path


@dataclass(frozen=True)
class GenerationInfo:
    host: str
    path: str
    number: int
    size: int
    last_received: float  # receipt time of its last byte
    live: bool


def plan_retention(generations: Sequence[GenerationInfo], now: float, max_age: float | None,
                   max_size: int | None) -> list[GenerationInfo]:
    """Generations to remove, oldest first: never a live one.

    By age: every non-live generation whose last byte arrived more than
    ``max_age`` seconds ago.  By size: then the oldest non-live ones until the
    tap's total is at most ``max_size`` (if the live ones alone exceed it, all
    non-live ones go).
    """
    candidates = sorted((g for g in generations if not g.live), key=lambda g: (g.last_received, g.host, g.path, g.number))
    doomed = [g for g in candidates if max_age is not None and g.last_received < now - max_age]
    if max_size is not None:
        total = sum(g.size for g in generations) - sum(g.size for g in doomed)
        for g in candidates:
            if total <= max_size:
                break
            if g not in doomed:
                doomed.append(g)
                total -= g.size
    return doomed


def tap_generations(store: Any, tap: str) -> list[GenerationInfo]:
    """What :func:`plan_retention` needs to know about a tap's mirror."""
    out = []
    for mirrored in store.files():
        if mirrored.tap != tap:
            continue
        for record in mirrored.generations():
            mirror = mirrored.mirror_path(record.number)
            _, times = read_times(mirror, mirrored.length(record.number))  # just the last record
            last = times[-1] if len(times) else (os.path.getmtime(mirror) if os.path.exists(mirror) else 0.0)
            out.append(GenerationInfo(mirrored.host, mirrored.path, record.number, mirrored.length(record.number),
                                      last, record.state == "live"))
    return out


def delete_generation_files(mirrored: Any, number: int) -> None:
    """Remove one generation's mirror and times files (the store is asked to forget it if it can)."""
    mirror = mirrored.mirror_path(number)
    for name in (mirror, times_path(mirror)):
        try:
            os.remove(name)
        except FileNotFoundError:
            pass
    forget = getattr(mirrored, "forget_generation", None)
    if forget is not None:
        forget(number)


def apply_retention(index: Any, tap: str, max_age: float | None, max_size: int | None,
                    now: float) -> list[tuple[str, str, int]]:
    """Apply one tap's retention to ``index`` (a :class:`rill.index.core.Index`) and the mirror."""
    doomed = plan_retention(tap_generations(index.store, tap), now, max_age, max_size)
    fgs = [(g.host, g.path, g.number) for g in doomed]
    if fgs:
        index.forget(fgs)
        for g in doomed:
            delete_generation_files(index.store.file(g.host, g.path), g.number)
    return fgs
