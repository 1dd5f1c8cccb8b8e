"""The exec channel every long-running remote command of Rill's runs on."""

from __future__ import annotations

from twisted.conch.ssh import common
from twisted.conch.ssh.channel import SSHChannel
from twisted.python.failure import Failure

from rill.sshclient import exec_request


class ChannelOpenFailed(Exception):
    """A channel could not be opened: the connection went, the server refused it, or the tap is stopping."""


class ExecChannel(SSHChannel):
    """Runs ``command`` once opened through ``HostTap.open_channel``; :meth:`stop` ends it at once.

    ``HostTap`` sets ``_rill_opened`` (fired when the server accepts the channel)
    and ``_rill_slot`` before opening it.
    """

    name = b"session"

    def __init__(self, command: str, window: int = 2**20) -> None:
        super().__init__(localWindow=window, localMaxPacket=2**15)
        self.command = command
        self.stopped = False

    def channelOpen(self, specificData: bytes) -> None:
        self.conn.channel_opened()
        self._rill_opened.callback(None)
        if self.stopped:  # stopped while waiting for a connection
            self.loseConnection()
            return
        exec_request(self.conn, self, self.command).addErrback(lambda _: self.loseConnection())

    def openFailed(self, reason: Failure) -> None:
        self._rill_opened.errback(reason)

    def stop(self) -> None:
        """End the remote command now: BusyBox ``tail -f`` ignores a closed channel until it writes."""
        if self.stopped:
            return
        self.stopped = True
        if self.conn is None:  # never opened: nothing runs on the server
            return
        try:
            self.conn.sendRequest(self, b"signal", common.NS(b"TERM"))
        except Exception:
            pass
        self.loseConnection()
