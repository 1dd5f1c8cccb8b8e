"""Log a repeating error once, then a count, instead of once per retry."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


class RepeatSuppressor:
    """The first occurrence of an error is logged at once; identical repeats are
    counted and summarised at most once per ``interval`` seconds; a different
    error is logged at once again."""

    def __init__(self, log: Logger, clock: IReactorTime, interval: float = 60.0) -> None:
        self.log = log
        self.clock = clock
        self.interval = interval
        self._last: dict[str, tuple[str, float, int]] = {}  # key -> (message, logged at, repeats since)

    def report(self, key: str, message: str, format: str, **fields: Any) -> bool:
        """Log ``format`` (with ``error=message``) unless it repeats; True when it was logged."""
        now = self.clock.seconds()
        previous = self._last.get(key)
        if previous is not None and previous[0] == message:
            _, logged_at, repeats = previous
            if now - logged_at < self.interval:
                self._last[key] = (message, logged_at, repeats + 1)
                return False
            self.log.warn(format + " (repeated {repeats} times in {seconds:.0f}s)", error=message,
                          repeats=repeats + 1, seconds=now - logged_at, **fields)
            self._last[key] = (message, now, 0)
            return True
        self.log.warn(format, error=message, **fields)
        self._last[key] = (message, now, 0)
        return True

    def reset(self, key: str) -> None:
        self._last.pop(key, None)
