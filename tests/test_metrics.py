"""Prometheus metrics: the collector's families, and /metrics served over real HTTP."""

from __future__ import annotations

import copy
import socket
import threading
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from rill.metrics import MetricsService, ReactorStatus, RillCollector, metrics_registry
from tests.helpers import with_timeout


def sample_status() -> dict[str, Any]:
    """A status dict shaped like RillService.status(), with every optional part."""
    return {
        "datetime": "2026-11-26T03:00:00.000Z",
        "taps": [
            {"host": "web1", "path": "/var/log/syslog", "tap": "syslog", "state": "streaming", "generation": 2,
             "offset": 4096, "remote_size": 5000, "lag_bytes": 904, "lag_seconds": 1.5, "lines": 40, "bytes": 4096,
             "streams": 1, "generations_started": 2, "reconnects": 1, "last_error": None, "gaps": 0},
            {"host": "db1", "path": "/var/log/auth.log", "tap": "auth", "state": "auth failed", "generation": 0,
             "offset": 0, "remote_size": 0, "lag_bytes": 0, "lag_seconds": 0.0, "lines": 0, "bytes": 0,
             "streams": 0, "generations_started": 0, "reconnects": 0, "last_error": "auth failed: ops@db1", "gaps": 1},
        ],
        "hosts": {
            "web1": {"state": "connected", "address": "10.0.0.1:22", "username": "ops", "connections": 1,
                     "channels": 1, "last_error": None, "reachable": True, "connection_attempts": 2, "reconnects": 1},
            "db1": {"state": "auth failed", "address": "10.0.0.2:22", "username": "ops", "connections": 0,
                    "channels": 0, "last_error": "auth failed: ops@db1", "reachable": False,
                    "connection_attempts": 7, "reconnects": 0},
        },
        "publish": {"endpoint": "tcp://127.0.0.1:5556", "sent": 40, "failed": 2},
        "ping": {"web1": {"state": "responsive", "rtt_ms": 0.5, "sent": 9, "received": 9, "lost": 0,
                          "last_change": "2026-11-26T02:59:00.000Z"},
                 "db1": {"state": "unresponsive", "rtt_ms": None, "sent": 9, "received": 3, "lost": 6,
                         "last_change": "2026-11-26T02:59:30.000Z"}},
        "index": {"segments": 3, "size_bytes": 12345, "flush": {"seconds": 0.25}},
        "control": {"endpoint": "tcp://127.0.0.1:5557", "requests": {"requests": 9, "ok": 7, "failed": 1, "dropped": 1},
                    "by_command": {"status": {"ok": 5, "failed": 1}, "search": {"ok": 2}}},
    }


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, keyed by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


WEB1 = {"host": "web1", "path": "/var/log/syslog", "tap": "syslog"}
DB1 = {"host": "db1", "path": "/var/log/auth.log", "tap": "auth"}


