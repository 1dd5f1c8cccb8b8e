"""Realistic log lines for ``rill demo``, written to a few files, one of them rotating."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from twisted.internet import task

from rill.timefmt import iso_utc

PATHS = ("/", "/api/v1/orders", "/api/v1/users/42", "/static/app.js", "/login", "/healthz")
AGENTS = ('Mozilla/5.0 (X11; Linux x86_64) "quoted" agent', "curl/8.5.0", "Prometheus/2.51")
MESSAGES = (
    ("INFO", "request served in {ms} ms request_id={rid}"),
    ("INFO", "cache hit ratio={ratio}"),
    ("WARN", "slow query took {ms} ms on orders"),
    ("ERROR", "upstream timeout after {ms} ms host=db1.internal request_id={rid}"),
)


class LogGenerator:
    """Appends lines to app.log (ISO 8601), access.log (nginx combined) and syslog (RFC 3164);
    renames app.log to app.log.1 every ``rotate_every`` seconds, as logrotate's create mode does."""

    def __init__(self, directory: str, clock: Any, rate: float = 20.0, rotate_every: float = 60.0) -> None:
        self.directory = directory
        self.clock = clock
        self.rate = rate
        self.rotate_every = rotate_every
        self.lines = 0
        self.rotations = 0
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = clock
        self._last_rotation = clock.seconds()
        for name in ("app.log", "access.log", "syslog"):
            open(self.path(name), "a").close()

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def start(self) -> None:
        self._loop.start(0.1)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        for _ in range(max(1, int(self.rate / 10))):
            self._write_one()
        if self.clock.seconds() - self._last_rotation >= self.rotate_every:
            self.rotate()

    def _write_one(self) -> None:
        now = time.time()
        level, template = random.choice(MESSAGES)
        text = template.format(ms=random.randint(1, 3000), rid=f"{random.getrandbits(48):012x}", ratio=round(random.random(), 3))
        choice = random.random()
        if choice < 0.5:
            name, line = "app.log", f"{iso_utc(now)} {level} {text}"
        elif choice < 0.85:
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
            status = random.choice((200, 200, 200, 304, 404, 500))
            line = (
                f'10.0.{random.randint(0, 9)}.{random.randint(1, 254)} - - [{stamp}] "GET {random.choice(PATHS)} HTTP/1.1" '
                f'{status} {random.randint(100, 90000)} "-" "{random.choice(AGENTS)}"'
            )
            name = "access.log"
        else:
            stamp = time.strftime("%b %e %H:%M:%S", time.gmtime(now))
            name, line = "syslog", f"{stamp} demo-host sshd[{random.randint(100, 9999)}]: {text}"
        with open(self.path(name), "a") as f:
            f.write(line + "\n")
        self.lines += 1

    def rotate(self) -> None:
        """app.log -> app.log.1 (the old .1 is dropped), then a new empty app.log."""
        self._last_rotation = self.clock.seconds()
        os.replace(self.path("app.log"), self.path("app.log.1"))
        open(self.path("app.log"), "a").close()
        self.rotations += 1
