"""Issue 5, acceptance 3: lines written on the real sshd are findable within 2 s,
through `rill search` and through the control ROUTER's `search`."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.trial import unittest

from tests.helpers import wait_for
from tests.integration.rig import LineWriter, RillProcess, ServerFixture, host_section, rill_command
from tests.integration.sshd import free_port, make_target_dir
from tests.signalling_client import SignallingClient

log = Logger()


class SearchEndToEndTests(ServerFixture, unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        yield ServerFixture.setUp(self)
        self.writer = LineWriter(os.path.join(make_target_dir(), "app.log"), "app")
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.config_path = self.workspace.write_config(
            f"[rill]\ndata_dir = {self.workspace.data_dir}\npublish = tcp://127.0.0.1:{free_port()}\n"
            f"control = {self.control}\nwatch_interval = 0.2\n"
            + host_section("web1", self.server, self.server.gnu, ping="off")
            +
            f"[tap:app]\nhosts = web1\npath = {self.writer.path}\n"
        )
        self.rill = RillProcess(self.config_path)
        self.addCleanup(self.rill.stop)
        self.keep_rill_log(self.rill)
        yield self.rill.start()
        self.writer.write(200)

    def cli_search(self, query: str) -> list[dict]:
        result = subprocess.run(rill_command("-c", self.config_path, "search", "--json", query), capture_output=True, text=True, timeout=30)
        log.info("rill search: {code} {err}", code=result.returncode, err=result.stderr[-300:])
        return [line for line in map(json.loads, result.stdout.splitlines()) if "line" in line]

    @defer.inlineCallbacks
    def test_findable_with_rill_search_within_two_seconds(self):
        """A line written on the server is found by `rill search` (and the control ROUTER) within 2 s."""
        token = f"needle{uuid.uuid4().hex[:12]}"
        with open(self.writer.path, "a") as f:
            f.write(f"2026-11-26T10:00:00Z ERROR payment failed token={token} host=db1\n")
        written = time.monotonic()
        hits = yield wait_for(lambda: self.cli_search(token), 2.0, "rill search to find the new line", poll=0.05)
        log.info("rill search found it {seconds:.3f}s after the write", seconds=time.monotonic() - written)
        self.assertEqual(len(hits), 1)
        self.assertEqual(hits[0]["host"], "web1")
        self.assertEqual(hits[0]["path"], self.writer.path)
        self.assertIn(token, hits[0]["line"])
        client = SignallingClient(self.control)
        self.addCleanup(client.close)
        reply = yield threads.deferToThread(client.request_blocking, "search", query=f"{token} AND host:web1")
        self.assertEqual(reply["status"], "ok", reply)
        self.assertEqual([h["offset"] for h in reply["hits"]], [hits[0]["offset"]])

    @defer.inlineCallbacks
    def test_bad_query_is_one_clear_line(self):
        """A malformed query names the position and what was expected, on the CLI and over ZeroMQ."""
        result = subprocess.run(rill_command("-c", self.config_path, "search", '(error AND'), capture_output=True, text=True)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertIn("position", result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        client = SignallingClient(self.control)
        self.addCleanup(client.close)
        reply = yield threads.deferToThread(client.request_blocking, "search", query="(error AND")
        self.assertEqual(reply["status"], "failed")
        self.assertIn("position", reply["failure_reason"])
