"""A telnet manhole on loopback: a Python prompt inside the running Rill.

Built with ``twisted.conch.manhole_tap.makeService``; logins are checked
against ``manhole_passwd``, a ``username:password`` file (one user a line,
plain text, so keep it mode 0600).  Telnet is unencrypted, so the endpoint
must listen on a loopback interface: ``tcp:6023`` becomes
``tcp:6023:interface=127.0.0.1``, and any other interface is refused.

The namespace (see :func:`namespace`)::

    rill     the RillService at the root of the service tree
    taps     the FileTap objects (a live view: it follows reloads)
    hosts    {name: HostTap}
    store    the MirrorStore
    index    the IndexService, when there is one (else None)
    status   rill.status, the same dict as ``rill status --json``
    pprint   pprint.pprint
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pprint import pprint
from typing import Any

from twisted.application.service import IService
from twisted.conch import manhole_tap
from twisted.logger import Logger

log = Logger()

_INTERFACE = re.compile(r"(?:^|(?<=[^\\]):)interface=((?:\\.|[^:\\])*)")


class LiveTaps(Sequence[Any]):
    """The root service's file taps, read afresh on every access."""

    def __init__(self, rill_service: Any) -> None:
        self._rill = rill_service

    def _taps(self) -> list[Any]:
        return list(self._rill.file_taps())

    def __getitem__(self, index: Any) -> Any:
        return self._taps()[index]

    def __len__(self) -> int:
        return len(self._taps())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._taps())

    def __repr__(self) -> str:
        return repr([getattr(tap, "label", tap) for tap in self._taps()])


def _child(rill_service: Any, name: str) -> Any:
    try:
        return rill_service.getServiceNamed(name)
    except (KeyError, AttributeError):
        return getattr(rill_service, name, None)


def namespace(rill_service: Any) -> dict[str, Any]:
    """The names a manhole session starts with."""
    return {
        "rill": rill_service,
        "taps": LiveTaps(rill_service),
        "hosts": rill_service.hosts,
        "store": rill_service.store,
        "index": _child(rill_service, "index"),
        "status": rill_service.status,
        "pprint": pprint,
    }


def loopback_endpoint(description: str) -> str:
    """``description`` bound to loopback: an interface is added if missing, refused if not loopback."""
    kind, _, rest = description.partition(":")
    if kind.isdigit():  # strports' old "6023" shorthand
        kind, rest = "tcp", description
    if kind.lower() == "unix":
        return description
    if kind.lower() not in ("tcp", "tcp6"):
        raise ValueError(f"manhole: expected a tcp: or unix: endpoint, got {description!r}")
    match = _INTERFACE.search(rest)
    if match is None:
        return f"{kind}:{rest}:interface=" + (r"\:\:1" if kind.lower() == "tcp6" else "127.0.0.1")
    host = match.group(1).replace("\\:", ":")
    if host != "localhost" and not _is_loopback(host):
        raise ValueError(f"manhole: telnet sends passwords in clear; listen on loopback, not {host!r}")
    return f"{kind}:{rest}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_passwd_file(path: str) -> None:
    """ValueError unless ``path`` is a readable file; a warning if others may read it."""
    try:
        mode = os.stat(path).st_mode
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ValueError(f"manhole: cannot read the password file {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warn("manhole: {path} is readable by others; chmod 600 it", path=path)


def manhole_service(rill_service: Any, endpoint: str, passwd_file: str) -> IService:
    """The telnet manhole service (named ``manhole``) on ``endpoint``, logins from ``passwd_file``."""
    check_passwd_file(passwd_file)
    options = {
        "telnetPort": loopback_endpoint(endpoint),
        "sshPort": None,
        "passwd": passwd_file,
        "namespace": namespace(rill_service),
    }
    service = manhole_tap.makeService(options)
    service.setName("manhole")
    return service
