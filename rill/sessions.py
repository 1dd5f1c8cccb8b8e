"""Interactive shell sessions on a host, behind the seed's signalling protocol.

A *session* is an SSH ``session`` channel with a pty running the login shell,
brought to its prompt before anyone may use it.  Its output goes out on a PUB
socket of its own; clients write to it with ``send_data_to_session``.

The :class:`SessionManager` (one per host) keeps ``pool_size`` shells warm at
the prompt so that ``create_session`` is answered at once, refills the pool as
sessions are handed out, never hands a shell out twice, and never has more
than ``max_sessions`` channels on the host (handed out, warm, opening or
closing).  A client may hold at most ``max_sessions`` sessions; the next
create fails with the reason.

The shell (see :class:`ShellChannel`):

* runs on a pty (``TERM=dumb``, 1000x50), so it behaves as for a person or
  pexpect: the terminal echoes what is sent, stdout and stderr are merged,
  Ctrl-C (``"\\u0003"``) interrupts, and hanging up ends everything the shell
  started;
* gets ``unset HISTFILE`` (nothing is written on the target), line editing
  off (no escape sequences) and the prompt ``rill-<16 hex digits>$ ``, unique
  per session, which is how readiness is detected and which clients may
  expect on;
* is ended at once on delete: ``signal HUP`` then a channel close (the pty's
  hang-up kills the shell's jobs too; an interactive shell ignores TERM).

PUB messages, two frames each: ``[b"data/<session_id>", raw output bytes]``
and, once, ``[b"closed/<session_id>", json {session_id, datetime, reason}]``
when the session is deleted or its channel dies.  A session whose channel
died stays listed (``state: closed``, with ``closed_reason``) with its PUB
socket bound for ``closed_linger`` seconds or until deleted; it no longer
counts against the cap.

Channels come from an injected ``open_channel(channel) -> Deferred[channel]``
(``HostTap.open_channel``), given ``open_timeout`` seconds; a channel that
opens after that is closed at once.  For HostTap's bookkeeping a ShellChannel
fires ``self._rill_opened`` (if HostTap set one) from ``channelOpen`` and
``openFailed``, calls ``conn.channel_opened()``/``conn.channel_closed()`` when
the connection has them, and ``SessionManager(channel_closed=tap.channel_closed)``
hands every closed channel back to the tap.  With ``is_connected`` (e.g.
``lambda: tap.connected``) the pool is not refilled while the host is down and
a create that would have to open a shell fails at once; wire
``tap.when_connected(manager.host_connected)`` to refill the moment it is back.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq
from twisted.application.service import Service
from twisted.conch.error import ConchError
from twisted.conch.ssh import common
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.session import packRequest_pty_req
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from txzmq import ZmqFactory

from rill.protocols.router import Handler, ReactorConnection
from rill.ratelimit import RateLimitedLog
from rill.protocols.signalling import (
    SESSION_COMMANDS,
    Field,
    RequestError,
    bytes_read_fields,
    bytes_written_fields,
    check_fields,
    format_datetime,
)

OpenChannel = Callable[[SSHChannel], "defer.Deferred[SSHChannel]"]

PTY_TERM = b"dumb"
PTY_GEOMETRY = (50, 1000, 0, 0)  # rows, columns, xpixel, ypixel
TTY_OP_END = b"\x00"
DELETED_IDS_REMEMBERED = 10_000


def describe(failure: Failure) -> str:
    """A failure as one readable line (ConchError keeps its message in ``.value``)."""
    error = failure.value
    if isinstance(error, ConchError):
        message = error.value.decode(errors="replace") if isinstance(error.value, bytes) else str(error.value)
        return message if error.data is None else f"{message} (code {error.data})"
    return failure.getErrorMessage()


def _call_if_present(target: object, name: str) -> None:
    method = getattr(target, name, None)
    if callable(method):
        method()


def _fire(d: defer.Deferred[None] | None, result: Failure | None) -> None:
    """Fire HostTap's ``_rill_opened`` Deferred, if it gave us one."""
    if isinstance(d, defer.Deferred) and not d.called:
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(None)


