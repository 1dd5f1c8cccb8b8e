"""rill.ping.PingService: pacing, matching and hysteresis with a fake clock and fake sockets;
then, as root, on real ICMP sockets: loopback, firewall drops, a namespace, the fallbacks.

Only loopback addresses, and addresses inside a namespace a test creates, are ever pinged.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Generator
from typing import Any, cast

from twisted.internet import defer, reactor, utils
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SkipTest, TestCase

import rill.ping
from rill import icmp
from rill.ping import ICMP_FILTER, SOL_RAW, PingService, SocketFactory
from tests.helpers import wait_for, with_timeout
from tests.test_icmp import ipv4_packet
from tests.test_ping_fakes import ID, FakeSocket, ServiceTestCase

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class PacingTests(ServiceTestCase):
    def test_requests_spread_across_interval(self) -> None:
        """1,000 hosts get one request each per interval, at most ~10 per 10 ms tick."""
        self.make([(f"h{i}", f"127.1.{i // 256}.{i % 256}") for i in range(1000)])
        sock = self.sockets.made[socket.AF_INET]
        per_tick = []
        for _ in range(100):
            before = len(sock.sent)
            self.reactor.advance(0.01)
            per_tick.append(len(sock.sent) - before)
        self.assertLessEqual(max(per_tick), 11)
        self.assertEqual(len({address for _, address in sock.sent[:1000]}), 1000)
        self.assertIn(len(sock.sent), (1000, 1001))  # 1001: the next cycle's first host

    def test_each_host_once_per_interval(self) -> None:
        """Over five intervals each of three hosts is sent five requests, sequences 1..5."""
        self.make([("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4")])
        self.advance_to(4.99)
        sent = self.sockets.made[socket.AF_INET].sent
        by_host: dict[str, list[int]] = {}
        for packet, address in sent:
            echo = icmp.parse_echo(packet)
            assert echo is not None and echo.identifier == ID
            by_host.setdefault(address[0], []).append(echo.sequence)
        self.assertEqual(by_host, {a: [1, 2, 3, 4, 5] for a in ("127.0.0.2", "127.0.0.3",
                                                               "127.0.0.4")})

    def test_falling_behind_does_not_burst(self) -> None:
        """After the reactor stalls for many intervals, each host gets one request, not many."""
        self.make([("a", "127.0.0.2"), ("b", "127.0.0.3")])
        self.reactor.advance(10.0)
        self.assertEqual(len(self.sockets.made[socket.AF_INET].sent), 3)

    def test_two_names_one_address(self) -> None:
        """Two host names on one address get distinct sequences, and each its own replies."""
        service = self.make([("a", "127.0.0.2"), ("b", "127.0.0.2")])
        self.advance_to(0.6)
        self.answer(index=0)
        self.answer(index=1)
        self.assertEqual([row["received"] for row in service.status().values()], [1, 1])


class VerdictTests(ServiceTestCase):
    def test_reply_makes_responsive_with_rtt(self) -> None:
        """A reply gives rtt, state responsive, a publish and an observer call."""
        service = self.make([("web1", "127.0.0.1")])
        self.answer(delay=0.0025)
        row = service.status()["web1"]
        self.assertEqual((row["state"], row["sent"], row["received"]), ("responsive", 1, 1))
        self.assertAlmostEqual(row["rtt_ms"], 2.5, places=6)
        [(topic, message)] = self.published
        self.assertEqual(topic, b"ping/web1")
        self.assertEqual(set(message), {"host", "state", "rtt_ms", "datetime"})
        self.assertEqual((message["host"], message["state"]), ("web1", "responsive"))
        self.assertRegex(message["datetime"], ISO_MS)
        self.assertEqual(self.changes, [("web1", True)])

    def test_rtt_from_kernel_receive_time(self) -> None:
        """The rtt runs to the kernel's receive time when that lies between send and now."""
        service = self.make([("web1", "127.0.0.1")])
        self.answer(delay=0.02, kernel_time=0.004)
        self.assertAlmostEqual(service.status()["web1"]["rtt_ms"], 4.0)

    def test_kernel_time_off_the_clock_is_ignored(self) -> None:
        """A kernel time outside send..now (another clock) falls back to the reactor's time."""
        service = self.make([("web1", "127.0.0.1")])
        self.answer(delay=0.003, kernel_time=1.7e9)
        self.assertAlmostEqual(service.status()["web1"]["rtt_ms"], 3.0)

    def test_unresponsive_after_k_misses_then_back(self) -> None:
        """Three unanswered requests make a host unresponsive; the next reply undoes it."""
        service = self.make([("db", "127.0.0.9")], misses=3)
        self.assertTrue(service.is_responsive("db"))  # unknown counts as responsive
        self.advance_to(2.9)
        self.assertEqual(service.status()["db"]["state"], "unknown")
        self.advance_to(3.0)
        self.assertEqual(service.status()["db"]["state"], "unresponsive")
        self.assertFalse(service.is_responsive("db"))
        self.assertEqual(self.published[-1][1]["state"], "unresponsive")
        self.assertIsNone(self.published[-1][1]["rtt_ms"])
        self.advance_to(7.0)
        self.assertEqual(len(self.published), 1)  # no repeats while it stays down
        self.assertEqual(service.status()["db"]["lost"], 7)
        self.answer(delay=0.001)
        self.assertTrue(service.is_responsive("db"))
        self.assertEqual(self.changes, [("db", False), ("db", True)])
        self.assertEqual([m["state"] for _, m in self.published], ["unresponsive", "responsive"])

    def test_fewer_misses_than_k_change_nothing(self) -> None:
        """Two misses then a reply, repeatedly, never make a responsive host unresponsive."""
        self.make([("db", "127.0.0.9")], misses=3)
        for cycle in range(4):
            self.advance_to(cycle * 3 + 2.5)
            self.answer()
            self.advance_to(cycle * 3 + 3.0)
        self.assertEqual(self.changes, [("db", True)])

    def test_late_reply_counts(self) -> None:
        """A reply to an older request still counts as a reply and resets the misses."""
        service = self.make([("db", "127.0.0.9")], misses=2)
        self.advance_to(1.5)
        self.answer(index=0)  # request 1's reply, after request 2 was sent
        self.assertEqual(service.status()["db"]["state"], "responsive")
        self.assertGreater(service.status()["db"]["rtt_ms"], 1000)

    def test_send_error_is_a_miss(self) -> None:
        """A sendto refused by a firewall (EPERM) counts as a missed reply, nothing worse."""
        service = self.make([("db", "127.0.0.9")], misses=2)
        self.sockets.made[socket.AF_INET].send_error = PermissionError(errno.EPERM, "no")
        self.advance_to(3.0)
        self.assertEqual(service.status()["db"]["state"], "unresponsive")

    def test_status_rows(self) -> None:
        """status() has one row per host with the fields rill status shows."""
        service = self.make([("a", "127.0.0.2"), ("b", "::1")])
        rows = service.status()
        self.assertEqual(list(rows), ["a", "b"])
        self.assertEqual(set(rows["a"]), {"state", "rtt_ms", "sent", "received", "lost",
                                          "last_change", "address"})
        self.assertEqual((rows["a"]["state"], rows["a"]["rtt_ms"]), ("unknown", None))
        self.assertRegex(rows["a"]["last_change"], ISO_MS)

    def test_names_not_pinged_are_responsive(self) -> None:
        """is_responsive is True for a host the service does not ping (ping = off)."""
        service = self.make([("a", "127.0.0.2")])
        self.assertTrue(service.is_responsive("not-configured"))

    def test_failing_observer_and_publish_do_not_stop_others(self) -> None:
        """An observer or publisher that raises is logged; later observers still run."""
        service = self.make([("a", "127.0.0.2")])

        def broken(*args: object) -> None:
            raise RuntimeError("bug")

        service._publish = broken
        service._observers.insert(0, broken)
        with capturedLogs() as events:
            self.answer()
        self.assertEqual(self.changes, [("a", True)])
        self.assertEqual(len([e for e in events if e.get("log_failure")]), 2)
        self.flushLoggedErrors(RuntimeError)

    def test_ipv6_host(self) -> None:
        """An IPv6 host is pinged over an ICMPv6 socket with type 128 requests."""
        service = self.make([("v6", "::1")])
        sock = self.sockets.made[socket.AF_INET6]
        self.assertEqual(sock.protocol, socket.IPPROTO_ICMPV6)
        self.assertEqual(sock.sent[0][0][0], icmp.ECHO6_REQUEST)
        self.answer(socket.AF_INET6, delay=0.001)
        self.assertEqual(service.status()["v6"]["state"], "responsive")

    def test_stop_releases_everything(self) -> None:
        """stopService closes the sockets, removes the readers and leaves no timers."""
        service = self.make([("a", "127.0.0.2"), ("b", "::1")])
        service.stopService()
        self.assertTrue(all(s.closed for s in self.sockets.made.values()))


