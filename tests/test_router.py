"""The signalling ROUTER endpoint, with real pyzmq DEALER clients."""

from __future__ import annotations

import json
import time
from typing import Any

import zmq
from twisted.internet import defer, reactor, task, threads
from twisted.logger import Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txzmq import ZmqFactory

from rill.protocols import signalling as sig
from rill.protocols.router import RouterEndpoint
from rill.ratelimit import RateLimitedLog
from rill.protocols.signalling import RequestError
from rill.sessions import SessionManager, session_handlers
from tests.helpers import wait_for
from tests.signalling_client import SignallingClient, fuzz_router


def _slow(request: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
    return task.deferLater(reactor, request["delay"], lambda: {"value": request["value"]})


def _refuse(request: dict[str, Any]) -> dict[str, Any]:
    raise RequestError("refused on purpose", bytes_written=0)


def _boom(request: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("kaboom")


HANDLERS = {
    "echo": lambda request: {"value": request.get("value")},
    "slow": _slow,
    "refuse": _refuse,
    "boom": _boom,
    "not_a_dict": lambda request: [1, 2],
}


class RouterTestCase(TestCase):
    max_message_size = 4096

    def setUp(self) -> None:
        self.factory = ZmqFactory()
        self.addCleanup(self.factory.shutdown)
        self.router = self.make_router(HANDLERS)
        self.clients: list[SignallingClient] = []
        self.context = zmq.Context()
        self.addCleanup(self.context.term)
        self.addCleanup(lambda: [c.close() for c in self.clients])

    def make_router(self, handlers: dict[str, Any], max_request_age: float = 30.0) -> RouterEndpoint:
        router = RouterEndpoint(
            self.factory, "tcp://127.0.0.1:*", handlers, max_request_age, reactor, max_message_size=self.max_message_size
        )
        router.startService()
        self.addCleanup(router.stopService)
        return router

    def client(self, req_style: bool = False) -> SignallingClient:
        client = SignallingClient(self.router.bound_endpoint, req_style=req_style, context=self.context)
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def failure_for(self, frames: list[bytes], client: SignallingClient | None = None) -> defer.Generator[Any, Any, dict]:
        """The failed reply the router sends back for ``frames``."""
        client = client or self.client()
        client.send_frames(frames)
        reply_frames = yield client.receive()
        reply = json.loads(reply_frames[-1])
        self.assertTrue(sig.is_well_formed_reply(reply), reply)
        self.assertEqual(reply["status"], "failed", reply)
        return reply


class RouterTests(RouterTestCase):
    @defer.inlineCallbacks
    def test_ok_reply(self) -> None:
        """A valid request gets an ok reply echoing its ids, with the handler's fields."""
        client = self.client()
        reply = yield client.request("echo", value="v")
        self.assertEqual((reply["status"], reply["value"], reply["command"]), ("ok", "v", "echo"))
        self.assertTrue(sig.is_well_formed_reply(reply))

    @defer.inlineCallbacks
    def test_req_style_envelope(self) -> None:
        """A client that sends the REQ empty delimiter gets it back before the reply."""
        reply = yield self.client(req_style=True).request("echo", value=1)
        self.assertEqual(reply["value"], 1)

    @defer.inlineCallbacks
    def test_real_req_socket(self) -> None:
        """A real REQ socket works too (lock-step)."""
        socket = self.context.socket(zmq.REQ)
        self.addCleanup(socket.close, 0)
        socket.connect(self.router.bound_endpoint)
        message = SignallingClient(self.router.bound_endpoint, context=self.context)
        self.clients.append(message)
        request = message.make("echo", value="req")
        socket.send(json.dumps(request).encode())
        raw = yield wait_for(lambda: socket.poll(0) and socket.recv(), 10, "REQ reply", poll=0.005)
        self.assertEqual(json.loads(raw)["value"], "req")

    @defer.inlineCallbacks
    def test_many_concurrent_clients(self) -> None:
        """Replies that finish out of order still reach the identity that asked."""
        clients = [self.client(req_style=i % 2 == 0) for i in range(30)]
        messages = []
        for i, client in enumerate(clients):
            message = client.make("slow", value=i, delay=(30 - i) * 0.003)
            client.send(message)
            messages.append(message)
        for i, (client, message) in enumerate(zip(clients, messages)):
            frames = yield client.receive()
            self.assertEqual(client.check(message, frames)["value"], i)

    @defer.inlineCallbacks
    def test_handler_failures(self) -> None:
        """RequestError gives its reason and fields; other errors an internal-error reply, logged."""
        client = self.client()
        refused = yield client.request("refuse")
        self.assertEqual((refused["failure_reason"], refused["bytes_written"]), ("refused on purpose", 0))
        boom = yield client.request("boom")
        self.assertEqual(boom["failure_reason"], "internal error in boom: kaboom")
        not_a_dict = yield client.request("not_a_dict")
        self.assertIn("returned list, not dict", not_a_dict["failure_reason"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    @defer.inlineCallbacks
    def test_bad_requests(self) -> None:
        """Malformed, non-object, incomplete, mistyped and unknown requests each get a clear reason."""
        client = self.client()
        valid = client.make("echo")
        cases = [
            (b"{not json", "malformed JSON"),
            (b"[1,2,3]", "expected a JSON object, got array"),
            (b"\xff", "not UTF-8"),
            (json.dumps({**valid, "unique_id": 7}).encode(), "field 'unique_id' must be a string, got integer"),
            (json.dumps({k: v for k, v in valid.items() if k != "client_id"}).encode(), "missing field 'client_id'"),
            (json.dumps({k: v for k, v in valid.items() if k != "command"}).encode(), "missing field 'command'"),
            (json.dumps({**valid, "datetime": "yesterday"}).encode(), "is not of the form"),
            (json.dumps({**valid, "command": "launch"}).encode(), "unknown command 'launch'; this endpoint knows: boom, echo"),
        ]
        for payload, reason in cases:
            reply = yield self.failure_for([payload], client)
            self.assertIn(reason, reply["failure_reason"])
        reply = yield self.failure_for([json.dumps({**valid, "command": 5}).encode()], client)
        self.assertEqual((reply["unique_id"], reply["client_id"]), (valid["unique_id"], valid["client_id"]))

    @defer.inlineCallbacks
    def test_wrong_frames(self) -> None:
        """Two payload frames, or a delimiter with no payload, get a failed reply on the same envelope."""
        client = self.client()
        reply = yield self.failure_for([b"{}", b"{}"], client)
        self.assertIn("got 2 frames", reply["failure_reason"])
        client.send_frames([b""])
        frames = yield client.receive()
        self.assertEqual(frames[0], b"")
        self.assertIn("got 0 frames", json.loads(frames[1])["failure_reason"])

    @defer.inlineCallbacks
    def test_stale_and_future(self) -> None:
        """Stale and future-dated requests are rejected with the reason (acceptance 6)."""
        client = self.client()
        stale = client.make("echo", sent=time.time() - 31)
        client.send(stale)
        reply = client.check(stale, (yield client.receive()))
        self.assertRegex(reply["failure_reason"], r"^stale request: sent 3\d\.\d{3} s ago, older than max_request_age \(30 s\)$")
        future = client.make("echo", sent=time.time() + 60)
        client.send(future)
        reply = client.check(future, (yield client.receive()))
        self.assertRegex(reply["failure_reason"], r"^request dated in the future: (59|60)\.\d{3} s ahead")
        fresh = yield client.request("echo", sent=time.time() - 25)
        self.assertEqual(fresh["status"], "ok")

    @defer.inlineCallbacks
    def test_oversized(self) -> None:
        """Over max_message_size: a failed reply; over ZMQ_MAXMSGSIZE: dropped; the service stays up."""
        client = self.client()
        reply = yield self.failure_for([b"x" * (self.max_message_size + 1)], client)
        self.assertEqual(reply["failure_reason"], f"message too large: {self.max_message_size + 1} bytes, the limit is {self.max_message_size} bytes")
        self.assertEqual(self.router._connection.socket.getsockopt(zmq.MAXMSGSIZE), 4 * self.max_message_size)
        client.send_frames([b"x" * (5 * self.max_message_size)])
        other = self.client()
        reply = yield other.request("echo", value="still up")
        self.assertEqual(reply["value"], "still up")
        self.assertEqual(client.socket.poll(0), 0)

    def test_socket_options(self) -> None:
        """The ROUTER has finite high-water marks and routes replies mandatorily."""
        socket = self.router._connection.socket
        self.assertEqual((socket.getsockopt(zmq.SNDHWM), socket.getsockopt(zmq.RCVHWM)), (1000, 1000))

    @defer.inlineCallbacks
    def test_logged_once(self) -> None:
        """A burst of bad requests is logged once, not once each."""
        client = self.client()
        with capturedLogs() as events:
            for _ in range(20):
                client.send(b"nonsense")
            for _ in range(20):
                yield client.receive()
        rejected = [e for e in events if e.get("log_format", "").startswith("rejected a request")]
        self.assertEqual(len(rejected), 1)

    @defer.inlineCallbacks
    def test_gone_client(self) -> None:
        """A reply to a client that disconnected is dropped and counted; the service goes on."""
        client = self.client()
        client.send(client.make("slow", value=1, delay=0.2))
        yield wait_for(lambda: self.router.counts["requests"] == 1, 10, "the request to arrive")
        client.close()
        self.clients.remove(client)
        yield wait_for(lambda: self.router.counts["dropped"] == 1, 10, "the reply to be dropped")
        reply = yield self.client().request("echo", value=2)
        self.assertEqual(reply["value"], 2)

    def test_bind_failure(self) -> None:
        """A bad endpoint fails startService with a clear error."""
        router = RouterEndpoint(self.factory, "tcp://256.0.0.1:1", HANDLERS, 30, reactor)
        error = self.assertRaises(ValueError, router.startService)
        self.assertIn("cannot bind the signalling ROUTER to tcp://256.0.0.1:1", str(error))


class ArbitraryInputTests(RouterTestCase):
    """Acceptance 5: arbitrary frames and JSON at the ROUTER."""

    def setUp(self) -> None:
        super().setUp()
        self.manager = SessionManager(lambda channel: defer.fail(RuntimeError("no host")), 0, 2, reactor, "h", zmq_factory=self.factory)
        self.router.handlers.update(session_handlers(self.manager))
        for noisy in ("slow", "boom", "not_a_dict"):  # these log errors on purpose
            self.router.handlers.pop(noisy)

    @defer.inlineCallbacks
    def test_arbitrary_frames(self) -> None:
        """Every example gets exactly one well-formed reply on its own envelope; the service stays up."""
        commands = [*self.router.handlers, "launch"]
        examples = yield threads.deferToThread(fuzz_router, self.router.bound_endpoint, commands, 400)
        self.assertGreater(examples, 100)
        reply = yield self.client().request("echo", value="alive")
        self.assertEqual(reply["value"], "alive")
        self.assertEqual(self.router.counts["requests"], self.router.counts["ok"] + self.router.counts["failed"])


class RateLimitedLogTests(SynchronousTestCase):
    def test_suppressed_counted(self) -> None:
        """Within the interval repeats are suppressed; the next log line counts them."""
        clock = task.Clock()
        limited = RateLimitedLog(Logger(), clock, interval=60)
        with capturedLogs() as events:
            for _ in range(5):
                limited.warn("k", "bad {what}", what="x")
            limited.warn("other", "other")
            clock.advance(61)
            limited.warn("k", "bad {what}", what="y")
        self.assertEqual(len(events), 3)
        self.assertEqual(events[2]["suppressed"], 4)
        self.assertIn("similar since last logged", events[2]["log_format"])
