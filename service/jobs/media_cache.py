"""A job's media on local disk for previews: fetched once per tenant and URL, kept in a bounded LRU.

Paging through a video's frames must not download the video again for each one. Entries are files under one
directory, keyed by a hash of the tenant and the URL (two tenants never share a download, even of one URL);
the least recently used ones are removed once the total passes the bound. A file in use (``local``) is never
removed under its reader: it is pinned, and evicted when released if the cache is still over its bound.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.pipeline.fetch import Fetcher

log = logging.getLogger(__name__)

_STRIPES = 64  # fetch locks: one URL of one tenant is fetched by one thread at a time


@dataclass(slots=True)
class _Entry:
    path: Path
    size_bytes: int
    pins: int = 0


class MediaCache:
    """Fetched media by (tenant, URL), at most ``max_bytes`` on disk apart from files in use; thread-safe.

    ``fetcher`` is the workers' (same URL rules, size limits and tool credentials). ``max_bytes`` 0 keeps
    nothing: each file is removed once its reader is done.
    """

    def __init__(self, fetcher: Fetcher, *, max_bytes: int, work_dir: Path | None = None) -> None:
        self._fetcher = fetcher
        self.max_bytes = max_bytes
        self.root = Path(tempfile.mkdtemp(prefix="preannotate-previews-", dir=work_dir))
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(entry.size_bytes for entry in self._entries.values())

    @contextmanager
    def local(self, tenant: str, url: str) -> Iterator[Path]:
        """The file at ``url`` on local disk (fetched now, or kept from before) for the ``with`` block.

        Raises:
            PreannotateError: the fetcher's (``input_not_found``, ``fetch_failed``, ``url_not_allowed``, ...).
        """
        key = hashlib.sha256(f"{tenant}\0{url}".encode("utf-8", "surrogatepass")).hexdigest()
        with self._stripes[int(key[:8], 16) % _STRIPES]:
            path = self._pin(key)
            if path is None:
                path = self._fetch(key, url)
        try:
            yield path
        finally:
            self._unpin(key)

    def clear(self) -> None:
        """Remove every file not in use."""
        with self._lock:
            for key in [k for k, entry in self._entries.items() if entry.pins == 0]:
                self._remove(key)

    def close(self) -> None:
        self.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _pin(self, key: str) -> Path | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.path.exists():
                return None
            entry.pins += 1
            self._entries.move_to_end(key)
            return entry.path

    def _fetch(self, key: str, url: str) -> Path:
        fetched = self._fetcher.fetch(url, self.root)
        if not fetched.temporary:  # a file:// URL: the user's own file, read in place, never cached or removed
            with self._lock:
                self._entries.pop(key, None)
            return fetched.path
        path = fetched.path.rename(self.root / f"{key}{fetched.path.suffix}")
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = _Entry(path, fetched.size_bytes, pins=1)
            self._evict()
        return path

    def _unpin(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.pins -= 1
                self._evict()

    def _evict(self) -> None:
        """Remove unpinned entries, least recently used first, until the total is within the bound."""
        total = sum(entry.size_bytes for entry in self._entries.values())
        for key in list(self._entries):
            if total <= self.max_bytes:
                return
            entry = self._entries[key]
            if entry.pins == 0:
                total -= entry.size_bytes
                self._remove(key)

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        entry.path.unlink(missing_ok=True)
        log.debug("preview cache: removed %s (%d bytes)", entry.path.name, entry.size_bytes)
