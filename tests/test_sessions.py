"""The session manager's pool, cap and lifecycle, against an in-memory SSH connection."""

from __future__ import annotations

import json
from typing import Any

import zmq
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from txzmq import ZmqFactory

from rill.protocols.signalling import RequestError
from rill.sessions import (
    SessionManager,
    ShellChannel,
    control_handlers,
    session_handlers,
)


class FakeConnection:
    """Just enough of an SSHConnection, and of a server's shell, for ShellChannel.

    The "shell" answers the setup line with its prompt; the "server" confirms
    a close at once unless ``confirm_closes`` is False; ``refuse`` fails opens.
    """

    def __init__(self) -> None:
        self.channels: dict[int, ShellChannel] = {}
        self.sent: dict[ShellChannel, bytes] = {}
        self.requests: list[tuple[ShellChannel, bytes, bytes]] = []
        self.opened: list[ShellChannel] = []
        self.next_id = 0
        self.prompt = True
        self.confirm_closes = True
        self.refuse: Exception | None = None

    def open_channel(self, channel: ShellChannel) -> defer.Deferred[ShellChannel]:
        if self.refuse is not None:
            return defer.fail(self.refuse)
        channel.id, channel.conn = self.next_id, self  # type: ignore[assignment]
        self.next_id += 1
        channel.remoteWindowLeft, channel.remoteMaxPacket = 4096, 1024
        self.channels[channel.id] = channel
        self.opened.append(channel)
        channel.channelOpen(b"")
        return defer.succeed(channel)

    def sendRequest(self, channel: ShellChannel, kind: bytes, data: bytes, wantReply: int = 0) -> Any:
        self.requests.append((channel, kind, data))
        return defer.succeed(b"") if wantReply else None

    def sendData(self, channel: ShellChannel, data: bytes) -> None:
        self.sent[channel] = self.sent.get(channel, b"") + data
        if self.prompt and data == channel.setup.encode():
            channel.dataReceived(b"$ " + data + channel.prompt[:5])
            channel.dataReceived(channel.prompt[5:])

    def sendClose(self, channel: ShellChannel) -> None:
        channel.localClosed = True
        if self.confirm_closes:
            self.confirm_close(channel)

    def confirm_close(self, channel: ShellChannel) -> None:
        channel.remoteClosed = True
        del self.channels[channel.id]
        channel.closed()

    def server_closes(self, channel: ShellChannel) -> None:
        """The shell exits: the server closes the channel first."""
        channel.request_exit_status(b"\x00\x00\x00\x01")
        channel.closeReceived()

    def lose(self) -> None:
        """The SSH connection drops: every channel is closed under us."""
        for channel in list(self.channels.values()):
            channel.localClosed = channel.remoteClosed = True
            del self.channels[channel.id]
            channel.closed()

    def hung_up(self, channel: ShellChannel) -> bool:
        return (channel, b"signal", b"\x00\x00\x00\x03HUP") in self.requests and channel.localClosed