class ShellChannel(SSHChannel):
    """A pty + login shell channel that fires ``ready`` once the shell shows its prompt.

    After ``ready``, output goes to ``sink`` (dropped while it is None);
    ``on_close(reason)`` is called once when the channel is gone for good.
    """

    name = b"session"

    def __init__(
        self,
        clock: IReactorTime,
        prompt_timeout: float = 20.0,
        channel_closed: Callable[[SSHChannel], None] | None = None,
    ) -> None:
        super().__init__(localWindow=1 << 20)
        self.clock = clock
        self.prompt_timeout = prompt_timeout
        self.channel_closed = channel_closed
        token = secrets.token_hex(8)
        self.prompt = f"rill-{token}$ ".encode()
        # The quotes keep the terminal's echo of this line from matching the prompt.
        self.setup = f"unset HISTFILE; set +o emacs 2>/dev/null; set +o vi 2>/dev/null; PS1='rill-''{token}$ '\n"
        self.ready: defer.Deferred[ShellChannel] = defer.Deferred()
        self.sink: Callable[[bytes], None] | None = None
        self.on_close: Callable[[str], None] | None = None
        self.hung_up = False
        self.close_reason: str | None = None
        self._seen = b""
        self._remote_close = False
        self._exit: str | None = None
        self._timeout: IDelayedCall | None = None
        self.is_open = False  # between channelOpen and closed

    # -- opening -------------------------------------------------------------

    def channelOpen(self, specificData: bytes) -> None:
        self.is_open = True
        _call_if_present(self.conn, "channel_opened")
        if self.hung_up:  # given up while the open was in flight
            self.hang_up()
        else:
            self._start_shell()
        _fire(getattr(self, "_rill_opened", None), None)

    def openFailed(self, reason: Failure) -> None:
        _fire(getattr(self, "_rill_opened", None), reason)

    def _start_shell(self) -> None:
        self._timeout = self.clock.callLater(self.prompt_timeout, self._prompt_timed_out)
        d = self._request(b"pty-req", packRequest_pty_req(PTY_TERM, PTY_GEOMETRY, TTY_OP_END))
        d.addCallback(lambda _: self._request(b"shell", b""))
        d.addCallback(lambda _: self.write(self.setup.encode()))
        d.addErrback(self._not_ready)

    def _request(self, kind: bytes, data: bytes) -> defer.Deferred[object]:
        d = None if self.conn is None else self.conn.sendRequest(self, kind, data, wantReply=True)
        if d is None:
            return defer.fail(RuntimeError(f"channel closed before the {kind.decode()} request"))
        return d.addErrback(lambda f: Failure(RuntimeError(f"{kind.decode()} request refused: {f.getErrorMessage()}")))

    def _prompt_timed_out(self) -> None:
        self._timeout = None
        self._not_ready(Failure(TimeoutError(f"no shell prompt within {self.prompt_timeout:g} s")))

    def _not_ready(self, failure: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(failure)
        self.hang_up()

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    # -- data ----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.ready.called:
            if self.sink is not None and not self.hung_up:
                self.sink(data)
            return
        self._seen = (self._seen + data)[-(len(self.prompt) + 4096) :]
        if self.prompt in self._seen:
            self._seen = b""
            self._cancel_timeout()
            self.ready.callback(self)

    def extReceived(self, dataType: int, data: bytes) -> None:
        self.dataReceived(data)

    def request_exit_status(self, data: bytes) -> int:
        self._exit = f"the shell exited with status {int.from_bytes(data[:4], 'big')}"
        return 1

    def request_exit_signal(self, data: bytes) -> int:
        self._exit = f"the shell was killed by signal {common.getNS(data)[0].decode(errors='replace')}"
        return 1

    # -- closing -------------------------------------------------------------

    def hang_up(self) -> None:
        """End the remote shell now: HUP, drop unsent input, close the channel."""
        self.hung_up = True
        self.close_reason = self.close_reason or "deleted"
        if not self.is_open or self.localClosed or self.conn is None:
            return
        try:
            self.conn.sendRequest(self, b"signal", common.NS(b"HUP"))
            self.buf, self.extBuf = b"", []
            self.loseConnection()
        except Exception:  # noqa: BLE001, S110 -- the transport is gone; closed() follows from the connection
            pass

    def closeReceived(self) -> None:
        self._remote_close = True
        super().closeReceived()

    def closed(self) -> None:
        self.is_open = False
        _call_if_present(self.conn, "channel_closed")
        if self.channel_closed is not None:
            self.channel_closed(self)
        self._cancel_timeout()
        if self.close_reason is None or not self.hung_up:
            self.close_reason = self._exit or ("the shell closed its channel" if self._remote_close else "the SSH connection to the host was lost")
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"channel closed before the prompt: {self.close_reason}"))
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close(self.close_reason)


