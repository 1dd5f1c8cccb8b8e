"""Metrics over HTTP from a real RillService tapping the private sshd while lines flow."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from txzmq import ZmqFactory

from rill.cli.status import ask_status
from rill.config import config_from_string
from rill.metrics import MetricsService
from rill.service import RillService
from tests.helpers import DeadlineExceeded, wait_for, with_timeout
from tests.integration.rig import LineWriter, Subscriber, Workspace, config_text
from tests.integration.sshd import Login, SSHServer, free_port, make_target_dir
from tests.test_metrics import labels, samples


class MetricsWhileLinesFlowTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> defer.Generator[Any, Any, None]:
        self.server = SSHServer()
        yield self.server.start()
        self.addCleanup(self.server.cleanup)
        self.workspace = Workspace()
        self.addCleanup(self.workspace.cleanup)
        target = make_target_dir()
        self.path = os.path.join(target, "app.log")
        self.writer = LineWriter(self.path, "metrics")
        refused = Login(self.server.busybox.username, "not-the-password", busybox=True)  # not the good login
        text = config_text(
            self.workspace.data_dir, self.server, {"good": self.server.gnu, "bad": refused},
            {"app": (["good"], [self.path]), "denied": (["bad"], [self.path])},
            publish=f"tcp://127.0.0.1:{free_port()}", extra_rill="session_pool = 0\n",
            extra_host="ping = off\nretry_initial = 0.2\n",
        )
        self.config = config_from_string(text)
        factory = ZmqFactory()
        self.addCleanup(factory.shutdown)
        self.subscriber = Subscriber(factory, self.config.publish)  # before any line is published
        self.rill = RillService(self.config, reactor)
        self.metrics = MetricsService(self.rill, "tcp:0:interface=127.0.0.1", reactor)
        self.metrics.setServiceParent(self.rill)
        self.rill.startService()
        self.addCleanup(self.rill.stopService)
        port = yield with_timeout(self.metrics.when_listening(), 10, "the metrics port")
        self.url = b"http://127.0.0.1:%d/metrics" % port.getHost().port

    @defer.inlineCallbacks
    def scrape(self) -> defer.Generator[Any, Any, dict[Any, float]]:
        response = yield with_timeout(Agent(reactor).request(b"GET", self.url), 10, "GET /metrics")
        body = yield with_timeout(readBody(response), 10, "the metrics body")
        self.assertEqual(response.code, 200)
        return samples(body.decode())

    @defer.inlineCallbacks
    def wait_for_lines(self, expected: int) -> defer.Generator[Any, Any, None]:
        try:
            yield wait_for(lambda: len(self.subscriber.lines("good", self.path)) >= expected, 60,
                           f"{expected} lines on the SUB socket")
        except DeadlineExceeded as e:
            seen = len(self.subscriber.lines("good", self.path))
            self.fail(f"{e}: the SUB saw {seen}, published {self.rill.publisher.sent}; tap: {self.good_row()}")

    def good_row(self) -> dict[str, Any]:
        return next(row for row in self.rill.status()["taps"] if row["host"] == "good")

    def good(self, name: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return name, labels(host="good", path=self.path, tap="app")

    @defer.inlineCallbacks
    def subscribed(self) -> defer.Generator[Any, Any, int]:
        """Write a line at a time until the SUB socket gets one (ZeroMQ's slow joiner); lines it missed."""
        for _ in range(100):
            self.writer.write(1)
            try:
                yield wait_for(lambda: self.subscriber.lines("good", self.path), 0.5, "a first line")
            except DeadlineExceeded:
                continue
            yield wait_for(lambda: self.good_row()["lines"] == self.writer.count, 10, "the probe lines")
            return self.writer.count - len(self.subscriber.lines("good", self.path))
        self.fail("the SUB socket never received a line")

    @defer.inlineCallbacks
    def test_counters_follow_the_lines(self) -> None:
        """lines/bytes/PUB counters read over HTTP move with the lines and equal what the SUB client saw."""
        missed = yield self.subscribed()
        for batch in (100, 250):
            self.writer.write(batch)
            yield self.wait_for_lines(self.writer.count - missed)
            got = yield self.scrape()
            seen = len(self.subscriber.lines("good", self.path))
            self.assertEqual(seen + missed, self.writer.count)
            self.assertEqual(got[self.good("rill_tap_lines_total")], seen + missed)
            self.assertEqual(got[("rill_publish_sent_total", labels())], seen + missed)
            self.assertEqual(got[self.good("rill_tap_bytes_total")], os.path.getsize(self.path))
            self.assertEqual(got[self.good("rill_tap_lag_bytes")], 0)
            streaming = labels(host="good", path=self.path, tap="app", rill_tap_state="streaming")
            self.assertEqual(got[("rill_tap_state", streaming)], 1)

    @defer.inlineCallbacks
    def test_auth_failed_in_status_and_metrics(self) -> None:
        """A host that refuses the password shows 'auth failed' in `rill status --json` and in the metrics."""
        denied = labels(host="bad", path=self.path, tap="denied")

        def refused() -> bool:
            return any(row["host"] == "bad" and row["state"] == "auth failed" for row in self.rill.status()["taps"])

        yield wait_for(refused, 60, "the refused host's tap to show 'auth failed'")
        got = yield self.scrape()
        self.assertEqual(got[("rill_tap_state", denied | {("rill_tap_state", "auth failed")})], 1)
        self.assertEqual(got[("rill_host_state", labels(host="bad", rill_host_state="auth failed"))], 1)
        self.assertNotIn("not-the-password", repr(got))
        report = yield threads.deferToThread(ask_status, self.rill.control.bound_endpoint, 10.0)
        row = next(row for row in report["taps"] if row["host"] == "bad")
        self.assertEqual(row["state"], "auth failed")
        self.assertNotIn("not-the-password", repr(report))
