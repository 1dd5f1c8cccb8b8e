"""Log observers for twistd's ``--logger`` option: Rill's events, without the libraries' chatter.

::

    twistd -n --logger=rill.logs.text_observer rill -c config.ini
    twistd -n --logger=rill.logs.json_observer rill -c config.ini

``$RILL_LOG_LEVEL`` (``debug``, ``info`` -- the default --, ``warn``,
``error``, ``critical``) is the least level shown.  Events of the libraries
(Conch's "channel open"/"remote close" per channel, ClientService's
"Scheduling retry" per attempt, factories' "Starting factory", txzmq) are
shown from ``warn`` up only, unless the level is ``debug``; twistd's own
start-up and shutdown lines pass at the normal level.

``$RILL_LOG_FILE`` sends the lines to a file instead of standard output
(twistd's ``--logfile`` is ignored when ``--logger`` is given); the file
rotates at 10 MB, keeping 10 old files, and on SIGUSR1, as twistd's does.

Repeated errors are rate limited where they are raised, with
:class:`rill.ratelimit.RepeatSuppressor`; this module only chooses what
reaches the file.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import IO, Any, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    InvalidLogLevelError,
    Logger,
    LogLevel,
    PredicateResult,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

LEVEL_VARIABLE = "RILL_LOG_LEVEL"
FILE_VARIABLE = "RILL_LOG_FILE"
LIBRARY_LEVEL = LogLevel.warn
ROTATE_LENGTH = 10_000_000
ROTATED_FILES = 10

# Library namespaces whose info lines an operator wants (start-up, signals, shutdown).
_PASS_THROUGH = ("twisted.scripts", "twisted.application.app", "twisted.application.runner", "twisted.internet.base")


def log_level(environ: dict[str, str] | None = None) -> LogLevel:
    """The level named by ``$RILL_LOG_LEVEL`` (``info`` when unset or not a level name)."""
    name = (environ if environ is not None else os.environ).get(LEVEL_VARIABLE, "info").strip().lower()
    try:
        return LogLevel.levelWithName("warn" if name == "warning" else name)
    except InvalidLogLevelError:
        return LogLevel.info


def is_rill_event(event: dict[str, Any]) -> bool:
    """Whether ``event`` was logged by Rill's own code (not by a library, even from a Rill subclass).

    Rill logs through module-level loggers (namespace: the module) and
    loggers that Rill classes declare.  A Rill subclass of a Conch channel or
    a Twisted factory also logs under its own class name, but through the
    logger its library base class declares: that is library chatter.
    """
    namespace = event.get("log_namespace") or ""
    if namespace != "rill" and not namespace.startswith("rill."):
        return False
    return namespace in sys.modules or _declares_logger(namespace)


@functools.lru_cache(maxsize=512)
def _declares_logger(namespace: str) -> bool:
    module_name, _, class_name = namespace.rpartition(".")
    cls = getattr(sys.modules.get(module_name), class_name, None)
    if not isinstance(cls, type):
        return True  # a logger with a namespace of Rill's choosing
    return any(
        isinstance(value, Logger)
        for klass in cls.__mro__
        if klass.__module__.split(".")[0] == "rill"
        for value in vars(klass).values()
    )


@implementer(ILogFilterPredicate)
class RillLogFilter:
    """An ``ILogFilterPredicate``: Rill's events from ``level`` up, the libraries' from ``warn`` up."""

    def __init__(self, level: LogLevel = LogLevel.info, library_level: LogLevel = LIBRARY_LEVEL) -> None:
        self.level = level
        self.library_level = level if level <= LogLevel.debug else max(level, library_level)

    def __call__(self, event: dict[str, Any]) -> PredicateResult:
        level = event.get("log_level", LogLevel.info)
        if level < self.level:
            return PredicateResult.no
        if level >= self.library_level or is_rill_event(event):
            return PredicateResult.maybe
        namespace = event.get("log_namespace") or ""
        if any(namespace == p or namespace.startswith(p + ".") for p in _PASS_THROUGH):
            return PredicateResult.maybe
        return PredicateResult.no


def filtered(observer: Any, level: LogLevel | None = None) -> ILogObserver:
    """``observer`` behind :class:`RillLogFilter` at ``level`` (default: ``$RILL_LOG_LEVEL``)."""
    predicate = cast(ILogFilterPredicate, RillLogFilter(level if level is not None else log_level()))
    return cast(ILogObserver, FilteringLogObserver(observer, [predicate]))


def _output() -> IO[str]:
    path = os.environ.get(FILE_VARIABLE, "-")
    if path in ("", "-"):
        return sys.stdout
    from twisted.python.logfile import LogFile

    log_file = LogFile.fromFullPath(path, rotateLength=ROTATE_LENGTH, maxRotatedFiles=ROTATED_FILES)
    _rotate_on_sigusr1(log_file)
    return log_file  # type: ignore[return-value]


def _rotate_on_sigusr1(log_file: Any) -> None:
    import signal

    if signal.getsignal(signal.SIGUSR1) in (None, signal.SIG_DFL):

        def rotate(signum: int, frame: object) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)

        signal.signal(signal.SIGUSR1, rotate)


def text_observer() -> ILogObserver:
    """twistd ``--logger=rill.logs.text_observer``: one text line per event, filtered."""
    return filtered(textFileLogObserver(_output()))


def json_observer() -> ILogObserver:
    """twistd ``--logger=rill.logs.json_observer``: one JSON object per event (record-separated), filtered."""
    return filtered(jsonFileLogObserver(_output()))
