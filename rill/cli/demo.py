"""``rill demo``: a self-contained Rill on a machine with nothing but Python.

An in-process SSH server on loopback (random port, generated password and host
key) runs real shell commands in a temporary directory, a generator writes
and rotates logs there, and Rill watches them.  Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import tempfile
from typing import Any



def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run Rill against a built-in SSH target with generated logs")
    parser.add_argument("--dir", help="work directory (default: a new temporary one, removed at exit)")
    parser.add_argument("--rate", type=float, default=20.0, help="generated lines per second (default 20)")
    parser.add_argument("--rotate-every", type=float, default=60.0, help="seconds between rotations of app.log")
    parser.set_defaults(func=run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return _free_port()


def demo_config(workdir: str, ssh_port: int, password: str, fingerprint: str) -> str:
    logs = os.path.join(workdir, "logs")
    return f"""\
# Written by `rill demo`: Rill watching three generated logs through a built-in SSH server.
[rill]
data_dir = {os.path.join(workdir, "data")}
publish = tcp://127.0.0.1:{_port_or_free(5556)}
control = tcp://127.0.0.1:{_port_or_free(5557)}
watch_interval = 0.5

[host:demo]
address = 127.0.0.1
port = {ssh_port}
username = demo
password = {password}
host_key = {fingerprint}

[tap:app]
hosts = demo
path = {logs}/app.log
parser = iso8601

[tap:access]
hosts = demo
path = {logs}/access.log
parser = nginx

[tap:syslog]
hosts = demo
path = {logs}/syslog
parser = syslog
"""


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from rill.config import read_config
    from rill.demo.generator import LogGenerator
    from rill.demo.sshserver import demo_factory, host_key
    from rill.hostkeys import sha256_fingerprint
    from rill.service import RillService

    workdir = os.path.abspath(args.dir) if args.dir else tempfile.mkdtemp(prefix="rill-demo-")
    logs = os.path.join(workdir, "logs")
    os.makedirs(logs, exist_ok=True)
    password = secrets.token_urlsafe(12)
    key = host_key()
    listening = reactor.listenTCP(0, demo_factory("demo", password, workdir, key), interface="127.0.0.1")
    config_path = os.path.join(workdir, "config.ini")
    with open(config_path, "w") as f:
        f.write(demo_config(workdir, listening.getHost().port, password, sha256_fingerprint(key.public().blob())))
    os.chmod(config_path, 0o600)
    config = read_config(config_path)
    rill = RillService(config, reactor)
    generator = LogGenerator(logs, reactor, rate=args.rate, rotate_every=args.rotate_every)
    reactor.callWhenRunning(rill.startService)
    reactor.callWhenRunning(generator.start)
    reactor.addSystemEventTrigger("before", "shutdown", generator.stop)
    reactor.addSystemEventTrigger("before", "shutdown", rill.stopService)
    _print_instructions(config_path, logs, config)
    reactor.run()
    if not args.dir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _print_instructions(config_path: str, logs: str, config: Any) -> None:
    print(
        f"""Rill demo running: an SSH target on {config.hosts['demo'].address}:{config.hosts['demo'].port}, logs in {logs}
config: {config_path}

In another terminal (the same virtualenv: . .venv/bin/activate):
  export RILL_CONFIG={config_path}
  rill tail                          every line, live
  rill tail demo {logs}/app.log
  rill search error                  history, newest first
  rill status                        every tap: state, generation, offset, lag
  rill cat demo {logs}/app.log       the mirrored bytes, exactly

Ctrl-C stops the demo.""",
        flush=True,
    )