class StrayReplyTests(ServiceTestCase):
    def setUp(self) -> None:
        self.service = self.make([("a", "127.0.0.2")])
        self.sock = self.sockets.made[socket.AF_INET]

    def assert_ignored(self) -> None:
        self.assertEqual(self.service.status()["a"]["received"], 0)
        self.assertEqual(self.changes, [])

    def test_raw_socket_filters_to_echo_replies(self) -> None:
        """The raw IPv4 socket asks the kernel for echo replies only (ICMP_FILTER)."""
        self.assertEqual(self.sock.options[(SOL_RAW, ICMP_FILTER)], b"\xfe\xff\xff\xff")

    def test_other_process_identifier(self) -> None:
        """A reply with another pinger's identifier is not ours."""
        self.answer(identifier=ID + 1)
        self.assert_ignored()

    def test_wrong_source_address(self) -> None:
        """A reply with our id and sequence from another address is not a reply to us."""
        self.answer(source="127.0.0.3")
        self.assert_ignored()

    def test_unknown_sequence(self) -> None:
        """A reply with a sequence never sent is ignored."""
        reply = icmp.build_echo_reply(ID, 999)
        self.deliver(self.sock, ipv4_packet("127.0.0.2", "127.0.0.1", reply), "127.0.0.2")
        self.assert_ignored()

    def test_own_request_seen_on_loopback(self) -> None:
        """Our own echo request, as a raw socket sees it on loopback, is not a reply."""
        request, _ = self.sock.sent[0]
        self.deliver(self.sock, ipv4_packet("127.0.0.1", "127.0.0.2", request), "127.0.0.1")
        self.assert_ignored()

    def test_truncated_and_corrupt(self) -> None:
        """Truncated replies and replies with a wrong checksum or payload are ignored."""
        request, _ = self.sock.sent[0]
        good = icmp.build_echo_reply(ID, 1)
        corrupt = good[:2] + bytes([good[2] ^ 1]) + good[3:]
        other_payload = icmp.build_echo_reply(ID, 1, b"someone else's ping")
        for message in (good[:6], good[:-1], corrupt, other_payload):
            self.deliver(self.sock, ipv4_packet("127.0.0.2", "127.0.0.1", message), "127.0.0.2")
        self.deliver(self.sock, ipv4_packet("127.0.0.2", "127.0.0.1", good)[:30], "127.0.0.2")
        self.assert_ignored()

    def test_duplicate_reply_counts_once(self) -> None:
        """A duplicated reply is counted once."""
        self.answer()
        self.answer()
        self.assertEqual(self.service.status()["a"]["received"], 1)