class PubSocket(ReactorConnection):
    """A PUB socket bound to an ephemeral port; ``endpoint`` is where it really listens."""

    socketType = zmq.PUB

    def __init__(self, factory: ZmqFactory, bind: str) -> None:
        super().__init__(factory)
        try:
            self.socket.bind(bind)
        except zmq.ZMQError:
            self.shutdown()
            raise
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, topic: bytes, data: bytes) -> None:
        if self.socket is not None:
            self.send([topic, data])  # PUB never blocks: past the HWM messages are dropped

    def close(self) -> None:
        if self.socket is not None:
            try:
                self.socket.unbind(self.endpoint)
            except zmq.ZMQError:
                pass
            self.shutdown()


@dataclass(eq=False)
class Session:
    """A shell handed out to a client."""

    session_id: str
    client_id: str
    host: str
    opened: float
    channel: ShellChannel
    publisher: PubSocket
    bytes_written: int = 0
    bytes_read: int = 0
    closed_reason: str | None = None
    reaper: IDelayedCall | None = field(default=None, repr=False)

    def output(self, data: bytes) -> None:
        self.bytes_read += len(data)
        self.publisher.publish(b"data/" + self.session_id.encode(), data)

    def announce_close(self, reason: str, now: float) -> None:
        notice = {"session_id": self.session_id, "datetime": format_datetime(now), "reason": reason}
        self.publisher.publish(b"closed/" + self.session_id.encode(), json.dumps(notice).encode())

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "session_id": self.session_id,
            "client_id": self.client_id,
            "host": self.host,
            "datetime": format_datetime(self.opened),
            "state": "open" if self.closed_reason is None else "closed",
            "publish_zeromq_bind": self.publisher.endpoint,
            **bytes_written_fields(self.bytes_written),
            **bytes_read_fields(self.bytes_read),
        }
        if self.closed_reason is not None:
            info["closed_reason"] = self.closed_reason
        return info


