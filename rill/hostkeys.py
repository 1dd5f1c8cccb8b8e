"""Host key verification: known_hosts, trust on first use, or a pinned fingerprint."""

from __future__ import annotations

import os

from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.error import HostKeyChanged
from twisted.conch.ssh import keys
from twisted.python.filepath import FilePath

from rill.config import HostConfig


class HostKeyRejected(Exception):
    """The server's key does not match what the policy expects (or is unknown)."""


def sha256_fingerprint(key_blob: bytes) -> str:
    """``SHA256:base64`` (no padding), as ``ssh-keygen -lf`` prints it."""
    text = keys.Key.fromString(key_blob).fingerprint(keys.FingerprintFormats.SHA256_BASE64)
    text = text.decode() if isinstance(text, bytes) else text
    return "SHA256:" + text.rstrip("=") if not text.startswith("SHA256:") else text.rstrip("=")


def known_hosts_name(address: str, port: int) -> bytes:
    """The name OpenSSH files a host under: bare for port 22, ``[host]:port`` otherwise."""
    return (address if port == 22 else f"[{address}]:{port}").encode()


class HostKeyVerifier:
    """Checks one host's key against its configured policy."""

    def __init__(self, host: HostConfig, data_dir: str) -> None:
        self.host = host
        self.tofu_file = os.path.join(data_dir, "known_hosts")

    def verify(self, key_blob: bytes) -> None:
        """Return if the key is acceptable, else raise HostKeyRejected with a clear reason."""
        policy = self.host.host_key
        fingerprint = sha256_fingerprint(key_blob)
        if policy.mode == "pinned":
            if fingerprint != policy.fingerprint:
                raise HostKeyRejected(
                    f"host key mismatch: server offered {fingerprint}, config pins {policy.fingerprint}"
                )
            return
        path = policy.known_hosts if policy.mode == "known_hosts" else self.tofu_file
        assert path is not None
        known = KnownHostsFile.fromPath(FilePath(path))
        name = known_hosts_name(self.host.address, self.host.port)
        key = keys.Key.fromString(key_blob)
        try:
            if known.hasHostKey(name, key):
                return
        except HostKeyChanged:
            raise HostKeyRejected(
                f"host key mismatch: server offered {fingerprint}, {path} holds a different key for {name.decode()}"
            ) from None
        if policy.mode == "known_hosts":
            raise HostKeyRejected(f"host key unknown: {name.decode()} ({fingerprint}) is not in {path}")
        known.addHostKey(name, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        known.save()
