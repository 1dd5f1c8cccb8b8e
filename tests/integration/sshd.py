"""A private OpenSSH sshd on loopback for integration tests.

The server runs as its own process (``sshd -D -e``) with its own host keys,
config and a random free port, and lets two test users in by password:

* ``rilltest``: a GNU/bash login, standing for an ordinary Linux server;
* ``rillbb``: a login whose shell and PATH see only BusyBox applets, standing
  for an appliance or BusyBox box.

Creating the users needs root; ``.ci/run`` runs the suite as root.  Tests that
need the server call :func:`require_sshd` first, which raises SkipTest with
the reason on a machine that cannot run it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest

SSHD = "/usr/sbin/sshd"
BUSYBOX_BIN = "/opt/rill-test/busybox/bin"
GNU_USER = "rilltest"
BUSYBOX_USER = "rillbb"


def require_sshd() -> None:
    """Skip (saying why) unless this machine can run the private sshd."""
    if not os.path.exists(SSHD):
        raise SkipTest("OpenSSH sshd is not installed (.ci/run installs openssh-server)")
    if not shutil.which("busybox"):
        raise SkipTest("busybox is not installed (.ci/run installs it)")
    if os.geteuid() != 0:
        raise SkipTest("the private sshd needs root to create its test users (.ci/run runs as root)")


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _ensure_busybox_bin() -> None:
    os.makedirs(BUSYBOX_BIN, mode=0o755, exist_ok=True)
    busybox = shutil.which("busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = os.path.join(BUSYBOX_BIN, applet)
        if not os.path.lexists(link):
            os.symlink(busybox, link)


def _test_password(user: str) -> str:
    """One random password per test user and machine, kept in a root-only file.

    Stable across SSHServer instances, so tests running side by side (or a
    server restarted in a test) never change a password under a live tap.
    """
    path = os.path.join("/opt/rill-test/secrets", f"{user}.password")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        password = secrets.token_urlsafe(12)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as f:
            f.write(password)
        return password


def _ensure_user(name: str, shell: str, password: str) -> None:
    if subprocess.run(["id", name], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", shell, name], check=True, capture_output=True)
    else:
        subprocess.run(["usermod", "-s", shell, name], check=True, capture_output=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)


@dataclass(frozen=True)
class Login:
    username: str
    password: str
    busybox: bool


class _SSHDProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.listening: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.stderr = b""

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        if not self.listening.called and b"Server listening on" in self.stderr:
            self.listening.callback(None)

    def processEnded(self, reason: object) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"sshd ended before listening:\n{self.stderr.decode(errors='replace')}"))
        self.ended.callback(None)


class SSHServer:
    """One private sshd; start it, stop it, start it again on the same port."""

    def __init__(self, max_sessions: int = 10, max_startups: str = "200:30:400", address: str = "127.0.0.1") -> None:
        require_sshd()
        self.address = address
        self.dir = tempfile.mkdtemp(prefix="rill-sshd-")
        os.chmod(self.dir, 0o755)
        self.port = free_port(address)
        self.gnu = Login(GNU_USER, _test_password(GNU_USER), busybox=False)
        self.busybox = Login(BUSYBOX_USER, _test_password(BUSYBOX_USER), busybox=True)
        _ensure_busybox_bin()
        _ensure_user(GNU_USER, "/bin/bash", self.gnu.password)
        _ensure_user(BUSYBOX_USER, os.path.join(BUSYBOX_BIN, "sh"), self.busybox.password)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for kind in ("ed25519", "rsa"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", os.path.join(self.dir, f"host_{kind}")],
                check=True,
            )
        self.config_path = os.path.join(self.dir, "sshd_config")
        with open(self.config_path, "w") as f:
            f.write(self._config(max_sessions, max_startups))
        subprocess.run([SSHD, "-t", "-f", self.config_path], check=True)
        self._process: _SSHDProcess | None = None

    def _config(self, max_sessions: int, max_startups: str) -> str:
        return "\n".join(
            [
                f"Port {self.port}",
                f"ListenAddress {self.address}",
                f"HostKey {self.dir}/host_ed25519",
                f"HostKey {self.dir}/host_rsa",
                f"PidFile {self.dir}/sshd.pid",
                "PasswordAuthentication yes",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "UsePAM no",
                f"AllowUsers {GNU_USER} {BUSYBOX_USER}",
                f"MaxStartups {max_startups}",
                f"MaxSessions {max_sessions}",
                "LogLevel VERBOSE",
                "ClientAliveInterval 0",
                f"Match User {BUSYBOX_USER}",
                f"  SetEnv PATH={BUSYBOX_BIN}",
                "",
            ]
        )

    def host_key_fingerprints(self) -> list[str]:
        """The ``SHA256:...`` fingerprints of the server's host keys."""
        prints = []
        for kind in ("ed25519", "rsa"):
            with open(os.path.join(self.dir, f"host_{kind}.pub")) as f:
                blob = base64.b64decode(f.read().split()[1])
            prints.append("SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("="))
        return prints

    def known_hosts_lines(self) -> str:
        lines = []
        for kind in ("ed25519", "rsa"):
            with open(os.path.join(self.dir, f"host_{kind}.pub")) as f:
                keytype, blob = f.read().split()[:2]
            lines.append(f"[{self.address}]:{self.port} {keytype} {blob}\n")
        return "".join(lines)

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> defer.Deferred[None]:
        assert self._process is None, "sshd already running"
        self._process = _SSHDProcess()
        reactor.spawnProcess(self._process, SSHD, [SSHD, "-D", "-e", "-f", self.config_path], env=None)
        return self._process.listening

    def stop(self) -> defer.Deferred[None]:
        """Stop the listener and every session it forked (as a host going down does)."""
        process, self._process = self._process, None
        if process is None:
            return defer.succeed(None)
        # The forked per-connection processes descend from the listener: end
        # them too, or clients would keep their connections to a "down" host.
        _kill_descendants(process.transport.pid)
        process.transport.signalProcess("KILL")
        return process.ended

    def kill_sessions(self) -> None:
        """Kill the per-connection sshd processes: every client sees its connection drop."""
        assert self._process is not None, "sshd is not running"
        _kill_descendants(self._process.transport.pid)

    def cleanup(self) -> defer.Deferred[None]:
        d = self.stop()
        d.addBoth(lambda _: shutil.rmtree(self.dir, ignore_errors=True))
        return d


def _kill_descendants(pid: int) -> None:
    """SIGKILL every process below ``pid`` (read from /proc, deepest first)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    for child in reversed(found):
        try:
            os.kill(child, 9)
        except ProcessLookupError:
            pass


def make_target_dir(prefix: str = "rill-logs-") -> str:
    """A directory of log files that both test logins can read."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path