class CollectorTests(SynchronousTestCase):
    def scrape(self, status: dict[str, Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return samples(generate_latest(metrics_registry(RillCollector(lambda: status))).decode())

    def test_tap_counters_and_gauges(self) -> None:
        """Each tap's lines, bytes, lag and reconnects come out under its host, path and tap labels."""
        got = self.scrape(sample_status())
        self.assertEqual(got[("rill_tap_lines_total", labels(**WEB1))], 40)
        self.assertEqual(got[("rill_tap_bytes_total", labels(**WEB1))], 4096)
        self.assertEqual(got[("rill_tap_lag_bytes", labels(**WEB1))], 904)
        self.assertEqual(got[("rill_tap_lag_seconds", labels(**WEB1))], 1.5)
        self.assertEqual(got[("rill_tap_reconnects_total", labels(**WEB1))], 1)
        self.assertEqual(got[("rill_tap_gaps", labels(**DB1))], 1)
        self.assertEqual(got[("rill_tap_offset_bytes", labels(**WEB1))], 4096)

    def test_tap_state_is_a_stateset(self) -> None:
        """A tap whose host refuses the password shows state 'auth failed' as 1, every other state as 0."""
        got = self.scrape(sample_status())
        self.assertEqual(got[("rill_tap_state", labels(**DB1, rill_tap_state="auth failed"))], 1)
        self.assertEqual(got[("rill_tap_state", labels(**DB1, rill_tap_state="streaming"))], 0)
        self.assertEqual(got[("rill_tap_state", labels(**WEB1, rill_tap_state="streaming"))], 1)
        ones = [key for key, value in got.items() if key[0] == "rill_tap_state" and value == 1]
        self.assertEqual(len(ones), 2)

    def test_unknown_state_still_shown(self) -> None:
        """A state the collector does not list yet still appears, set to 1."""
        status = sample_status()
        status["taps"][0]["state"] = "catching up"
        got = self.scrape(status)
        self.assertEqual(got[("rill_tap_state", labels(**WEB1, rill_tap_state="catching up"))], 1)

    def test_hosts_ping_and_publish(self) -> None:
        """Per host attempts, state, ping rtt (seconds) and state; PUB sent and failed."""
        got = self.scrape(sample_status())
        self.assertEqual(got[("rill_host_connection_attempts_total", labels(host="db1"))], 7)
        self.assertEqual(got[("rill_host_state", labels(host="db1", rill_host_state="auth failed"))], 1)
        self.assertEqual(got[("rill_host_reachable", labels(host="db1"))], 0)
        self.assertEqual(got[("rill_ping_rtt_seconds", labels(host="web1"))], 0.0005)
        self.assertNotIn(("rill_ping_rtt_seconds", labels(host="db1")), got)
        self.assertEqual(got[("rill_ping_state", labels(host="db1", rill_ping_state="unresponsive"))], 1)
        self.assertEqual(got[("rill_ping_lost_total", labels(host="db1"))], 6)
        self.assertEqual(got[("rill_publish_sent_total", labels())], 40)
        self.assertEqual(got[("rill_publish_failed_total", labels())], 2)

    def test_index_and_control(self) -> None:
        """Every number under 'index' becomes a gauge; control requests are counted, by status and command."""
        got = self.scrape(sample_status())
        self.assertEqual(got[("rill_index_segments", labels())], 3)
        self.assertEqual(got[("rill_index_flush_seconds", labels())], 0.25)
        self.assertEqual(got[("rill_control_requests_total", labels())], 9)
        self.assertEqual(got[("rill_control_replies_total", labels(status="dropped"))], 1)
        self.assertEqual(got[("rill_control_command_replies_total", labels(command="status", status="failed"))], 1)
        self.assertEqual(got[("rill_control_command_replies_total", labels(command="search", status="ok"))], 2)

    def test_optional_parts_absent(self) -> None:
        """The status dict of today (no ping, index or control keys) scrapes without them."""
        status = sample_status()
        for key in ("ping", "index", "control"):
            del status[key]
        names = {name for name, _ in self.scrape(status)}
        self.assertIn("rill_tap_lines_total", names)
        self.assertFalse({n for n in names if n.startswith(("rill_ping", "rill_index", "rill_control"))})

    def test_providers_override(self) -> None:
        """Index and control providers are used when given, instead of the status dict's keys."""
        collector = RillCollector(sample_status, index=lambda: {"segments": 9},
                                  control=lambda: {"by_command": {("status", "ok"): 11}})
        got = samples(generate_latest(metrics_registry(collector)).decode())
        self.assertEqual(got[("rill_index_segments", labels())], 9)
        self.assertEqual(got[("rill_control_command_replies_total", labels(command="status", status="ok"))], 11)
        self.assertNotIn(("rill_control_requests_total", labels()), got)


class FakeRill:
    """Just enough of RillService for the metrics service: a status() whose counters we move."""

    def __init__(self) -> None:
        self.current = sample_status()
        self.threads: list[int] = []

    def status(self) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        return copy.deepcopy(self.current)


class MetricsServiceTests(TestCase):
    def start(self, rill: FakeRill, endpoint: str = "tcp:0:interface=127.0.0.1") -> MetricsService:
        service = MetricsService(rill, endpoint, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @inlineCallbacks
    def get(self, service: MetricsService, path: bytes = b"/metrics") -> Any:
        port = yield with_timeout(service.when_listening(), 5, "the metrics port")
        url = b"http://127.0.0.1:%d%s" % (port.getHost().port, path)
        response = yield with_timeout(Agent(reactor).request(b"GET", url), 10, f"GET {url!r}")
        body = yield with_timeout(readBody(response), 10, "the response body")
        return response, body

    @inlineCallbacks
    def test_served_over_http(self) -> None:
        """GET /metrics returns the Prometheus text, and the counters move between scrapes."""
        rill = FakeRill()
        service = self.start(rill)
        response, body = yield self.get(service)
        self.assertEqual(response.code, 200)
        self.assertIn(b"text/plain", response.headers.getRawHeaders(b"content-type")[0])
        got = samples(body.decode())
        self.assertEqual(got[("rill_tap_lines_total", labels(**WEB1))], 40)
        rill.current["taps"][0]["lines"] = 45
        rill.current["publish"]["sent"] = 45
        _, body = yield self.get(service)
        got = samples(body.decode())
        self.assertEqual(got[("rill_tap_lines_total", labels(**WEB1))], 45)
        self.assertEqual(got[("rill_publish_sent_total", labels())], 45)

    @inlineCallbacks
    def test_status_read_in_reactor_thread(self) -> None:
        """The resource renders in a pool thread, but status() always runs in the reactor thread."""
        rill = FakeRill()
        service = self.start(rill)
        yield self.get(service)
        self.assertEqual(set(rill.threads), {threading.get_ident()})

    @inlineCallbacks
    def test_root_points_to_metrics(self) -> None:
        """GET / says where the metrics are."""
        service = self.start(FakeRill())
        response, body = yield self.get(service, b"/")
        self.assertEqual(response.code, 200)
        self.assertIn(b"/metrics", body)

    def test_port_in_use(self) -> None:
        """A metrics port already taken stops startService with a one-line reason."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        service = MetricsService(FakeRill(), f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1", reactor)
        error = self.assertRaises(ValueError, service.startService)
        self.assertIn("metrics: cannot listen on tcp:", str(error))
        self.assertFalse(service.running)

    def test_service_name(self) -> None:
        """The service is named 'metrics' in the tree."""
        self.assertEqual(MetricsService(FakeRill(), "tcp:0", reactor).name, "metrics")


class ReactorStatusTests(TestCase):
    @inlineCallbacks
    def test_hop_from_a_thread(self) -> None:
        """Asked from another thread, the provider runs in the reactor thread and its answer comes back."""
        rill = FakeRill()
        status = ReactorStatus(reactor, rill.status)
        status.reactor_thread = threading.get_ident()
        answer = yield with_timeout(threads.deferToThread(status), 10, "status from a thread")
        self.assertEqual(answer["publish"]["sent"], 40)
        self.assertEqual(rill.threads, [threading.get_ident()])

    @inlineCallbacks
    def test_hop_times_out(self) -> None:
        """A reactor that cannot answer in time gives a TimeoutError, not a hung thread."""

        class Deaf:
            def callFromThread(self, f: Any, *a: Any) -> None:
                pass

        status = ReactorStatus(Deaf(), FakeRill().status, timeout=0.05)
        status.reactor_thread = threading.get_ident()
        yield self.assertFailure(threads.deferToThread(status), TimeoutError)
