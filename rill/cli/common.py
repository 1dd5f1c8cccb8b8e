"""What every subcommand needs: the config, loaded with one clear line per problem."""

from __future__ import annotations

import sys

from rill.config import ConfigError, RillConfig, find_config, read_config


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def load_config(args: object) -> RillConfig:
    """The config the CLI talks to; exits 2 with each problem on its own line."""
    path = find_config(getattr(args, "config", None))
    try:
        return read_config(path)
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None


def connect_endpoint(endpoint: str) -> str:
    """A bind endpoint as a client connects to it (``*`` and 0.0.0.0 become loopback)."""
    return endpoint.replace("tcp://*:", "tcp://127.0.0.1:").replace("tcp://0.0.0.0:", "tcp://127.0.0.1:")