class SessionManager(Service):
    """The sessions of one host: a warm pool, a cap, and the four session commands."""

    log = Logger()

    def __init__(
        self,
        open_channel: OpenChannel,
        pool_size: int = 5,
        max_sessions: int = 20,
        reactor: IReactorTime | None = None,
        host_name: str = "",
        *,
        zmq_factory: ZmqFactory | None = None,
        publish_interface: str = "127.0.0.1",
        prompt_timeout: float = 20.0,
        open_timeout: float = 30.0,
        closed_linger: float = 60.0,
        close_timeout: float = 10.0,
        max_input_buffer: int = 1 << 20,
        retry_max: float = 30.0,
        channel_closed: Callable[[SSHChannel], None] | None = None,
        is_connected: Callable[[], bool] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor  # type: ignore[assignment]
        self.open_channel = open_channel
        self.pool_size = pool_size
        self.max_sessions = max_sessions
        self.clock: IReactorTime = reactor  # type: ignore[assignment]
        self.host_name = host_name
        self._own_zmq = zmq_factory is None
        self.zmq_factory = zmq_factory or ZmqFactory()
        if self._own_zmq:
            self.zmq_factory.reactor = reactor
        self.publish_bind = f"tcp://{publish_interface}:*"
        self.prompt_timeout = prompt_timeout
        self.open_timeout = open_timeout
        self.closed_linger = closed_linger
        self.close_timeout = close_timeout
        self.max_input_buffer = max_input_buffer
        self.retry_max = retry_max
        self.channel_closed = channel_closed
        self.is_connected = is_connected
        self.sessions: dict[str, Session] = {}
        self.ready: deque[ShellChannel] = deque()
        self.opening: set[ShellChannel] = set()
        self.closing: dict[ShellChannel, IDelayedCall] = {}
        self.counts = {"opened": 0, "open_failures": 0, "handed_out": 0, "deleted": 0, "died": 0}
        self._waiters: deque[defer.Deferred[ShellChannel]] = deque()
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._failures = 0
        self._last_error = ""
        self._retry: IDelayedCall | None = None
        self._rate_limited = RateLimitedLog(self.log, self.clock)

    # -- lifecycle -----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._fill()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        while self._waiters:
            self._waiters.popleft().errback(RequestError(f"sessions on host {self.host_name} are shutting down"))
        while self.ready:
            self._hang_up(self.ready.popleft())
        for channel in list(self.opening):
            channel.hang_up()  # its prompt never counts now; _open_failed tracks the close
        for session_id in list(self.sessions):
            self.delete_session(session_id)
        return self._drained()

    def _drained(self) -> defer.Deferred[None]:
        done: defer.Deferred[None] = defer.Deferred()

        def check(deadline: float) -> None:
            if not self.closing or self.clock.seconds() >= deadline:
                for timer in self.closing.values():
                    if timer.active():
                        timer.cancel()
                self.closing.clear()
                if self._own_zmq and self.zmq_factory.connections is not None:
                    self.zmq_factory.shutdown()
                done.callback(None)
            else:
                self.clock.callLater(0.05, check, deadline)

        check(self.clock.seconds() + self.close_timeout)
        return done

    # -- the commands --------------------------------------------------------

    def active(self) -> int:
        """Sessions handed out whose shell is still open."""
        return sum(1 for s in self.sessions.values() if s.closed_reason is None)

    def create_session(self, client_id: str) -> defer.Deferred[dict[str, Any]]:
        """A ready shell for ``client_id``: its ``session_id`` and ``publish_zeromq_bind``."""
        if not self.running:
            return defer.fail(RequestError(f"sessions on host {self.host_name} are not running"))
        if self.active() + len(self._waiters) >= self.max_sessions:
            return defer.fail(
                RequestError(
                    f"session limit reached on host {self.host_name}: {self.max_sessions} sessions open "
                    f"(max_sessions = {self.max_sessions}); delete one first"
                )
            )
        if self.ready:
            return defer.maybeDeferred(self._hand_out, self.ready.popleft(), client_id)
        if not self._connected():
            return defer.fail(RequestError(f"host {self.host_name} is not connected; no shell can be opened now"))
        waiter: defer.Deferred[ShellChannel] = defer.Deferred()
        self._waiters.append(waiter)
        self._fill()
        return waiter.addCallback(self._hand_out, client_id)

    def delete_session(self, session_id: str) -> dict[str, Any]:
        """Close the session's shell at once and its PUB socket; the id is never valid again."""
        session = self._lookup(session_id)
        del self.sessions[session_id]
        self._remember_deleted(session_id)
        self.counts["deleted"] += 1
        if session.reaper is not None and session.reaper.active():
            session.reaper.cancel()
        if session.closed_reason is None:
            session.closed_reason = "deleted"
            session.announce_close("deleted", self.clock.seconds())
            self._hang_up(session.channel)
        session.publisher.close()
        self._fill()
        return {}

    def send_data(self, session_id: str, contents: str) -> dict[str, Any]:
        """Write ``contents`` (UTF-8, nothing appended) into the session's shell."""
        session = self._lookup(session_id, bytes_written_fields(0))
        if session.closed_reason is not None:
            raise RequestError(f"session {session_id} is closed: {session.closed_reason}", **bytes_written_fields(0))
        data = contents.encode("utf-8")
        waiting = len(session.channel.buf)
        if waiting + len(data) > self.max_input_buffer:
            raise RequestError(
                f"wrote 0 of {len(data)} bytes: session {session_id} already has {waiting} bytes waiting for "
                f"the remote shell to read (limit {self.max_input_buffer})",
                **bytes_written_fields(0),
            )
        session.channel.write(data)
        session.bytes_written += len(data)
        return bytes_written_fields(len(data))

    def session_info(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Every listed session's info, or just ``session_id``'s."""
        if session_id is not None:
            return [self._lookup(session_id).info()]
        return [session.info() for session in self.sessions.values()]

    def _lookup(self, session_id: str, fields: Mapping[str, Any] | None = None) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            known = "was deleted" if session_id in self._deleted else "is not known"
            raise RequestError(f"session {session_id!r} {known} on host {self.host_name}", **(fields or {}))
        return session

    def _remember_deleted(self, session_id: str) -> None:
        self._deleted[session_id] = None
        while len(self._deleted) > DELETED_IDS_REMEMBERED:
            self._deleted.popitem(last=False)

    # -- handing out -----------------------------------------------------------

    def _hand_out(self, channel: ShellChannel, client_id: str) -> dict[str, Any]:
        try:
            publisher = PubSocket(self.zmq_factory, self.publish_bind)
        except zmq.ZMQError as e:
            self._hang_up(channel)
            raise RequestError(f"cannot bind a PUB socket on {self.publish_bind}: {e}") from None
        session = Session(uuid.uuid4().hex, client_id, self.host_name, self.clock.seconds(), channel, publisher)
        self.sessions[session.session_id] = session
        channel.sink = session.output
        channel.on_close = lambda reason: self._session_died(session, reason)
        self.counts["handed_out"] += 1
        self._fill()
        return {"session_id": session.session_id, "publish_zeromq_bind": publisher.endpoint}

    def _session_died(self, session: Session, reason: str) -> None:
        if session.closed_reason is not None:
            return
        self.counts["died"] += 1
        session.closed_reason = reason
        session.announce_close(reason, self.clock.seconds())
        self.log.info("session {session_id} on {host} closed: {reason}", session_id=session.session_id, host=self.host_name, reason=reason)
        session.reaper = self.clock.callLater(self.closed_linger, self._reap, session.session_id)
        self._fill()

    def _reap(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            self._remember_deleted(session_id)
            session.publisher.close()

    # -- the pool ----------------------------------------------------------------

    def channels(self) -> int:
        """Channels this manager has on the host: handed out, warm, opening and closing."""
        return self.active() + len(self.ready) + len(self.opening) + len(self.closing)

    def host_connected(self) -> None:
        """The host is (again) reachable: forget the backoff and fill the pool now.

        Wire it to ``HostTap.when_connected``.
        """
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._failures = 0
        self._fill()

    def _connected(self) -> bool:
        return self.is_connected is None or self.is_connected()

    def _fill(self) -> None:
        if not self.running:
            return
        room = self.max_sessions - self.channels()
        for_waiters = max(0, len(self._waiters) - len(self.opening))
        spare_openings = max(0, len(self.opening) - len(self._waiters))
        paused = self._retry is not None or not self._connected()
        for_pool = 0 if paused else max(0, self.pool_size - len(self.ready) - spare_openings)
        for _ in range(min(room, for_waiters + for_pool)):
            self._open_one()

    def _open_one(self) -> None:
        channel = ShellChannel(self.clock, self.prompt_timeout, self.channel_closed)
        self.opening.add(channel)
        d = defer.maybeDeferred(self.open_channel, channel)
        d.addTimeout(self.open_timeout, self.clock, onTimeoutCancel=self._open_timed_out)
        d.addCallback(lambda opened: opened.ready)
        d.addCallbacks(self._opened, self._open_failed, errbackArgs=(channel,))
        d.addErrback(lambda f: self.log.failure("session pool bookkeeping failed", f))

    def _open_timed_out(self, result: object, timeout: float) -> Failure:
        return Failure(TimeoutError(f"no channel on host {self.host_name} within {timeout:g} s"))

    def _opened(self, channel: ShellChannel) -> None:
        self.opening.discard(channel)
        self._failures = 0
        self.counts["opened"] += 1
        if not self.running:
            self._hang_up(channel)
            return
        channel.on_close = lambda reason: self._warm_channel_died(channel, reason)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.called:
                waiter.callback(channel)
                return
        self.ready.append(channel)

    def _open_failed(self, failure: Failure, channel: ShellChannel) -> None:
        self.opening.discard(channel)
        channel.ready.addErrback(lambda _: None)  # after a timeout nobody else waits for it
        self._failures += 1
        self.counts["open_failures"] += 1
        self._last_error = describe(failure)
        self._rate_limited.warn("open", "cannot open a shell on {host}: {error}", host=self.host_name, error=self._last_error)
        if self.running and self._retry is None:
            delay = min(self.retry_max, 0.5 * 2 ** (self._failures - 1))
            self._retry = self.clock.callLater(delay, self._retry_fill)
        reason = f"cannot open a shell on host {self.host_name}: {self._last_error}"
        for _ in range(max(0, len(self._waiters) - len(self.opening))):
            self._waiters.popleft().errback(RequestError(reason))
        self._hang_up(channel)

    def _retry_fill(self) -> None:
        self._retry = None
        self._fill()

    def _warm_channel_died(self, channel: ShellChannel, reason: str) -> None:
        if channel in self.ready:
            self.ready.remove(channel)
            self.log.info("a warm shell on {host} closed: {reason}", host=self.host_name, reason=reason)
        self._fill()

    def _hang_up(self, channel: ShellChannel) -> None:
        """Close ``channel``, counting it against the cap until the server confirms."""
        channel.sink = None
        if not channel.is_open:
            channel.hang_up()
            return
        self.closing[channel] = self.clock.callLater(self.close_timeout, self._closed, channel)
        channel.on_close = lambda reason: self._closed(channel)
        channel.hang_up()

    def _closed(self, channel: ShellChannel) -> None:
        timer = self.closing.pop(channel, None)
        if timer is not None:
            if timer.active():
                timer.cancel()
            self._fill()


# -- handler tables ------------------------------------------------------------


def session_handlers(manager: SessionManager) -> dict[str, Handler]:
    """The four session commands of a per-host ROUTER (``signal =`` in ``[host:NAME]``)."""

    def create_session(request: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        check_fields(request, SESSION_COMMANDS["create_session"])
        return manager.create_session(request["client_id"])

    def delete_session(request: dict[str, Any]) -> dict[str, Any]:
        check_fields(request, SESSION_COMMANDS["delete_session"])
        return manager.delete_session(request["session_id"])

    def send_data_to_session(request: dict[str, Any]) -> dict[str, Any]:
        try:
            check_fields(request, SESSION_COMMANDS["send_data_to_session"])
        except RequestError as e:
            raise RequestError(e.reason, **bytes_written_fields(0)) from None
        return manager.send_data(request["session_id"], request["contents"])

    def get_session_info(request: dict[str, Any]) -> dict[str, Any]:
        check_fields(request, SESSION_COMMANDS["get_session_info"])
        return {"sessions": manager.session_info(request.get("session_id"))}

    return {
        "create_session": create_session,
        "delete_session": delete_session,
        "send_data_to_session": send_data_to_session,
        "get_session_info": get_session_info,
    }


def control_handlers(managers: Mapping[str, SessionManager]) -> dict[str, Handler]:
    """The session commands for the global ``control`` ROUTER, routed by a ``host`` field.

    ``host`` is required by ``create_session``.  The others find the session on
    any host when ``host`` is left out (session ids are globally unique), and
    ``get_session_info`` without ``host`` or ``session_id`` lists every host's
    sessions.  The lead adds ``search`` and ``status`` to this table.
    """
    tables = {name: session_handlers(manager) for name, manager in managers.items()}

    def routed(command: str) -> Handler:
        def handler(request: dict[str, Any]) -> Any:
            check_fields(request, {"host": Field(str, required=command == "create_session")})
            if "host" in request:
                return _table_for(tables, request["host"])[command](request)
            return _unrouted(managers, tables, command, request)

        return handler

    return {command: routed(command) for command in SESSION_COMMANDS}


def _table_for(tables: Mapping[str, dict[str, Handler]], host: str) -> dict[str, Handler]:
    if host not in tables:
        known = ", ".join(sorted(tables)) or "none"
        raise RequestError(f"unknown host {host!r}; hosts with sessions: {known}")
    return tables[host]


def _unrouted(
    managers: Mapping[str, SessionManager], tables: Mapping[str, dict[str, Handler]], command: str, request: dict[str, Any]
) -> Any:
    session_id = request.get("session_id")
    if command == "get_session_info" and session_id is None:
        check_fields(request, SESSION_COMMANDS[command])
        return {"sessions": [info for m in managers.values() for info in m.session_info()]}
    if isinstance(session_id, str):
        for name, manager in managers.items():
            if session_id in manager.sessions:
                return tables[name][command](request)
    check_fields(request, SESSION_COMMANDS[command])
    fields = bytes_written_fields(0) if command == "send_data_to_session" else {}
    raise RequestError(f"session {session_id!r} is not known on any host", **fields)
