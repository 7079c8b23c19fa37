"""SHA-256 of files, read in blocks: track identity, artifact and weights verification."""

from __future__ import annotations

import hashlib
import os

_BLOCK = 1 << 20  # large enough to keep hashing I/O-bound


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, in bounded memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