class FallbackTests(ServiceTestCase):
    def test_datagram_socket_when_raw_refused(self) -> None:
        """Without raw permission a datagram ICMP socket is used; its rewritten id is fine."""
        with capturedLogs() as events:
            service = self.make([("a", "127.0.0.2")], refuse=(socket.SOCK_RAW,))
        sock = self.sockets.made[socket.AF_INET]
        self.assertEqual(sock.kind, socket.SOCK_DGRAM)
        self.assertNotIn((SOL_RAW, ICMP_FILTER), sock.options)
        self.answer(identifier=0x0BAD)  # the kernel's id, no IP header
        self.assertEqual(service.status()["a"]["state"], "responsive")
        self.assertIn("unprivileged datagram", " ".join(e["kind"] for e in events if "kind" in e))

    def test_no_socket_warns_once_and_all_responsive(self) -> None:
        """With no ICMP socket at all: one warning; every host disabled and responsive."""
        with capturedLogs() as events:
            service = self.make([("a", "127.0.0.2"), ("b", "::1"), ("c", "127.0.0.3")],
                                refuse=(socket.SOCK_RAW, socket.SOCK_DGRAM))
            self.advance_to(10.0)
        warnings = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 1)
        self.assertIn("ping_group_range", warnings[0]["log_format"])
        self.assertEqual({row["state"] for row in service.status().values()}, {"disabled"})
        self.assertTrue(all(service.is_responsive(name) for name in "abc"))
        self.assertEqual((self.published, self.changes), ([], []))

    def test_no_ipv6_disables_only_ipv6_hosts(self) -> None:
        """A kernel without IPv6 (EAFNOSUPPORT) disables the IPv6 hosts alone."""
        self.reactor = MemoryReactorClock()

        def factory(family: int, kind: int, protocol: int) -> FakeSocket:
            if family == socket.AF_INET6:
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported")
            return FakeSocket(family, kind, protocol)

        service = PingService([("a", "127.0.0.2"), ("b", "::1")], reactor=self.reactor,
                              socket_factory=cast(SocketFactory, factory))
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([r["state"] for r in service.status().values()], ["unknown", "disabled"])
        self.assertEqual(len([e for e in events if e["log_level"].name == "warn"]), 1)


