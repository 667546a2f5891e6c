"""Atomic file writes that honour the umask: the one helper every CLI output and evaluation file goes through."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` next to ``path`` and rename it into place: a reader never sees half a file.

    The temporary file is created with mode 0666 less the umask, as ``open()`` would create ``path``
    itself (not ``mkstemp``: its 0600 would keep outputs meant to be shared from the rest of the team).
    Parent directories are created. Raises OSError; the temporary file never outlives a failure.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
