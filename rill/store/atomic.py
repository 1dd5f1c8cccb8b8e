"""Crash-safe small-file writes: temp file, fsync, rename, fsync of the directory."""

from __future__ import annotations

import os


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new bytes, never a mix."""
    directory = os.path.dirname(path) or "."
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