# -- live, as root ------------------------------------------------------------

INTERVAL = 0.1
MISSES = 3


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short administrative command (iptables, ip) synchronously."""
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=20)


class LiveTestCase(TestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("needs root: raw sockets, iptables, namespaces, sysctl")
        self.published: list[tuple[bytes, dict]] = []

    def start(self, targets: list[tuple[str, str]], **kwargs: Any) -> PingService:
        service = PingService(targets, interval=INTERVAL, misses=MISSES, reactor=reactor,
                              publish=lambda t, m: self.published.append((t, m)), **kwargs)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def states(self, host: str) -> list[str]:
        return [m["state"] for t, m in self.published if t == b"ping/" + host.encode()]


class LiveLoopbackTests(LiveTestCase):
    @defer.inlineCallbacks
    def test_loopback_replies_with_plausible_rtt(self) -> Generator[Any, Any, None]:
        """127.0.0.1, ::1 and localhost answer, with rtts between 0 and 100 ms."""
        service = self.start([("v4", "127.0.0.1"), ("v6", "::1"), ("name", "localhost")])
        yield wait_for(lambda: all(r["received"] >= 3 for r in service.status().values()),
                       timeout=5, what="three replies from each host")
        for name, row in service.status().items():
            self.assertEqual(row["state"], "responsive", name)
            self.assertTrue(0 < row["rtt_ms"] < 100, row)
        self.assertEqual(sorted(t for t, _ in self.published),
                         [b"ping/name", b"ping/v4", b"ping/v6"])

    @defer.inlineCallbacks
    def test_dropped_address_goes_down_and_comes_back(self) -> Generator[Any, Any, None]:
        """An address whose echo requests iptables drops turns unresponsive, then back."""
        # An address of its own, so that concurrent runs cannot share the rule.
        address = ".".join(map(str, (127, random.randrange(200, 250), random.randrange(256),
                                     random.randrange(1, 255))))
        rule = ["INPUT", "-d", address, "-p", "icmp", "--icmp-type", "echo-request", "-j", "DROP"]
        service = self.start([("lo", "127.0.0.1"), ("gone", address)])
        yield wait_for(lambda: service.status()["gone"]["state"] == "responsive", timeout=5)

        run("iptables", "-w", "5", "-I", *rule)
        self.addCleanup(run, "iptables", "-w", "5", "-D", *rule, check=False)
        dropped_at = time.monotonic()
        yield wait_for(lambda: not service.is_responsive("gone"), timeout=5, what="down")
        took = time.monotonic() - dropped_at
        self.assertTrue((MISSES - 1) * INTERVAL <= took <= (MISSES + 2) * INTERVAL + 1.0, took)

        run("iptables", "-w", "5", "-D", *rule)
        yield wait_for(lambda: service.is_responsive("gone"), timeout=2, what="back up")
        self.assertEqual(self.states("gone"), ["responsive", "unresponsive", "responsive"])
        self.assertEqual(self.states("lo"), ["responsive"])
        row = service.status()["gone"]
        self.assertLess(row["received"], row["sent"])


class LiveResolutionTests(LiveTestCase):
    @defer.inlineCallbacks
    def test_name_that_does_not_resolve(self) -> Generator[Any, Any, None]:
        """A name that fails to resolve is unresponsive after K slots; fine once it resolves."""
        answers: list[tuple[int, tuple]] = []

        def lookup(address: str, flags: int = 0) -> tuple[int, tuple]:
            if flags or not answers:  # numeric lookups fail for names, as the real ones do
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return answers[0]

        self.patch(rill.ping, "_lookup", lookup)  # no DNS traffic leaves the machine
        self.patch(rill.ping, "RESOLVE_RETRY", INTERVAL)
        with capturedLogs() as events:
            service = self.start([("named", "db.example.test")])
            yield wait_for(lambda: not service.is_responsive("named"), timeout=5, what="down")
        self.assertIn("cannot resolve", " ".join(e["log_format"] for e in events))
        answers.append((socket.AF_INET, ("127.0.0.1", 0)))
        yield wait_for(lambda: service.is_responsive("named"), timeout=5, what="resolved")
        self.assertEqual(self.states("named"), ["unresponsive", "responsive"])


class LiveNamespaceTests(LiveTestCase):
    @defer.inlineCallbacks
    def test_namespace_host_link_down_and_up(self) -> Generator[Any, Any, None]:
        """A host in a test-made namespace behind a veth goes down with the link, and back."""
        tag = f"{os.getpid() % 10000}{random.randrange(100)}"
        namespace, outside, inside = f"rillping{tag}", f"rpo{tag}", f"rpi{tag}"
        subnet = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"
        run("ip", "netns", "add", namespace)
        self.addCleanup(run, "ip", "netns", "del", namespace, check=False)
        run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        self.addCleanup(run, "ip", "link", "del", outside, check=False)
        run("ip", "link", "set", inside, "netns", namespace)
        run("ip", "addr", "add", f"{subnet}.1/30", "dev", outside)
        run("ip", "link", "set", outside, "up")
        run("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{subnet}.2/30", "dev", inside)
        run("ip", "netns", "exec", namespace, "ip", "link", "set", inside, "up")

        service = self.start([("ns", f"{subnet}.2")])
        yield wait_for(lambda: service.status()["ns"]["state"] == "responsive", timeout=5)
        run("ip", "netns", "exec", namespace, "ip", "link", "set", inside, "down")
        yield wait_for(lambda: not service.is_responsive("ns"), timeout=5, what="down")
        run("ip", "netns", "exec", namespace, "ip", "link", "set", inside, "up")
        yield wait_for(lambda: service.is_responsive("ns"), timeout=5, what="back up")
        self.assertEqual(self.states("ns"), ["responsive", "unresponsive", "responsive"])


class LiveFallbackTests(LiveTestCase):
    """Each case runs a small script in a network namespace of its own (``unshare --net``):
    net.ipv4.ping_group_range is per namespace, so setting it there leaves the machine's
    alone, and the script can only reach that namespace's loopback."""

    @defer.inlineCallbacks
    def test_datagram_sockets_when_ping_group_range_allows(self) -> Generator[Any, Any, None]:
        """Raw sockets refused, ping_group_range open: datagram ICMP sockets get replies."""
        result = yield self.run_script("0 2147483647", refuse_raw=True)
        self.assertEqual(result["states"], {"v4": "responsive", "v6": "responsive"})
        self.assertEqual(result["kinds"], ["unprivileged datagram"] * 2)
        self.assertEqual(result["warnings"], 0)

    @defer.inlineCallbacks
    def test_warns_once_when_no_socket_allowed(self) -> Generator[Any, Any, None]:
        """Raw refused and ping_group_range closed: one warning; every host responsive."""
        result = yield self.run_script("1 0", refuse_raw=True)
        self.assertEqual(result["states"], {"v4": "disabled", "v6": "disabled"})
        self.assertEqual((result["responsive"], result["published"]), (True, 0))
        self.assertEqual((result["kinds"], result["warnings"]), ([], 1))

    @defer.inlineCallbacks
    def test_unprivileged_user(self) -> Generator[Any, Any, None]:
        """As nobody: no ICMP socket at all, then datagram sockets once the group is allowed."""
        closed = yield self.run_script("1 0", as_nobody=True)
        self.assertEqual(closed["states"], {"v4": "disabled", "v6": "disabled"})
        self.assertEqual((closed["responsive"], closed["warnings"]), (True, 1))
        opened = yield self.run_script("65534 65534", as_nobody=True)
        self.assertEqual(opened["states"], {"v4": "responsive", "v6": "responsive"})
        self.assertEqual(opened["kinds"], ["unprivileged datagram"] * 2)

    @defer.inlineCallbacks
    def run_script(self, group_range: str, refuse_raw: bool = False,
                   as_nobody: bool = False) -> Generator[Any, Any, dict[str, Any]]:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_nobody else []
        inside = ("ip link set lo up && echo \"$0\" > /proc/sys/net/ipv4/ping_group_range"
                  " && exec \"$@\"")
        command = ["--net", "--", "sh", "-c", inside, group_range, *user, sys.executable, "-c",
                   SCRIPT, "refuse-raw" if refuse_raw else "allow-raw"]
        environment = {"PYTHONPATH": root, "PATH": "/usr/sbin:/usr/bin:/bin"}
        output = yield with_timeout(utils.getProcessOutput(
            "/usr/bin/unshare", command, env=environment, errortoo=True, path=root),
            20, "the script in its namespace")
        lines = output.decode().strip().splitlines()
        try:
            return json.loads(lines[-1])
        except (IndexError, ValueError):
            self.fail(f"the script printed: {output.decode()}")


