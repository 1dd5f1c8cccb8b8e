"""A test-only stand-in for the lead's ``HostTap.open_channel``.

:class:`ChannelOpener` owns plain Conch client connections to the private test
sshd (password auth, host key checked against the server's fingerprints) and
opens channels on them with the same contract as ``HostTap.open_channel``: the
Deferred fires with the channel after its ``channelOpen`` ran, or fails.  When
the server refuses a channel (OpenSSH's ``MaxSessions``), the connection is
marked full and the channel is tried on another connection, opened if needed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.error import ConchError
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import SSHClientTransport
from twisted.conch.ssh.userauth import SSHUserAuthClient
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.python.failure import Failure


class _Connection(SSHConnection):
    def __init__(self) -> None:
        super().__init__()
        self.started: defer.Deferred[_Connection] = defer.Deferred()
        self.alive = False
        self.full_at: int | None = None

    def serviceStarted(self) -> None:
        super().serviceStarted()
        self.alive = True
        self.started.callback(self)

    def serviceStopped(self) -> None:
        self.alive = False
        super().serviceStopped()

    def is_full(self) -> bool:
        return self.full_at is not None and len(self.channels) >= self.full_at


class _Auth(SSHUserAuthClient):
    def __init__(self, user: str, password: str, key: Key | None, connection: _Connection) -> None:
        super().__init__(user.encode(), connection)
        self._password = password
        self._key = key

    def getPublicKey(self) -> Key | None:
        key, self._key = self._key, None  # one key, then the password
        self._offered = key
        return None if key is None else key.public()

    def getPrivateKey(self) -> defer.Deferred[Key]:
        return defer.succeed(self._offered)

    def getPassword(self, prompt: bytes | None = None) -> defer.Deferred[bytes]:
        password, self._password = self._password, None  # one try only
        return defer.fail(ConchError("no more passwords")) if password is None else defer.succeed(password.encode())


class _Transport(SSHClientTransport):
    def __init__(self, opener: ChannelOpener) -> None:
        self.opener = opener
        self.connection = _Connection()

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred[bool]:
        blob = Key.fromString(hostKey).blob()
        sha = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        if sha in self.opener.fingerprints:
            return defer.succeed(True)
        return defer.fail(ConchError(f"unknown host key {sha}"))

    def connectionSecure(self) -> None:
        self.requestService(_Auth(self.opener.username, self.opener.password, self.opener.key, self.connection))

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        if not self.connection.started.called:
            why = reason.getErrorMessage() if isinstance(reason, Failure) else str(reason)
            self.connection.started.errback(ConchError(f"SSH connection failed before login completed: {why}"))


class ChannelOpener:
    """Opens channels on Conch connections to one test sshd; ``open_channel`` is the HostTap contract."""

    def __init__(
        self, reactor: object, port: int, username: str, password: str, fingerprints: list[str], key: Key | None = None
    ) -> None:
        self.reactor = reactor
        self.key = key
        self.port = port
        self.username = username
        self.password = password
        self.fingerprints = set(fingerprints)
        self.connections: list[_Connection] = []
        self.transports: list[_Transport] = []
        self.refusals = 0
        self._connecting: defer.Deferred[None] | None = None
        self._connect_waiters: list[defer.Deferred[_Connection]] = []

    def connect(self) -> defer.Deferred[_Connection]:
        """A new connection, logged in and ready for channels."""
        factory = protocol.Factory.forProtocol(lambda: _Transport(self))
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port, timeout=10)
        d = endpoint.connect(factory)

        def connected(transport: _Transport) -> defer.Deferred[_Connection]:
            self.transports.append(transport)
            self.connections.append(transport.connection)
            return transport.connection.started

        return d.addCallback(connected)

    def open_channels(self) -> int:
        """Channels open (or opening) on all live connections."""
        return sum(len(c.channels) for c in self.connections if c.alive)

    @defer.inlineCallbacks
    def open_channel(self, channel: SSHChannel) -> defer.Generator[defer.Deferred[object], object, SSHChannel]:
        """Open ``channel``; fires after its ``channelOpen`` ran."""
        for _ in range(5):
            connection = yield self._usable_connection()
            try:
                yield self._open_on(connection, channel)  # type: ignore[arg-type]
            except ConchError as e:
                if not isinstance(e.data, int):  # not a refusal with a reason code
                    raise
                self.refusals += 1
                connection.full_at = len(connection.channelsToRemoteChannel)  # type: ignore[union-attr]
                continue
            return channel
        raise ConchError("the server refused the channel on every connection tried")

    def _usable_connection(self) -> defer.Deferred[_Connection]:
        for connection in self.connections:
            if connection.alive and not connection.is_full():
                return defer.succeed(connection)
        if self._connecting is None:  # one new connection at a time, shared by every caller
            self._connecting = self.connect()
            self._connecting.addBoth(self._connected)
        waiter: defer.Deferred[_Connection] = defer.Deferred()
        self._connect_waiters.append(waiter)
        return waiter

    def _connected(self, result: _Connection | Failure) -> None:
        self._connecting = None
        waiters, self._connect_waiters = self._connect_waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _open_on(self, connection: _Connection, channel: SSHChannel) -> defer.Deferred[None]:
        opened: defer.Deferred[None] = defer.Deferred()
        channel_open, open_failed = channel.channelOpen, channel.openFailed

        def restore() -> None:
            del channel.channelOpen, channel.openFailed

        def on_open(data: bytes) -> None:
            restore()
            channel_open(data)
            opened.callback(None)

        def on_failed(reason: object) -> None:
            restore()
            open_failed(reason)
            opened.errback(reason)

        channel.channelOpen, channel.openFailed = on_open, on_failed  # type: ignore[method-assign]
        connection.openChannel(channel)
        return opened

    def close(self) -> defer.Deferred[None]:
        """Drop every connection; fires when they are all gone."""
        waits = []
        for transport in self.transports:
            if transport.transport is not None and transport.transport.connected:
                lost: defer.Deferred[None] = defer.Deferred()
                original = transport.connectionLost

                def connection_lost(reason: object, original=original, lost=lost) -> None:
                    original(reason)
                    lost.callback(None)

                transport.connectionLost = connection_lost  # type: ignore[method-assign]
                transport.transport.loseConnection()
                waits.append(lost)
        return defer.gatherResults(waits).addCallback(lambda _: None)


def authorize_test_key(username: str) -> tuple[Key, Callable[[], None]]:
    """A fresh ed25519 key appended to ``username``'s authorized_keys, and a function removing it.

    The test users are shared by every SSHServer on the machine, and each
    SSHServer sets a new random password: test runs in parallel processes
    change each other's passwords.  A key of our own (tried before the
    password) keeps these tests independent of that.
    """
    key = Key(ed25519.Ed25519PrivateKey.generate())
    marker = f"rill-session-tests-{secrets.token_hex(6)}"
    account = pwd.getpwnam(username)
    ssh_dir = os.path.join(account.pw_dir, ".ssh")
    path = os.path.join(ssh_dir, "authorized_keys")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    os.chown(ssh_dir, account.pw_uid, account.pw_gid)
    with open(path, "a") as f:
        f.write(key.public().toString("OPENSSH").decode() + f" {marker}\n")
    os.chown(path, account.pw_uid, account.pw_gid)
    os.chmod(path, 0o600)

    def remove() -> None:
        with open(path) as f:
            lines = [line for line in f if marker not in line]
        with open(path, "w") as f:
            f.writelines(lines)

    return key, remove