class SessionTestCase(SynchronousTestCase):
    pool_size = 2
    max_sessions = 4

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.conn = FakeConnection()
        self.zmq = ZmqFactory()
        self.zmq.reactor = self.clock
        self.addCleanup(self.zmq.shutdown)
        self.manager = SessionManager(
            self.conn.open_channel, self.pool_size, self.max_sessions, self.clock, "web1", zmq_factory=self.zmq
        )
        self.manager.startService()

    def tearDown(self) -> None:
        if self.manager.running:
            self.successResultOf(self.manager.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def create(self, client_id: str = "c") -> dict[str, Any]:
        return self.successResultOf(self.manager.create_session(client_id))

    def cap_reason(self) -> str:
        return self.failureResultOf(self.manager.create_session("c"), RequestError).value.reason


class PoolTests(SessionTestCase):
    def test_pool_filled_at_start(self) -> None:
        """Starting the manager opens pool_size shells and waits for their prompts."""
        self.assertEqual(len(self.manager.ready), 2)
        for channel in self.conn.opened:
            kinds = [kind for ch, kind, _ in self.conn.requests if ch is channel]
            self.assertEqual(kinds, [b"pty-req", b"shell"])
            self.assertIn(b"unset HISTFILE", self.conn.sent[channel])

    def test_create_is_immediate_and_refills(self) -> None:
        """create_session answers at once from the pool, binds a PUB socket, and the pool refills."""
        reply = self.create()
        self.assertRegex(reply["publish_zeromq_bind"], r"^tcp://127\.0\.0\.1:\d+$")
        publisher = self.manager.sessions[reply["session_id"]].publisher.socket
        self.assertEqual(publisher.getsockopt(zmq.SNDHWM), 1000)  # finite: a slow subscriber loses output
        self.assertEqual(len(reply["session_id"]), 32)
        self.assertEqual((len(self.manager.ready), len(self.conn.opened)), (2, 3))

    def test_prompt_not_matched_by_echo(self) -> None:
        """The echoed setup line does not look like the prompt; only the real prompt makes a shell ready."""
        channel = ShellChannel(self.clock)
        self.assertNotIn(channel.prompt, channel.setup.encode())

    def test_never_reused(self) -> None:
        """A deleted session's shell is hung up and never handed out again; its id stays dead."""
        first = self.create()
        channel = self.manager.sessions[first["session_id"]].channel
        self.manager.delete_session(first["session_id"])
        self.assertTrue(self.conn.hung_up(channel))
        handed = {self.manager.sessions[self.create()["session_id"]].channel for _ in range(3)}
        self.assertNotIn(channel, handed)
        self.assertEqual(len(handed), 3)
        error = self.assertRaises(RequestError, self.manager.delete_session, first["session_id"])
        self.assertIn("was deleted", error.reason)

    def test_cap(self) -> None:
        """At max_sessions, create fails with the reason; deleting one lets the next succeed."""
        ids = [self.create()["session_id"] for _ in range(4)]
        self.assertEqual(
            self.cap_reason(),
            "session limit reached on host web1: 4 sessions open (max_sessions = 4); delete one first",
        )
        self.assertEqual(self.manager.channels(), 4)
        self.manager.delete_session(ids[0])
        self.create()

    def test_closing_channels_count_until_confirmed(self) -> None:
        """A deleted shell holds its slot on the host until the server confirms the close."""
        self.conn.confirm_closes = False
        ids = [self.create()["session_id"] for _ in range(4)]
        channel = self.manager.sessions[ids[0]].channel
        self.manager.delete_session(ids[0])
        waiting = self.manager.create_session("c")
        self.assertNoResult(waiting)
        self.assertEqual(self.manager.channels(), 4)
        self.conn.confirm_close(channel)
        self.assertIn("session_id", self.successResultOf(waiting))
        self.conn.confirm_closes = True

    def test_close_timeout(self) -> None:
        """A close the server never confirms frees its slot after close_timeout."""
        self.conn.confirm_closes = False
        session_id = self.create()["session_id"]
        self.manager.delete_session(session_id)
        self.assertEqual(len(self.manager.closing), 1)
        self.clock.advance(self.manager.close_timeout)
        self.assertEqual(len(self.manager.closing), 0)
        self.conn.confirm_closes = True
        for channel in list(self.conn.channels.values()):
            if channel.localClosed:
                self.conn.confirm_close(channel)

    def test_open_failure_and_backoff(self) -> None:
        """Failed opens fail the waiting create with the reason, and the pool retries with backoff."""
        self.manager.max_sessions = 10
        self.conn.refuse = RuntimeError("host unreachable")
        self.create()
        self.create()  # the pool is now empty; refills are failing
        reason = self.failureResultOf(self.manager.create_session("c"), RequestError).value.reason
        self.assertEqual(reason, "cannot open a shell on host web1: host unreachable")
        attempts = self.manager.counts["open_failures"]
        self.conn.refuse = None
        self.clock.advance(0.4)
        self.assertEqual((self.manager.counts["open_failures"], len(self.manager.ready)), (attempts, 0))
        self.clock.advance(0.1)
        self.assertEqual(len(self.manager.ready), 2)

    def test_pool_recovers_after_failures(self) -> None:
        """Once the host answers again, the retry refills the pool."""
        self.conn.refuse = RuntimeError("down")
        manager = SessionManager(self.conn.open_channel, 3, 10, self.clock, "h2", zmq_factory=self.zmq)
        manager.startService()
        self.assertEqual(manager.counts["open_failures"], 3)
        self.conn.refuse = None
        self.clock.advance(manager.retry_max)
        self.assertEqual(len(manager.ready), 3)
        self.successResultOf(manager.stopService())

    def test_open_refused_not_counted(self) -> None:
        """A channel the connection never opened is not waited for as "closing"."""
        self.successResultOf(self.manager.stopService())

        def refuse_after_assigning(channel: ShellChannel) -> defer.Deferred[ShellChannel]:
            channel.id = 99  # the connection numbered it, then the server refused it
            return defer.fail(RuntimeError("open failed"))

        manager = SessionManager(refuse_after_assigning, 1, 4, self.clock, "h", zmq_factory=self.zmq)
        manager.startService()
        self.assertEqual((manager.counts["open_failures"], len(manager.closing)), (1, 0))
        self.successResultOf(manager.stopService())

    def test_stop_while_opening(self) -> None:
        """Stopping while opens are in flight closes those channels once they open."""
        self.successResultOf(self.manager.stopService())
        pending: list[tuple[ShellChannel, defer.Deferred[ShellChannel]]] = []

        def slow_open(channel: ShellChannel) -> defer.Deferred[ShellChannel]:
            d: defer.Deferred[ShellChannel] = defer.Deferred()
            pending.append((channel, d))
            return d

        manager = SessionManager(slow_open, 2, 4, self.clock, "h", zmq_factory=self.zmq)
        manager.startService()
        stopped = manager.stopService()
        for channel, d in pending:
            self.conn.open_channel(channel)
            d.callback(channel)
        self.successResultOf(stopped)
        self.assertEqual(self.conn.channels, {})
        self.assertEqual(len(manager.opening), 0)

    def test_open_timeout(self) -> None:
        """A host that never gives a channel fails the create after open_timeout; a late channel is closed."""
        self.successResultOf(self.manager.stopService())
        pending: list[ShellChannel] = []

        def never(channel: ShellChannel) -> defer.Deferred[ShellChannel]:
            pending.append(channel)
            return defer.Deferred()

        manager = SessionManager(never, 0, 4, self.clock, "h", zmq_factory=self.zmq, open_timeout=7)
        manager.startService()
        create = manager.create_session("c")
        self.clock.advance(7)
        reason = self.failureResultOf(create, RequestError).value.reason
        self.assertEqual(reason, "cannot open a shell on host h: no channel on host h within 7 s")
        self.conn.open_channel(pending[0])  # the host tap opens it after all
        self.assertTrue(self.conn.hung_up(pending[0]))
        self.assertEqual(self.conn.channels, {})
        self.successResultOf(manager.stopService())

    def test_host_down(self) -> None:
        """While the host is down the pool waits and creates fail at once; host_connected refills at once."""
        self.successResultOf(self.manager.stopService())
        up = [False]
        manager = SessionManager(
            self.conn.open_channel, 2, 4, self.clock, "h", zmq_factory=self.zmq, is_connected=lambda: up[0]
        )
        before = len(self.conn.opened)
        manager.startService()
        self.assertEqual(len(self.conn.opened), before)
        reason = self.failureResultOf(manager.create_session("c"), RequestError).value.reason
        self.assertEqual(reason, "host h is not connected; no shell can be opened now")
        up[0] = True
        manager.host_connected()
        self.assertEqual(len(manager.ready), 2)
        self.successResultOf(manager.stopService())

    def test_prompt_timeout(self) -> None:
        """A shell that never shows its prompt is given up and hung up after prompt_timeout."""
        self.successResultOf(self.manager.stopService())
        self.conn.prompt = False
        manager = SessionManager(self.conn.open_channel, 1, 4, self.clock, "slow", zmq_factory=self.zmq, prompt_timeout=5)
        manager.startService()
        self.clock.advance(5)
        self.assertEqual(manager.counts["open_failures"], 1)
        self.assertTrue(self.conn.hung_up(self.conn.opened[-1]))
        self.successResultOf(manager.stopService())

    def test_stop_closes_everything(self) -> None:
        """stopService hangs up warm and handed-out shells and fails waiting creates."""
        self.create()
        self.successResultOf(self.manager.stopService())
        self.assertEqual(self.conn.channels, {})
        self.assertEqual(self.manager.sessions, {})
        self.assertIn("not running", self.failureResultOf(self.manager.create_session("c"), RequestError).value.reason)


class SessionLifeTests(SessionTestCase):
    def subscribe(self, endpoint: str) -> zmq.Socket:
        socket = self.zmq.context.socket(zmq.SUB)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        self.addCleanup(socket.close)
        return socket

    def receive(self, socket: zmq.Socket) -> list[bytes]:
        self.assertTrue(socket.poll(5000), "nothing published")
        return socket.recv_multipart()

    def publish_until_received(self, session_id: str, socket: zmq.Socket) -> list[bytes]:
        """Output, repeated until the late-joining SUB gets some (PUB drops before it connects)."""
        channel = self.manager.sessions[session_id].channel
        for _ in range(100):
            channel.dataReceived(b"out")
            if socket.poll(50):
                return socket.recv_multipart()
        self.fail("the SUB never received output")

    def test_send_and_output(self) -> None:
        """Data is written as given and counted; output is published and counted."""
        reply = self.create()
        session_id = reply["session_id"]
        channel = self.manager.sessions[session_id].channel
        self.conn.sent[channel] = b""
        self.assertEqual(self.manager.send_data(session_id, "ls ü"), {"bytes_written": 5, "bytes written": 5})
        self.assertEqual(self.conn.sent[channel], "ls ü".encode())
        socket = self.subscribe(reply["publish_zeromq_bind"])
        self.assertEqual(self.publish_until_received(session_id, socket), [f"data/{session_id}".encode(), b"out"])
        [info] = self.manager.session_info(session_id)
        self.assertEqual((info["bytes_written"], info["bytes written"], info["state"]), (5, 5, "open"))
        self.assertEqual(info["bytes_read"] % 3, 0)
        self.assertEqual(info["client_id"], "c")

    def test_send_failures(self) -> None:
        """Unknown sessions and a full input buffer fail with bytes_written 0."""
        error = self.assertRaises(RequestError, self.manager.send_data, "nope", "x")
        self.assertEqual((error.reason, error.fields["bytes_written"]), ("session 'nope' is not known on host web1", 0))
        session_id = self.create()["session_id"]
        self.manager.max_input_buffer = 10_000
        self.manager.send_data(session_id, "x" * 9000)  # 4096 go out, 4904 wait for the window
        error = self.assertRaises(RequestError, self.manager.send_data, session_id, "y" * 6000)
        self.assertIn("wrote 0 of 6000 bytes", error.reason)

    def test_session_dies(self) -> None:
        """A session whose channel dies is listed closed, announced on its PUB, frees its slot, then is reaped."""
        reply = self.create()
        session_id = reply["session_id"]
        socket = self.subscribe(reply["publish_zeromq_bind"])
        self.publish_until_received(session_id, socket)
        self.conn.server_closes(self.manager.sessions[session_id].channel)
        while True:
            frames = self.receive(socket)
            if frames[0].startswith(b"closed/"):
                break
        self.assertEqual(json.loads(frames[1])["reason"], "the shell exited with status 1")
        [info] = self.manager.session_info(session_id)
        self.assertEqual((info["state"], info["closed_reason"]), ("closed", "the shell exited with status 1"))
        self.assertEqual(self.manager.active(), 0)
        error = self.assertRaises(RequestError, self.manager.send_data, session_id, "x")
        self.assertIn("is closed: the shell exited", error.reason)
        self.clock.advance(self.manager.closed_linger)
        self.assertEqual(self.manager.session_info(), [])

    def test_connection_lost(self) -> None:
        """When the SSH connection drops, sessions say so and warm shells are replaced."""
        session_id = self.create()["session_id"]
        self.conn.lose()
        [info] = self.manager.session_info(session_id)
        self.assertEqual(info["closed_reason"], "the SSH connection to the host was lost")
        self.assertEqual(len(self.manager.ready), 2)
        self.manager.delete_session(session_id)


class HandlerTests(SessionTestCase):
    def request(self, **fields: Any) -> dict[str, Any]:
        return {"unique_id": "u", "client_id": "me", "datetime": "x", **fields}

    def test_session_handlers(self) -> None:
        """The four commands validate their fields and call the manager."""
        handlers = session_handlers(self.manager)
        created = self.successResultOf(handlers["create_session"](self.request()))
        session_id = created["session_id"]
        sent = handlers["send_data_to_session"](self.request(session_id=session_id, contents="echo\n"))
        self.assertEqual(sent["bytes written"], 5)
        [info] = handlers["get_session_info"](self.request())["sessions"]
        self.assertEqual((info["session_id"], info["client_id"], info["host"]), (session_id, "me", "web1"))
        self.assertEqual(handlers["delete_session"](self.request(session_id=session_id)), {})
        error = self.assertRaises(RequestError, handlers["send_data_to_session"], self.request(session_id=session_id))
        self.assertEqual((error.reason, error.fields["bytes_written"]), ("missing field 'contents'", 0))
        error = self.assertRaises(RequestError, handlers["get_session_info"], self.request(session_id=3))
        self.assertEqual(error.reason, "field 'session_id' must be a string, got integer")

    def test_control_handlers(self) -> None:
        """The control table routes by host; create needs it, the others find the session anywhere."""
        other = SessionManager(self.conn.open_channel, 1, 2, self.clock, "db1", zmq_factory=self.zmq)
        other.startService()
        handlers = control_handlers({"web1": self.manager, "db1": other})
        error = self.assertRaises(RequestError, handlers["create_session"], self.request())
        self.assertEqual(error.reason, "missing field 'host'")
        error = self.assertRaises(RequestError, handlers["create_session"], self.request(host="mail"))
        self.assertEqual(error.reason, "unknown host 'mail'; hosts with sessions: db1, web1")
        created = self.successResultOf(handlers["create_session"](self.request(host="db1")))
        sent = handlers["send_data_to_session"](self.request(session_id=created["session_id"], contents="x"))
        self.assertEqual(sent["bytes_written"], 1)
        infos = handlers["get_session_info"](self.request())["sessions"]
        self.assertEqual([i["host"] for i in infos], ["db1"])
        error = self.assertRaises(RequestError, handlers["delete_session"], self.request(session_id="gone"))
        self.assertEqual(error.reason, "session 'gone' is not known on any host")
        error = self.assertRaises(
            RequestError, handlers["delete_session"], self.request(host="web1", session_id=created["session_id"])
        )
        self.assertIn("is not known on host web1", error.reason)
        handlers["delete_session"](self.request(session_id=created["session_id"]))
        self.successResultOf(other.stopService())
