"""Stable model versions: a content hash, so a changed weights file is a new version."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


def files_digest(paths: Iterable[Path], length: int = 12) -> str:
    """Hex sha256 prefix over the files' names and bytes, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:length]
