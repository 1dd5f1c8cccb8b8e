"""Issue 3, acceptance 1: chaos -- rotations, link cuts (RST and silent), SIGKILLs -- and still exactly once."""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.logger import Logger
from twisted.trial import unittest

from tests.integration.chaos import ChaosRun
from tests.integration.sshd import SSHServer

log = Logger()
SECONDS = float(os.environ.get("RILL_CHAOS_SECONDS", "25"))


class ChaosScenario:
    busybox = False

    @defer.inlineCallbacks
    def test_chaos(self):
        """Random rotations, gzip, copytruncate, RST and silent cuts and SIGKILLs: every line once, mirrors exact, no gaps."""
        server = SSHServer(max_sessions=10)
        yield server.start()
        self.addCleanup(server.cleanup)
        run = ChaosRun(server, server.busybox if self.busybox else server.gnu, SECONDS)
        self.addCleanup(run.cleanup)
        self.addCleanup(lambda: log.info("twistd rill output:\n{output}", output=run.rill.log_text()))
        report = yield run.run()
        log.info("chaos: {report}", report=report.line())
        self.assertGreater(report.written, 0)
        self.assertGreater(report.rotations + report.restarts + report.reconnect_cuts, 0)
        self.assertEqual(report.mismatched_generations, [], report.line())
        self.assertEqual((report.lost, report.duplicated, report.gaps), (0, 0, 0), report.line())
        self.assertEqual(report.mirrored, report.written)


class GNUChaosTests(ChaosScenario, unittest.TestCase):
    """Against the GNU coreutils login."""

    timeout = 240


class BusyBoxChaosTests(ChaosScenario, unittest.TestCase):
    """Against the BusyBox-only login."""

    busybox = True
    timeout = 240
