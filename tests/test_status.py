"""``rill status``: the tables at 80 columns, the CLI over the control ROUTER, and a real terminal."""

from __future__ import annotations

import copy
import fcntl
import io
import json
import os
import pty
import re
import struct
import sys
import termios
import threading
from typing import Any

import zmq
from twisted.internet import defer, protocol, reactor, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase
from txzmq import ZmqFactory

from rill.cli import status as status_cli
from rill.cli.main import main
from rill.protocols.router import RouterEndpoint
from rill.status import REPORT_KEY, WIDE, render_text, report_from_reply, short_count, status_handler
from tests.helpers import wait_for, with_timeout
from tests.test_metrics import sample_status

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def busy_status() -> dict[str, Any]:
    """Six taps on hosts with long names and long paths, in every kind of state."""
    status = sample_status()
    states = ["streaming", "waiting for connection", "auth failed", "host key mismatch", "paused by ping",
              "file missing"]
    template = status["taps"][0]
    status["taps"] = []
    for i, state in enumerate(states):
        row = copy.deepcopy(template)
        row.update(host=f"web{i:02d}.eu-west.example.net", state=state, offset=10**i * 123, lines=7 * 10**i,
                   path=f"/var/log/application-{i}/a-rather-long-file-name-{i}.log")
        status["taps"].append(row)
        status["hosts"][row["host"]] = dict(status["hosts"]["db1"], state=state,
                                            last_error=None if i == 0 else f"{state}: ops@{row['host']} said no")
    return status


def tap_lines(text: str, row: dict[str, Any]) -> list[str]:
    """The lines of the tap table that belong to ``row``'s host block."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == row["host"])
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


class RenderTests(SynchronousTestCase):
    def test_fits_80_columns(self) -> None:
        """At 80 columns no line is longer than 80."""
        text = render_text(busy_status(), 80)
        self.assertLessEqual(max(len(line) for line in text.splitlines()), 80, text)

    def test_host_and_state_visible(self) -> None:
        """Every tap's host is shown whole, and its state whole on its path's line."""
        status = busy_status()
        text = render_text(status, 80)
        for row in status["taps"]:
            block = tap_lines(text, row)
            self.assertTrue(any(row["state"] in line for line in block[1:]), (row["state"], block))

    def test_path_folds_not_truncated(self) -> None:
        """A long path is folded over lines, never cut short with an ellipsis."""
        status = busy_status()
        text = render_text(status, 80)
        self.assertNotIn("…", text)
        for row in status["taps"]:
            block = tap_lines(text, row)
            shown = "".join(line[2:].split("  ")[0].strip() for line in block[1:])
            self.assertEqual(shown, row["path"])

    def test_ping_and_errors(self) -> None:
        """The host table shows ping state and rtt; each host's last error is shown in full."""
        status = busy_status()
        text = render_text(status, 80)
        self.assertIn("responsive", text)
        self.assertIn("0.5 ms", text)
        joined = " ".join(text.split())
        for host in status["hosts"].values():
            if host["last_error"]:
                self.assertIn(host["last_error"], joined)

    def test_wide_has_every_column(self) -> None:
        """At a wide terminal every field has its own column, last error included."""
        text = render_text(sample_status(), WIDE)
        for header in ("Host", "Path", "Tap", "State", "Gen", "Offset", "Remote", "Lag", "Lines", "Bytes", "Gaps",
                       "Re", "Last error"):
            self.assertIn(header, text)
        self.assertLessEqual(max(len(line) for line in text.splitlines()), WIDE)

    def test_no_taps(self) -> None:
        """A status without taps says so instead of showing an empty table."""
        self.assertIn("no taps", render_text({"datetime": "x", "taps": [], "hosts": {}}, 80))

    def test_without_optional_parts(self) -> None:
        """A status without ping or index renders, without their columns."""
        status = sample_status()
        del status["ping"], status["index"]
        text = render_text(status, 80)
        self.assertNotIn("RTT", text)
        self.assertNotIn("index:", text)

    def test_short_count(self) -> None:
        """Counts stay exact below 100,000 and shrink to k, M, G above."""
        self.assertEqual([short_count(n) for n in (0, 99_999, 123_456, 4_500_000, 12_000_000_000)],
                         ["0", "99,999", "123k", "4.5M", "12G"])


