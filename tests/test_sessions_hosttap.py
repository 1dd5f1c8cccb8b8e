"""Sessions on the lead's real ``HostTap`` (rill.conch_tap) instead of the test opener.

The same service wiring ``rill.service`` is expected to do: a HostTap, a
SessionManager taking its channels from ``tap.open_channel`` (and telling the
tap when they close), and a per-host ROUTER; a real DEALER and SUB as clients.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import zmq
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from txzmq import ZmqFactory

from rill.conch_tap import HostTap
from rill.config import HostConfig, HostKeyPolicy
from rill.protocols.router import RouterEndpoint
from rill.sessions import SessionManager, session_handlers
from tests.helpers import wait_for
from tests.integration.sshd import SSHServer
from tests.session_opener import authorize_test_key
from tests.signalling_client import SignallingClient


class HostTapSessionTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> defer.Generator[Any, Any, None]:
        self.server = SSHServer()  # MaxSessions 10, as Debian ships it
        yield self.server.start()
        self.addCleanup(self.server.cleanup)
        self.host = self._host_config()
        self.tap = HostTap(self.host, self.workdir, reactor)
        self.zmq = ZmqFactory()
        self.addCleanup(self.zmq.shutdown)
        self.manager = SessionManager(
            self.tap.open_channel,
            5,
            20,
            reactor,
            self.host.name,
            zmq_factory=self.zmq,
            channel_closed=self.tap.channel_closed,
            is_connected=lambda: self.tap.connected,
        )
        self.tap.when_connected(self.manager.host_connected)
        self.router = RouterEndpoint(self.zmq, "tcp://127.0.0.1:*", session_handlers(self.manager), 30, reactor)
        for service in (self.tap, self.manager, self.router):
            service.startService()
        for service in (self.tap, self.manager, self.router):
            self.addCleanup(service.stopService)
        self.context = zmq.Context()
        self.addCleanup(self.context.term)
        self.client = SignallingClient(self.router.bound_endpoint, context=self.context)
        self.addCleanup(self.client.close)

    def _host_config(self) -> HostConfig:
        """A [host:...] entry for the test sshd: a key of our own, host keys from a known_hosts file."""
        key, forget = authorize_test_key(self.server.gnu.username)
        self.addCleanup(forget)
        self.workdir = workdir = tempfile.mkdtemp(prefix="rill-sessions-")
        self.addCleanup(shutil.rmtree, workdir, True)
        key_path, known_hosts = os.path.join(workdir, "id_ed25519"), os.path.join(workdir, "known_hosts")
        with open(key_path, "wb") as f:
            f.write(key.toString("OPENSSH"))
        os.chmod(key_path, 0o600)
        with open(known_hosts, "w") as f:
            f.write(self.server.known_hosts_lines())
        return HostConfig(
            name="sshd",
            address="127.0.0.1",
            port=self.server.port,
            username=self.server.gnu.username,
            key=key_path,
            host_key=HostKeyPolicy("known_hosts", known_hosts=known_hosts),
        )

    def open_channels(self) -> int:
        return sum(len(slot.connection.channels) for slot in self.tap.slots if slot.connection is not None)

    @defer.inlineCallbacks
    def test_sessions_over_host_tap(self) -> defer.Generator[Any, Any, None]:
        """Pool, 20 sessions over two connections, echo to a SUB, cap, deletes free the tap's channels."""
        yield wait_for(lambda: len(self.manager.ready) == 5, 30, "the pool to fill through HostTap")
        created = []
        for _ in range(20):
            reply = yield self.client.request("create_session")
            self.assertEqual(reply["status"], "ok", reply)
            created.append(reply)
        refused = yield self.client.request("create_session")
        self.assertIn("session limit reached", refused["failure_reason"])
        self.assertGreaterEqual(len([s for s in self.tap.slots if s.connection is not None]), 2)
        first = created[0]
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(first["publish_zeromq_bind"])
        self.addCleanup(sub.close)
        frames: list[list[bytes]] = []

        def heard(needle: bytes) -> bool:
            while sub.poll(0):
                frames.append(sub.recv_multipart())
            return any(needle in frame for frame_list in frames for frame in frame_list)

        for _ in range(100):  # a late SUB misses what came before it connected: nudge until it hears
            yield self.client.request("send_data_to_session", session_id=first["session_id"], contents="echo hello-$((6*7))\n")
            got = yield wait_for(lambda: sub.poll(0), 0.3, "output").addErrback(lambda _: 0)
            if got:
                break
        yield wait_for(lambda: heard(b"hello-42"), 10, "hello-42 on the session's SUB")
        for reply in created:
            deleted = yield self.client.request("delete_session", session_id=reply["session_id"])
            self.assertEqual(deleted["status"], "ok", deleted)
        yield wait_for(lambda: heard(b"closed/" + first["session_id"].encode()), 10, "the closing notice")
        yield wait_for(lambda: not self.manager.closing and len(self.manager.ready) == 5, 30, "closes and refill")
        yield wait_for(lambda: self.open_channels() == 5, 30, "only the pool's channels to stay open")
        self.assertEqual(sum(len(slot.channels) for slot in self.tap.slots), 5)
