"""Prometheus metrics at ``/metrics``, read from ``RillService.status()`` at scrape time.

There is no second set of books: :class:`RillCollector` turns one status
dict (see :meth:`rill.service.RillService.status`) into metric families each
time Prometheus scrapes, so the numbers always agree with ``rill status``
and the manhole.

The HTTP side is ``prometheus_client``'s own Twisted resource
(``prometheus_client.twisted.MetricsResource``).  It renders in a worker
thread of the reactor's thread pool; the status dict is built back in the
reactor thread (:class:`ReactorStatus`), because Rill's objects are only
ever touched from there.

Metric names (labels in braces)::

    rill_tap_lines_total, rill_tap_bytes_total          {host, path, tap}
    rill_tap_lag_bytes, rill_tap_lag_seconds
    rill_tap_offset_bytes, rill_tap_remote_size_bytes, rill_tap_generation
    rill_tap_reconnects_total, rill_tap_gaps, rill_tap_streams_total,
    rill_tap_generations_started_total
    rill_tap_state                                      {host, path, tap, rill_tap_state}
    rill_host_connection_attempts_total, rill_host_reconnects_total,
    rill_host_connections, rill_host_channels, rill_host_reachable  {host}
    rill_host_state                                     {host, rill_host_state}
    rill_ping_rtt_seconds, rill_ping_sent_total, rill_ping_received_total,
    rill_ping_lost_total                                {host}
    rill_ping_state                                     {host, rill_ping_state}
    rill_publish_sent_total, rill_publish_failed_total
    rill_index_<key>                                    (every number in status["index"])
    rill_control_requests_total, rill_control_replies_total {status}
    rill_control_command_replies_total                  {command, status} (when counted)
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, cast

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

log = Logger()

StatusProvider = Callable[[], Mapping[str, Any]]

TAP_LABELS = ("host", "path", "tap")

# Every state a tap row can show (FileTapState values and HostTap states), so a
# stateset always lists the same states and a dashboard can alert on any of them.
TAP_STATES = (
    "waiting for connection",
    "opening",
    "streaming",
    "file missing",
    "stopped",
    "connecting",
    "connected",
    "paused by ping",
    "auth failed",
    "host key mismatch",
    "backing off",
)
HOST_STATES = ("connecting", "connected", "paused by ping", "auth failed", "host key mismatch", "backing off")
PING_STATES = ("unknown", "responsive", "unresponsive", "disabled")

# (status key, metric name, help, counter?) for the numeric columns of a tap row.
_TAP_NUMBERS = (
    ("lines", "rill_tap_lines", "Lines published since start", True),
    ("bytes", "rill_tap_bytes", "Bytes mirrored since start", True),
    ("lag_bytes", "rill_tap_lag_bytes", "Bytes the remote file holds beyond the mirror", False),
    ("lag_seconds", "rill_tap_lag_seconds", "Seconds since the mirror last caught up, while behind", False),
    ("offset", "rill_tap_offset_bytes", "Local mirror length of the current generation", False),
    ("remote_size", "rill_tap_remote_size_bytes", "Last known size of the remote file", False),
    ("generation", "rill_tap_generation", "Number of the generation being mirrored", False),
    ("reconnects", "rill_tap_reconnects", "Reconnections of the tap's host since start", True),
    ("gaps", "rill_tap_gaps", "Gap records in the mirror (bytes that may be missing)", False),
    ("streams", "rill_tap_streams", "Stream channels opened since start", True),
    ("generations_started", "rill_tap_generations_started", "Generations started since start", True),
)
_HOST_NUMBERS = (
    ("connection_attempts", "rill_host_connection_attempts", "TCP connection attempts since start", True),
    ("reconnects", "rill_host_reconnects", "Reconnections since start", True),
    ("connections", "rill_host_connections", "SSH connections open now", False),
    ("channels", "rill_host_channels", "SSH channels open now", False),
    ("reachable", "rill_host_reachable", "1 unless the ping service paused the host", False),
)
_PING_NUMBERS = (
    ("sent", "rill_ping_sent", "ICMP echo requests sent", True),
    ("received", "rill_ping_received", "ICMP echo replies received", True),
    ("lost", "rill_ping_lost", "ICMP echo requests unanswered", True),
)


Family = CounterMetricFamily | GaugeMetricFamily


def _family(name: str, documentation: str, labels: Iterable[str], counter: bool) -> Family:
    if counter:
        return CounterMetricFamily(name, documentation, labels=list(labels))
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _states(known: Iterable[str], current: str) -> dict[str, bool]:
    states = {state: False for state in known}
    states[current] = True
    return states


class RillCollector(Collector):
    """A custom collector: every scrape asks ``status()`` once and describes it.

    ``status`` returns a dict shaped like ``RillService.status()``.  Optional
    providers fill in what the status dict may not carry yet: ``index``
    (a dict of numbers) and ``control`` (shaped like ``status()["control"]``,
    see :func:`control_metrics`).
    """

    def __init__(
        self,
        status: StatusProvider,
        *,
        index: StatusProvider | None = None,
        control: Callable[[], Mapping[Any, Any]] | None = None,
    ) -> None:
        self.status = status
        self.index = index
        self.control = control

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        yield from tap_metrics(status.get("taps", ()))
        yield from host_metrics(status.get("hosts", {}))
        yield from ping_metrics(status.get("ping") or {})
        yield from publish_metrics(status.get("publish") or {})
        index = self.index() if self.index is not None else status.get("index")
        yield from index_metrics(index or {})
        control = self.control() if self.control is not None else status.get("control")
        yield from control_metrics(control or {})


def tap_metrics(taps: Iterable[Mapping[str, Any]]) -> Iterator[Metric]:
    taps = list(taps)
    families = [(key, _family(name, doc, TAP_LABELS, counter)) for key, name, doc, counter in _TAP_NUMBERS]
    state = StateSetMetricFamily("rill_tap_state", "The tap's state (1 for the current one)", labels=TAP_LABELS)
    for row in taps:
        labels = [str(row.get("host", "")), str(row.get("path", "")), str(row.get("tap", ""))]
        for key, family in families:
            value = _number(row.get(key))
            if value is not None:
                family.add_metric(labels, value)
        state.add_metric(labels, _states(TAP_STATES, str(row.get("state", "unknown"))))
    yield from (family for _, family in families)
    yield state


def host_metrics(hosts: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    families = [(key, _family(name, doc, ["host"], counter)) for key, name, doc, counter in _HOST_NUMBERS]
    state = StateSetMetricFamily("rill_host_state", "The host's connection state", labels=["host"])
    for name, row in hosts.items():
        for key, family in families:
            value = _number(row.get(key))
            if value is not None:
                family.add_metric([name], value)
        state.add_metric([name], _states(HOST_STATES, str(row.get("state", "unknown"))))
    yield from (family for _, family in families)
    yield state


def ping_metrics(ping: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    if not ping:
        return
    rtt = GaugeMetricFamily("rill_ping_rtt_seconds", "Last measured ICMP round trip", labels=["host"])
    families = [(key, _family(name, doc, ["host"], counter)) for key, name, doc, counter in _PING_NUMBERS]
    state = StateSetMetricFamily("rill_ping_state", "The host's ping state", labels=["host"])
    for name, row in ping.items():
        rtt_ms = _number(row.get("rtt_ms"))
        if rtt_ms is not None:
            rtt.add_metric([name], rtt_ms / 1000.0)
        for key, family in families:
            value = _number(row.get(key))
            if value is not None:
                family.add_metric([name], value)
        state.add_metric([name], _states(PING_STATES, str(row.get("state", "unknown"))))
    yield rtt
    yield from (family for _, family in families)
    yield state


def publish_metrics(publish: Mapping[str, Any]) -> Iterator[Metric]:
    for key, doc in (("sent", "Messages sent on the data PUB socket"),
                     ("failed", "Messages the PUB socket failed to send (a full queue drops silently)")):
        value = _number(publish.get(key))
        if value is not None:
            yield CounterMetricFamily(f"rill_publish_{key}", doc, value=value)


_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]+")


def index_metrics(index: Mapping[str, Any]) -> Iterator[Metric]:
    """One gauge per number in ``index`` (nested dicts join their keys with ``_``)."""
    for key, value in _flatten(index):
        number = _number(value)
        if number is not None:
            name = "rill_index_" + _NOT_NAME.sub("_", key).strip("_")
            yield GaugeMetricFamily(name, f"Index statistic {key!r}", value=number)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}_")
        else:
            yield f"{prefix}{key}", value


def control_metrics(control: Mapping[str, Any]) -> Iterator[Metric]:
    """The control ROUTER's counts, as ``RillService.status()["control"]`` gives them.

    ``{"requests": {"requests": n, "ok": n, "failed": n, "dropped": n}}`` (the
    RouterEndpoint's ``counts``) gives ``rill_control_requests_total`` and
    ``rill_control_replies_total{status}``; a per-command breakdown under
    ``by_command`` (``{command: {status: n}}`` or ``{(command, status): n}``)
    gives ``rill_control_command_replies_total{command, status}``.
    """
    counts = control.get("requests")
    if isinstance(counts, Mapping):
        total = _number(counts.get("requests"))
        if total is not None:
            yield CounterMetricFamily("rill_control_requests", "Requests received on the control ROUTER",
                                      value=total)
        replies = CounterMetricFamily("rill_control_replies", "Control ROUTER replies by status",
                                      labels=["status"])
        for status, value in counts.items():
            if status != "requests" and _number(value) is not None:
                replies.add_metric([str(status)], float(value))
        yield replies
    by_command = control.get("by_command")
    if isinstance(by_command, Mapping):
        yield _by_command(by_command)


def _by_command(counts: Mapping[Any, Any]) -> Metric:
    family = CounterMetricFamily("rill_control_command_replies", "Control ROUTER replies by command and status",
                                 labels=["command", "status"])
    for key, value in counts.items():
        if isinstance(key, tuple) and len(key) == 2 and _number(value) is not None:
            family.add_metric([str(key[0]), str(key[1])], float(value))
        elif isinstance(value, Mapping):
            for status, count in value.items():
                if _number(count) is not None:
                    family.add_metric([str(key), str(status)], float(count))
    return family


class ReactorStatus:
    """``provider()`` run in the reactor thread, whichever thread asks.

    The metrics resource renders in a thread-pool thread; Rill's state may only
    be read in the reactor thread, so a call from elsewhere is handed over with
    ``callFromThread`` and waited for (at most ``timeout`` seconds: a scrape
    during shutdown must not hold the thread pool, and so the reactor, hostage).
    """

    def __init__(self, reactor: Any, provider: StatusProvider, timeout: float = 5.0) -> None:
        self.reactor = reactor
        self.provider = provider
        self.timeout = timeout
        self.reactor_thread: int | None = None  # set by MetricsService.startService

    def __call__(self) -> Mapping[str, Any]:
        if self.reactor_thread in (None, threading.get_ident()):
            return self.provider()
        answer: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

        def ask() -> None:
            try:
                answer.put((True, self.provider()))
            except BaseException as e:
                answer.put((False, e))

        self.reactor.callFromThread(ask)
        try:
            ok, value = answer.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"no status from the reactor thread within {self.timeout:g}s") from None
        if not ok:
            raise value
        return value


def metrics_registry(collector: Collector) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding ``collector``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class _Index(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Rill: Prometheus metrics at /metrics\n"


def metrics_site(registry: CollectorRegistry) -> Site:
    """A web site serving ``registry`` at ``/metrics``."""
    from prometheus_client.twisted import MetricsResource

    root = Resource()
    root.putChild(b"", cast(IResource, _Index()))
    root.putChild(b"metrics", cast(IResource, MetricsResource(registry)))
    site = Site(root)
    site.noisy = False
    return site


class MetricsService(Service):
    """Serves Prometheus metrics of ``rill_service`` on the endpoint ``endpoint``.

    ``endpoint`` is a Twisted server endpoint string such as
    ``tcp:9108:interface=127.0.0.1``.  ``port`` is the listening port
    (see :meth:`when_listening`).  A port that cannot be bound fails ``startService``
    (so twistd stops with the reason) when the endpoint fails at once, as TCP does.
    """

    def __init__(self, rill_service: Any, endpoint: str, reactor: Any, **providers: Any) -> None:
        self.setName("metrics")
        self.rill_service = rill_service
        self.endpoint = endpoint
        self.reactor = reactor
        self.status = ReactorStatus(reactor, rill_service.status)
        self.collector = RillCollector(self.status, **providers)
        self.registry = metrics_registry(self.collector)
        self.port: Any = None
        self._failure: Failure | None = None
        self._waiting: list[defer.Deferred[Any]] = []

    def startService(self) -> None:
        self.status.reactor_thread = threading.get_ident()
        self._failure = None
        d = serverFromString(self.reactor, self.endpoint).listen(metrics_site(self.registry))
        d.addCallbacks(self._listening, self._listen_failed)
        if self._failure is not None:  # failed at once (TCP does): stop the start-up with the reason
            raise ValueError(f"metrics: cannot listen on {self.endpoint}: {self._failure.getErrorMessage()}")
        super().startService()

    def _listen_failed(self, failure: Failure) -> None:
        self._failure = failure
        if self.running:  # failed later: say so
            log.failure("metrics: cannot listen on {endpoint}", failure, endpoint=self.endpoint)

    def _listening(self, port: Any) -> None:
        self.port = port
        address = port.getHost()
        log.info("metrics: Prometheus text at http://{host}:{port}/metrics",
                 host=getattr(address, "host", address), port=getattr(address, "port", ""))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)

    def when_listening(self) -> defer.Deferred[Any]:
        """Fires with the listening port (at once if it is listening already)."""
        if self.port is not None:
            return defer.succeed(self.port)
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiting.append(d)
        return d

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        return defer.maybeDeferred(port.stopListening)