# Run in a namespace of its own: ping its loopback until both hosts have a verdict (3 s at
# most), then print states, socket kinds and warnings as JSON.
SCRIPT = """
import json, socket, sys
from twisted.internet import task
from twisted.logger import globalLogPublisher
from rill.ping import PingService

events = []
globalLogPublisher.addObserver(events.append)

def refuse_raw(family, kind, protocol):
    if kind == socket.SOCK_RAW:
        raise PermissionError(1, "Operation not permitted (forced)")
    return socket.socket(family, kind, protocol)

def main(reactor):
    published = []
    factory = refuse_raw if sys.argv[1] == "refuse-raw" else socket.socket
    service = PingService([("v4", "127.0.0.1"), ("v6", "::1")], interval=0.1, reactor=reactor,
                          socket_factory=factory, publish=lambda t, m: published.append(t))
    service.startService()
    def report():
        print(json.dumps({
            "states": {n: r["state"] for n, r in service.status().items()},
            "kinds": [e["kind"] for e in events if "kind" in e],
            "warnings": sum(1 for e in events if e["log_level"].name == "warn"),
            "responsive": all(service.is_responsive(n) for n in ("v4", "v6")),
            "published": len(published)}))
        return service.stopService()
    def check(left):
        if left and any(r["state"] == "unknown" for r in service.status().values()):
            return task.deferLater(reactor, 0.1, check, left - 1)
        return task.deferLater(reactor, 0.3, report)  # a few more intervals: no more warnings
    return check(30)

task.react(main)
"""
