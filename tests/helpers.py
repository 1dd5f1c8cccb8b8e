"""Waiting on events with deadlines, never by sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from twisted.internet import defer, reactor, task

T = TypeVar("T")


class DeadlineExceeded(AssertionError):
    pass


@defer.inlineCallbacks
def wait_for(
    condition: Callable[[], T], timeout: float = 30.0, what: str = "condition", poll: float = 0.02
) -> defer.Generator[defer.Deferred[object], object, T]:
    """Return ``condition()``'s first truthy value; fail after ``timeout`` seconds.

    The reactor keeps running between checks, so the events that make the
    condition true (data arriving, processes ending) are processed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"timed out after {timeout:g}s waiting for {what}")
        yield task.deferLater(reactor, poll, lambda: None)


def with_timeout(d: defer.Deferred[T], timeout: float, what: str) -> defer.Deferred[T]:
    """``d``, failing with DeadlineExceeded if it has not fired after ``timeout`` seconds."""

    def on_timeout(failure: object, _timeout: float) -> object:
        raise DeadlineExceeded(f"timed out after {timeout:g}s waiting for {what}")

    d.addTimeout(timeout, reactor, onTimeoutCancel=on_timeout)
    return d
