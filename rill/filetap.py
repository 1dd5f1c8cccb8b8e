"""One watched file on one host: an exec channel streaming it into the mirror.

Lifecycle (:class:`FileTapState`):

* ``WAITING``   -- no usable connection to the host yet;
* ``OPENING``   -- a stream channel is being opened, its header not yet seen;
* ``STREAMING`` -- bytes flow into the mirror;
* ``MISSING``   -- the file does not exist (yet); looked for again every
  ``watch_interval`` seconds;
* ``STOPPED``   -- the service stopped.

Each stream starts at the mirror's length.  The server first prints what it
opened (device, inode, size, md5 of the bytes before the offset); the pure
:func:`rill.generations.decide` says whether that is still our generation.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from twisted.conch.ssh import common
from twisted.conch.ssh.channel import SSHChannel
from twisted.logger import Logger
from twisted.python.failure import Failure

from rill import remote
from rill.generations import Resume, StartNew, decide, tail_check
from rill.remote import CHECK_SIZE, StreamHeader
from rill.sshclient import exec_request
from rill.store.mirror import MirroredFile

log = Logger()


class FileTapState(enum.Enum):
    WAITING = "waiting for connection"
    OPENING = "opening"
    STREAMING = "streaming"
    MISSING = "file missing"
    STOPPED = "stopped"


class StreamChannel(SSHChannel):
    """An exec channel running :func:`rill.remote.stream_command`."""

    name = b"session"

    def __init__(self, tap: FileTap, command: str) -> None:
        # A 2 MiB window: Conch's 128 KiB default halves throughput (FIELD-NOTES).
        super().__init__(localWindow=2**21, localMaxPacket=2**15)
        self.tap = tap
        self.command = command
        self._header: bytearray | None = bytearray()
        self.discarding = False

    def channelOpen(self, specificData: bytes) -> None:
        self.conn.channel_opened()
        self._rill_opened.callback(None)
        exec_request(self.conn, self, self.command).addErrback(self._exec_failed)

    def openFailed(self, reason: Failure) -> None:
        self._rill_opened.errback(reason)

    def _exec_failed(self, failure: Failure) -> None:
        log.warn("{tap}: the server refused to run the stream command", tap=self.tap.label)
        self.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.discarding:
            return
        if self._header is not None:
            self._header += data
            end = self._header.find(b"\n")
            if end < 0:
                if len(self._header) > 4096:
                    self.tap.header_failed(self, remote.HeaderError("no header line"))
                return
            line, rest = bytes(self._header[:end]), bytes(self._header[end + 1 :])
            self._header = None
            if not self.tap.header_received(self, line) or not rest:
                return
            data = rest
        self.tap.data_received(self, data)

    def extReceived(self, dataType: int, data: bytes) -> None:
        self.tap.stderr_received(data)

    @property
    def header_pending(self) -> bool:
        return self._header is not None

    def stop(self) -> None:
        """End the remote command at once: BusyBox ``tail -f`` ignores a closed channel until it writes."""
        self.discarding = True
        try:
            self.conn.sendRequest(self, b"signal", common.NS(b"TERM"))
        except Exception:
            pass
        self.loseConnection()

    def closed(self) -> None:
        self.conn.channel_closed()
        self.tap.channel_closed(self)


class FileTap:
    """Mirrors one path on one host, generation after generation."""

    def __init__(
        self,
        host_tap: Any,
        mirrored: MirroredFile,
        watch_interval: float,
        on_append: Callable[[MirroredFile, int], None],
    ) -> None:
        self.host_tap = host_tap
        self.mirrored = mirrored
        self.path = mirrored.path
        self.label = f"{host_tap.host.name}:{mirrored.path}"
        self.clock = host_tap.reactor
        self.watch_interval = watch_interval
        self.on_append = on_append
        self.state = FileTapState.WAITING
        self.channel: StreamChannel | None = None
        self.generation = 0
        self.offset = 0
        self.remote_size = 0
        self.stats = {"bytes": 0, "streams": 0, "generations_started": 0}
        self._retry: Any = None
        self._stderr = b""
        self.caught_up_at = self.clock.seconds()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.host_tap.when_connected(self._connected)
        if self.host_tap.connected:
            self._open()

    def stop(self) -> None:
        self._set_state(FileTapState.STOPPED)
        self._cancel_retry()
        if self.channel is not None:
            self.channel.stop()
        self.mirrored.close()

    def _connected(self) -> None:
        if self.state in (FileTapState.WAITING, FileTapState.MISSING) and self.channel is None:
            self._open()

    # ------------------------------------------------------------ streams

    def _open(self) -> None:
        self._cancel_retry()
        if self.state is FileTapState.STOPPED or self.channel is not None:
            return
        current = self.mirrored.current()
        self.generation = current.number if current else 0
        self.offset = self.mirrored.length(current.number) if current else 0
        channel = StreamChannel(self, remote.stream_command(self.path, self.offset))
        self.channel = channel
        self._set_state(FileTapState.OPENING)
        self.host_tap.open_channel(channel).addErrback(self._open_failed, channel)

    def _open_failed(self, failure: Failure, channel: StreamChannel) -> None:
        if self.channel is channel:
            self.channel = None
            self._set_state(FileTapState.WAITING)
            self._retry_later()

    def header_received(self, channel: StreamChannel, line: bytes) -> bool:
        """The stream's first line; return True to keep what follows."""
        try:
            header = remote.parse_header(line)
        except remote.HeaderError as e:
            self.header_failed(channel, e)
            return False
        if header is None:
            self._set_state(FileTapState.MISSING)
            channel.stop()
            return False
        self.remote_size = header.size
        current = self.mirrored.current()
        if current is not None and self.offset == 0 and current.device != header.device:
            # An empty generation: adopt whatever file is at the path now.
            self.mirrored.set_identity(current.number, header.device, header.inode)
            current = self.mirrored.current()
        local = tail_check(self.mirrored.read(self.generation, max(self.offset - CHECK_SIZE, 0))) if current else "-"
        decision = decide(current, self.offset, local, header)
        if isinstance(decision, Resume):
            return self._stream(header, decision)
        return self._start_new(channel, header, decision)

    def _stream(self, header: StreamHeader, decision: Resume) -> bool:
        self.stats["streams"] += 1
        self._set_state(FileTapState.STREAMING)
        if decision.offset or self.stats["streams"] > 1:
            log.info(
                "{tap}: resumed generation {generation} at byte {offset}",
                tap=self.label,
                generation=self.generation,
                offset=decision.offset,
            )
        return True

    def _start_new(self, channel: StreamChannel, header: StreamHeader, decision: StartNew) -> bool:
        current = self.mirrored.current()
        if current is not None:
            self.mirrored.set_state(current.number, "drained" if decision.complete else "gone")
            if not decision.complete:
                gap = self.mirrored.record_gap(current.number, self.offset, None, decision.reason)
                log.warn(
                    "{tap}: generation {generation} ends at byte {offset} ({reason}); bytes after it may be missing",
                    tap=self.label,
                    generation=gap.generation,
                    offset=gap.offset,
                    reason=gap.reason,
                )
        record = self.mirrored.new_generation(header.device, header.inode)
        self.stats["generations_started"] += 1
        log.info("{tap}: generation {generation} starts ({reason})", tap=self.label,
                 generation=record.number, reason=decision.reason)
        self.generation = record.number
        if self.offset == 0:
            self.offset = 0
            return self._stream(header, Resume(0))
        channel.stop()  # it streams from the old offset: reopen from byte 0
        return False

    def header_failed(self, channel: StreamChannel, error: Exception) -> None:
        log.warn("{tap}: {error}; stderr: {stderr!r}", tap=self.label, error=error, stderr=self._stderr[-500:])
        channel.stop()

    def data_received(self, channel: StreamChannel, data: bytes) -> None:
        if channel is not self.channel or self.state is not FileTapState.STREAMING:
            return
        self.offset = self.mirrored.append(self.generation, self.offset, data, time.time())
        self.remote_size = max(self.remote_size, self.offset)
        if self.offset >= self.remote_size:
            self.caught_up_at = self.clock.seconds()
        self.stats["bytes"] += len(data)
        self.on_append(self.mirrored, self.remote_size)

    def stderr_received(self, data: bytes) -> None:
        self._stderr = (self._stderr + data)[-4096:]

    def channel_closed(self, channel: StreamChannel) -> None:
        self.host_tap.channel_closed(channel)
        if channel is not self.channel:
            return
        self.channel = None
        if self.state is FileTapState.STOPPED:
            return
        if self.state is FileTapState.MISSING or channel.header_pending:
            # Missing file, or the command died before its header: don't spin.
            self._set_state(FileTapState.MISSING if self.state is FileTapState.MISSING else FileTapState.WAITING)
            self._retry_later()
        elif self.host_tap.connected:
            self._set_state(FileTapState.WAITING)
            self._open()
        else:
            self._set_state(FileTapState.WAITING)

    # ------------------------------------------------------------ helpers

    def _retry_later(self) -> None:
        self._cancel_retry()
        self._retry = self.clock.callLater(self.watch_interval, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if self.host_tap.connected and self.channel is None:
            self._open()

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _set_state(self, state: FileTapState) -> None:
        if state is not self.state and self.state is not FileTapState.STOPPED:
            log.debug("{tap}: {old} -> {new}", tap=self.label, old=self.state.value, new=state.value)
            self.state = state

    def status(self) -> dict[str, Any]:
        return {
            "host": self.host_tap.host.name,
            "path": self.path,
            "state": self.state.value,
            "generation": self.generation,
            "offset": self.offset,
            "remote_size": self.remote_size,
            "lag_bytes": max(self.remote_size - self.offset, 0),
            "lag_seconds": round(self.clock.seconds() - self.caught_up_at, 3) if self.remote_size > self.offset else 0.0,
            **self.stats,
        }

