"""Logins against the real sshd: `rill check`, and a tap that is refused backs off quietly."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time

from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from rill.config import config_from_string
from rill.conch_tap import HostTap
from tests.helpers import wait_for
from tests.integration.rig import ServerFixture
from tests.integration.sshd import SSHServer, free_port

WRONG_PRINT = "SHA256:" + "A" * 43


def host_section(server: SSHServer, **overrides: str) -> str:
    values = {
        "address": "127.0.0.1",
        "port": str(server.port),
        "username": server.gnu.username,
        "password": server.gnu.password,
        "host_key": server.host_key_fingerprints()[0],
        "retry_initial": "0.2",
        "connect_timeout": "5",
    }
    values.update(overrides)
    return "[host:alpha]\n" + "".join(f"{k} = {v}\n" for k, v in values.items() if v)


class LoginTests(ServerFixture, unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        yield ServerFixture.setUp(self)

    def config(self, **overrides: str) -> str:
        return (
            f"[rill]\ndata_dir = {self.workspace.data_dir}\n"
            + host_section(self.server, **overrides)
            + "[tap:t]\nhosts = alpha\npath = /var/log/nothing\n"
        )

    def check(self, **overrides: str) -> subprocess.CompletedProcess[str]:
        path = self.workspace.write_config(self.config(**overrides))
        return subprocess.run(
            [sys.executable, "-m", "rill.cli.main", "-c", path, "check"], capture_output=True, text=True, timeout=60
        )

    def test_check_ok(self):
        """`rill check` logs in with the right password and pinned key, and says ok."""
        result = self.check()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("alpha: ok", result.stdout)

    def test_check_wrong_password(self):
        """A wrong password is one FAILED line saying 'auth failed', and a non-zero exit."""
        result = self.check(password="not-the-password")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.strip().splitlines(), [result.stderr.strip()])
        self.assertIn("FAILED alpha: auth failed", result.stderr)
        self.assertNotIn("not-the-password", result.stderr + result.stdout)

    def test_check_host_key_mismatch(self):
        """A pinned fingerprint the server does not have is one FAILED 'host key mismatch' line."""
        result = self.check(host_key=WRONG_PRINT)
        self.assertEqual(result.returncode, 1)
        self.assertIn("FAILED alpha: host key mismatch", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_check_refused(self):
        """A port nobody listens on is reported as refused."""
        result = self.check(port=str(free_port()))
        self.assertEqual(result.returncode, 1)
        self.assertIn("FAILED alpha: refused", result.stderr)

    def test_check_public_key(self):
        """key = PATH logs in with a key in the user's authorized_keys."""
        key = os.path.join(self.workspace.dir, "id_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        home = pwd.getpwnam(self.server.gnu.username).pw_dir
        os.makedirs(f"{home}/.ssh", mode=0o700, exist_ok=True)
        authorized = f"{home}/.ssh/authorized_keys"
        with open(f"{key}.pub") as f:
            public = f.read()
        with open(authorized, "w") as f:
            f.write(public)
        self.addCleanup(os.unlink, authorized)
        entry = pwd.getpwnam(self.server.gnu.username)
        os.chown(f"{home}/.ssh", entry.pw_uid, entry.pw_gid)
        os.chown(authorized, entry.pw_uid, entry.pw_gid)
        result = self.check(password="", key=key)
        self.assertEqual(result.returncode, 0, result.stderr)

    @defer.inlineCallbacks
    def refused_tap(self, expected_state: str, **overrides: str):
        """Run a HostTap that will be refused; return (tap, log lines about it)."""
        config = config_from_string(self.config(**overrides))
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        tap = HostTap(config.hosts["alpha"], config.data_dir, reactor)
        started = time.monotonic()
        tap.startService()
        self.addCleanup(tap.stopService)
        yield wait_for(lambda: tap.stats["connection_attempts"] >= 4, 60, "four connection attempts")
        # retry_initial 0.2 doubling: at least 0.2 + 0.4 + 0.8 s pass before the 4th attempt.
        self.assertGreaterEqual(time.monotonic() - started, 1.4)
        self.assertEqual(tap.state, expected_state)
        failures = [e for e in events if e.get("log_namespace") == "rill.conch_tap" and "login failed" in e.get("log_format", "")]
        return tap, failures

    @defer.inlineCallbacks
    def test_wrong_password_backs_off(self):
        """A refused password is logged once (not per retry) and retried with growing delays."""
        tap, failures = yield self.refused_tap("auth failed", password="wrong")
        self.assertEqual(len(failures), 1)
        self.assertIn("auth failed", failures[0]["error"])
        slot = tap.slots[0]
        self.assertGreaterEqual(slot.login_failures, 3)

    @defer.inlineCallbacks
    def test_host_key_mismatch_backs_off(self):
        """A host key mismatch is logged once with both fingerprints and the tap backs off."""
        tap, failures = yield self.refused_tap("host key mismatch", host_key=WRONG_PRINT)
        self.assertEqual(len(failures), 1)
        self.assertIn(WRONG_PRINT, failures[0]["error"])
        self.assertIn(self.server.host_key_fingerprints()[0], failures[0]["error"])