class HandlerTests(SynchronousTestCase):
    def test_handler(self) -> None:
        """The status handler puts the service's status under the report key."""

        class Rill:
            def status(self) -> dict[str, Any]:
                return {"taps": []}

        self.assertEqual(status_handler(Rill())({"command": "status"}), {REPORT_KEY: {"taps": []}})

    def test_report_from_reply(self) -> None:
        """The report is found under 'report', under a dict 'status', or inline."""
        self.assertEqual(report_from_reply({"status": "ok", "report": {"taps": [1]}}), {"taps": [1]})
        self.assertEqual(report_from_reply({"status": {"taps": [2]}}), {"taps": [2]})
        self.assertEqual(report_from_reply({"status": "ok", "taps": [3], "unique_id": "x"}), {"taps": [3]})


class StatusRill:
    """A service whose status() is a fixed dict."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.current = status

    def status(self) -> dict[str, Any]:
        return copy.deepcopy(self.current)


class ControlTestCase(TestCase):
    """A real control ROUTER (the production RouterEndpoint) answering status requests."""

    def start_router(self, handlers: dict[str, Any]) -> str:
        factory = ZmqFactory()
        self.addCleanup(factory.shutdown)
        router = RouterEndpoint(factory, "tcp://127.0.0.1:*", handlers, 30.0, reactor)
        router.startService()
        self.addCleanup(router.stopService)
        return router.bound_endpoint

    def write_config(self, control: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"[rill]\ndata_dir = {self.mktemp()}\ncontrol = {control}\npublish = inproc://rill-status-test\n")
        return path

    def run_cli(self, *argv: str) -> defer.Deferred[tuple[int, str, str]]:
        """``rill ARGV`` in a worker thread (it blocks on ZeroMQ), with stdout and stderr captured."""
        out, err = io.StringIO(), io.StringIO()

        def run() -> tuple[int, str, str]:
            code = main(list(argv))
            return code, out.getvalue(), err.getvalue()

        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        return with_timeout(threads.deferToThread(run), 30, f"rill {' '.join(argv)}")


class StatusCommandTests(ControlTestCase):
    @defer.inlineCallbacks
    def test_json(self) -> None:
        """`rill status --json` prints the running instance's status dict."""
        rill = StatusRill(busy_status())
        config = self.write_config(self.start_router({"status": status_handler(rill)}))
        code, out, err = yield self.run_cli("-c", config, "status", "--json")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(json.loads(out), rill.current)

    @defer.inlineCallbacks
    def test_table(self) -> None:
        """`rill status` prints the table, every tap's state in it."""
        rill = StatusRill(busy_status())
        config = self.write_config(self.start_router({"status": status_handler(rill)}))
        code, out, err = yield self.run_cli("-c", config, "status")
        self.assertEqual(code, 0, err)
        for row in rill.current["taps"]:
            self.assertIn(row["state"], out)

    @defer.inlineCallbacks
    def test_no_answer(self) -> None:
        """Nobody listening: one clear line naming the endpoint, exit status 1."""
        with socket_port() as port:
            config = self.write_config(f"tcp://*:{port}")
        code, out, err = yield self.run_cli("-c", config, "status", "--timeout", "0.3")
        self.assertEqual(code, 1)
        self.assertEqual(err, f"rill status: no answer from tcp://127.0.0.1:{port} (is rill running?)\n")
        self.assertEqual(out, "")

    @defer.inlineCallbacks
    def test_failed_reply(self) -> None:
        """A ROUTER without a status command: its failure reason, exit status 1."""
        config = self.write_config(self.start_router({"echo": lambda request: {}}))
        code, out, err = yield self.run_cli("-c", config, "status", "--timeout", "10")
        self.assertEqual(code, 1)
        self.assertIn("refused the request: unknown command 'status'", err)

    def test_request_envelope(self) -> None:
        """The request carries command, unique_id, client_id and a UTC datetime with 3 ms digits and Z."""
        request = status_cli.status_request(1764126000.5)
        self.assertEqual(request["command"], "status")
        self.assertEqual(request["datetime"], "2025-11-26T03:00:00.500Z")
        self.assertTrue(request["unique_id"] and request["client_id"])

    @defer.inlineCallbacks
    def test_raw_router_with_delimiter(self) -> None:
        """A bare pyzmq ROUTER sees [identity, b'', json] and its [identity, b'', reply] reaches the CLI."""
        context = zmq.Context()
        self.addCleanup(context.term)
        router = context.socket(zmq.ROUTER)
        self.addCleanup(router.close, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        seen: list[list[bytes]] = []

        def answer() -> None:
            if router.poll(10_000):
                frames = router.recv_multipart()
                seen.append(frames)
                request = json.loads(frames[-1])
                reply = {"unique_id": request["unique_id"], "client_id": request["client_id"], "status": "ok",
                         "datetime": request["datetime"], REPORT_KEY: {"taps": [], "hosts": {}}}
                router.send_multipart([frames[0], b"", json.dumps(reply).encode()])

        thread = threading.Thread(target=answer)
        thread.start()
        report = yield threads.deferToThread(status_cli.ask_status, f"tcp://127.0.0.1:{port}", 10.0)
        yield wait_for(lambda: not thread.is_alive(), 10, "the ROUTER thread")
        self.assertEqual(report, {"taps": [], "hosts": {}})
        self.assertEqual(len(seen[0]), 3)
        self.assertEqual(seen[0][1], b"")


class socket_port:
    """A TCP port number nobody listens on (bound, then released)."""

    def __enter__(self) -> int:
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        return self.socket.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.socket.close()


class PTYOutput(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


class TerminalTests(ControlTestCase):
    @defer.inlineCallbacks
    def run_in_pty(self, argv: list[str], columns: int = 80) -> defer.Generator[Any, Any, tuple[int, str, bytes]]:
        """Run ``argv`` on a real pseudo-terminal ``columns`` wide: exit code, text shown, raw bytes."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
        env.update(TERM="xterm-256color", PYTHONPATH=os.getcwd() + os.pathsep + env.get("PYTHONPATH", ""))
        proto = PTYOutput()
        reactor.spawnProcess(proto, sys.executable, [sys.executable, *argv], env=env,
                             usePTY=(master, slave, os.ttyname(slave)))
        code = yield with_timeout(proto.ended, 60, f"{argv} to finish")
        text = ANSI.sub("", proto.output.decode("utf-8", "replace")).replace("\r", "")
        return code, text, bytes(proto.output)

    @defer.inlineCallbacks
    def test_watch_json(self) -> None:
        """`rill status --watch 0.1 --json` prints a fresh JSON report per refresh until interrupted."""
        rill = StatusRill(busy_status())
        config = self.write_config(self.start_router({"status": status_handler(rill)}))
        proto = PTYOutput()
        argv = [sys.executable, "-m", "rill.cli.main", "-c", config, "status", "--watch", "0.1", "--json"]
        reactor.spawnProcess(proto, argv[0], argv, env=dict(os.environ), childFDs={0: "w", 1: "r", 2: "r"})
        yield wait_for(lambda: proto.output.count(b"\n") >= 3, 30, "three reports")
        rill.current["taps"][0]["offset"] = 424242
        yield wait_for(lambda: b"424242" in proto.output, 30, "a report with the new offset")
        proto.transport.signalProcess("INT")
        code = yield with_timeout(proto.ended, 30, "rill status --watch to stop")
        self.assertEqual(code, 130)
        reports = [json.loads(line) for line in proto.output.decode().splitlines() if line.startswith("{")]
        self.assertEqual(reports[0]["taps"][0]["host"], rill.current["taps"][0]["host"])

    @defer.inlineCallbacks
    def test_rill_status_on_a_terminal(self) -> None:
        """`rill status` on an 80-column terminal: colour on, no line wider than 80, hosts and states whole."""
        rill = StatusRill(busy_status())
        endpoint = self.start_router({"status": status_handler(rill)})
        config = self.write_config(endpoint)
        code, text, raw = yield self.run_in_pty(["-m", "rill.cli.main", "-c", config, "status"])
        self.assertEqual(code, 0, text)
        self.assertIn(b"\x1b[", raw)  # rich saw a terminal
        self.assertLessEqual(max(len(line) for line in text.splitlines()), 80, text)
        for row in rill.current["taps"]:
            block = tap_lines(text, row)
            self.assertTrue(any(row["state"] in line for line in block[1:]), (row["state"], text))
