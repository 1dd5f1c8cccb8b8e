"""The benchmarks' target: the private test sshd (root needed) and a directory of files it serves."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.integration.sshd import SSHD, SSHServer, make_target_dir  # noqa: E402


def start_sshd(server) -> subprocess.Popen:
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", server.config_path], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if b"Server listening" in line:
            return process
    raise RuntimeError("sshd did not start")


@contextlib.contextmanager
def bench_target(prefix: str) -> Iterator[tuple[SSHServer, str]]:
    """A running sshd (MaxSessions 100) and a target directory, both removed afterwards."""
    server = SSHServer(max_sessions=100)
    sshd = start_sshd(server)
    target = make_target_dir(prefix)
    try:
        yield server, target
    finally:
        sshd.terminate()
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(server.dir, ignore_errors=True)
