"""An in-process Conch SSH server that runs real shell commands, for ``rill demo``.

It listens on loopback only, lets one generated user in by password, and runs
each ``exec`` (and interactive ``shell``) as the current user with ``/bin/sh``
in a chosen working directory -- no root, no system sshd.  It is a demo
target, not a general-purpose server.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.avatar import ConchUser
from twisted.conch.interfaces import ISession
from twisted.conch.ssh import factory, keys, session
from twisted.cred import portal
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.python import components
from zope.interface import implementer


class DemoUser(ConchUser):
    def __init__(self, workdir: str) -> None:
        super().__init__()
        self.workdir = workdir
        self.channelLookup[b"session"] = session.SSHSession


@implementer(ISession)
class DemoSession:
    """Runs the client's commands with /bin/sh; kills them when the channel closes."""

    def __init__(self, user: DemoUser) -> None:
        self.user = user
        self.process: Any = None
        self.pty: tuple[bytes, tuple[int, int, int, int]] | None = None

    def _spawn(self, proto: Any, argv: list[str]) -> None:
        from twisted.internet import reactor

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.user.workdir, "LANG": "C.UTF-8"}
        if self.pty is not None:
            env["TERM"] = self.pty[0].decode() or "xterm"
        self.process = reactor.spawnProcess(
            proto, argv[0], argv, env=env, path=self.user.workdir, usePTY=self.pty is not None
        )

    def getPty(self, term: bytes, windowSize: tuple[int, int, int, int], modes: Any) -> None:
        self.pty = (term, windowSize)

    def execCommand(self, proto: Any, command: bytes) -> None:
        self._spawn(proto, ["/bin/sh", "-c", command.decode("utf-8", "surrogateescape")])

    def openShell(self, proto: Any) -> None:
        self._spawn(proto, ["/bin/sh", "-i"])

    def windowChanged(self, newWindowSize: Any) -> None:
        pass

    def eofReceived(self) -> None:
        if self.process is not None:
            self.process.closeStdin()

    def closed(self) -> None:
        if self.process is not None and self.process.pid is not None:
            try:
                self.process.signalProcess("KILL")
            except Exception:
                pass


components.registerAdapter(DemoSession, DemoUser, ISession)


@implementer(portal.IRealm)
class DemoRealm:
    def __init__(self, workdir: str) -> None:
        self.workdir = workdir

    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces: Any) -> tuple[Any, DemoUser, Any]:
        return interfaces[0], DemoUser(self.workdir), lambda: None


def host_key() -> keys.Key:
    """A fresh ed25519 host key for this run."""
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def demo_factory(username: str, password: str, workdir: str, key: keys.Key) -> factory.SSHFactory:
    checker = InMemoryUsernamePasswordDatabaseDontUse(**{username: password.encode()})
    ssh_factory = factory.SSHFactory()
    ssh_factory.portal = portal.Portal(DemoRealm(workdir), [checker])
    ssh_factory.publicKeys = {key.sshType(): key.public()}
    ssh_factory.privateKeys = {key.sshType(): key}
    return ssh_factory
