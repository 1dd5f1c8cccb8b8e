"""Rate-limited logging: a repeating error once, then a count, instead of once per retry."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure


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


class RateLimitedLog:
    """Log each kind of event at most once per ``interval`` seconds, counting the rest."""

    def __init__(self, log: Logger, clock: IReactorTime, interval: float = 60.0) -> None:
        self._log = log
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, kind: str, format: str, failure: Failure | None = None, **kwargs: Any) -> None:
        now = self._clock.seconds()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        format += " ({suppressed} similar since last logged)" if suppressed else ""
        if failure is not None:
            self._log.failure(format, failure, suppressed=suppressed, **kwargs)
        else:
            self._log.warn(format, suppressed=suppressed, **kwargs)
