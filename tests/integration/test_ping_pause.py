"""Issue 7, acceptance 2: a host that stops answering pings is not hammered, and is
streaming again within one ping interval plus one SSH handshake of answering again."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time

from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial import unittest

from rill.store.mirror import MirrorStore
from tests.helpers import wait_for
from tests.integration.rig import LineWriter, RillProcess, Workspace, rill_cat
from tests.integration.sshd import SSHServer, free_port, make_target_dir
from tests.signalling_client import SignallingClient

log = Logger()
PING_INTERVAL = 0.2


def iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", *args], check=True, capture_output=True)


class PingPauseTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        if not shutil.which("iptables"):
            raise unittest.SkipTest("iptables is not installed (.ci/run installs it)")
        # An address of our own on loopback, so a DROP rule cuts only this test's host.
        self.address = f"127.77.{random.randint(1, 254)}.{random.randint(1, 254)}"
        self.server = SSHServer(address=self.address)
        yield self.server.start()
        self.addCleanup(self.server.cleanup)
        self.workspace = Workspace()
        self.addCleanup(self.workspace.cleanup)
        self.writer = LineWriter(os.path.join(make_target_dir(), "app.log"), "app")
        control = f"tcp://127.0.0.1:{free_port()}"
        config = (
            f"[rill]\ndata_dir = {self.workspace.data_dir}\npublish = tcp://127.0.0.1:{free_port()}\n"
            f"control = {control}\nping_interval = {PING_INTERVAL}\nping_misses = 3\n"
            f"[host:alpha]\naddress = {self.address}\nport = {self.server.port}\n"
            f"username = {self.server.gnu.username}\npassword = {self.server.gnu.password}\n"
            f"host_key = {self.server.host_key_fingerprints()[0]}\n"
            "keepalive_interval = 0.5\nkeepalive_count = 3\nretry_initial = 0.2\nconnect_timeout = 3\n"
            f"[tap:app]\nhosts = alpha\npath = {self.writer.path}\n"
        )
        self.config_path = self.workspace.write_config(config)
        self.rill = RillProcess(self.config_path)
        self.addCleanup(self.rill.stop)
        self.addCleanup(self.rill.save_log, self.id())
        self.client = SignallingClient(control)
        self.addCleanup(self.client.close)

    def mirrored(self) -> int:
        mirrored = MirrorStore(self.workspace.data_dir).find("alpha", self.writer.path)
        return sum(mirrored.length(g.number) for g in mirrored.generations()) if mirrored else 0

    @defer.inlineCallbacks
    def status(self):
        reply = yield self.client.request("status")
        return reply["report"]

    @defer.inlineCallbacks
    def wait_status(self, predicate, what, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = yield self.status()
            if predicate(status):
                return status
        self.fail(f"timed out waiting for {what}; last status: {status}")

    @defer.inlineCallbacks
    def test_unreachable_host_is_paused_then_resumed(self):
        """No connection attempts while ping says down; streaming again soon after it answers; no line lost."""
        yield self.rill.start()
        self.writer.write(500)
        yield wait_for(lambda: self.mirrored() == os.path.getsize(self.writer.path), 30, "the first lines")
        # Both directions: on loopback the client's source address is 127.0.0.1.
        rules = [("INPUT", flag, self.address, "-j", "DROP") for flag in ("-d", "-s")]
        for rule in rules:
            iptables("-I", *rule)
            self.addCleanup(subprocess.run, ["iptables", "-w", "-D", *rule], capture_output=True)
        self.writer.write(500)
        down = yield self.wait_status(
            lambda s: s["ping"]["alpha"]["state"] == "unresponsive" and s["hosts"]["alpha"]["connections"] == 0,
            "the host to be unresponsive and its connection dropped by keepalives",
        )
        attempts = down["hosts"]["alpha"]["connection_attempts"]
        sent = down["ping"]["alpha"]["sent"]
        # Let 15 more ping intervals pass (an event we can observe: pings sent).
        later = yield self.wait_status(lambda s: s["ping"]["alpha"]["sent"] >= sent + 15, "15 more pings")
        self.assertEqual(later["hosts"]["alpha"]["connection_attempts"], attempts, "attempts while paused")
        self.assertEqual(later["hosts"]["alpha"]["state"], "paused by ping")
        for rule in rules:
            iptables("-D", *rule)
        restored = time.monotonic()
        yield wait_for(lambda: self.mirrored() == os.path.getsize(self.writer.path), 30, "the mirror to catch up")
        recovery = time.monotonic() - restored
        log.info("recovered {seconds:.3f}s after the host answered again", seconds=recovery)
        # One ping interval (plus the K=1 reply) and one handshake; generous for a loaded CI machine.
        self.assertLess(recovery, 5.0)
        self.writer.write(500)
        yield wait_for(lambda: self.mirrored() == os.path.getsize(self.writer.path), 30, "the last lines")
        lines = [x for x in rill_cat(self.config_path, "alpha", self.writer.path).decode().splitlines()]
        self.assertEqual(lines, self.writer.expected())
