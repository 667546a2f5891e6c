"""A job's media on local disk for previews: fetched once per tenant and URL, kept in a bounded LRU.

Paging through a video's frames must not download the video again for each one. Entries are files under one
directory, keyed by a hash of the tenant and the URL (two tenants never share a download, even of one URL);
the least recently used ones are removed once the total passes the bound. The most recently used file is kept
even when it alone passes the bound (a bound smaller than one video must not mean a download per frame). A
file in use (``local``) is never removed under its reader: it is pinned, and evicted when released if the cache
is still over its bound. A cached file that vanished (a tmp cleaner) is fetched again under a new name; the old
entry lives on until its last reader is done.
"""

from __future__ import annotations

import hashlib
import itertools
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


@dataclass(slots=True, eq=False)  # compared by identity: two downloads of one URL are two entries
class _Entry:
    path: Path
    size_bytes: int
    pins: int = 0
    owned: bool = True  # False: a file:// URL's own file, never counted or removed


class MediaCache:
    """Fetched media by (tenant, URL), at most ``max_bytes`` on disk apart from files in use; thread-safe.

    ``fetcher`` is the workers' (same URL rules, size limits and tool credentials). ``max_bytes`` 0 keeps
    nothing: each file is removed once its reader is done; any other bound may be passed by the most recently
    used file alone (at most the fetcher's ``max_file_bytes``).
    """

    def __init__(self, fetcher: Fetcher, *, max_bytes: int, work_dir: Path | None = None) -> None:
        self._fetcher = fetcher
        self.max_bytes = max_bytes
        self.root = Path(tempfile.mkdtemp(prefix="preannotate-previews-", dir=work_dir))
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._retired: list[_Entry] = []  # replaced while pinned: removed when their last reader is done
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        self._names = itertools.count()

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(entry.size_bytes for entry in self._entries.values())

    @contextmanager
    def local(self, tenant: str, url: str, *, deadline_s: float | None = None) -> Iterator[Path]:
        """The file at ``url`` on local disk (fetched now, or kept from before) for the ``with`` block.

        ``deadline_s`` (``time.monotonic()``) bounds a fetch it starts (and the wait for one of the same URL).

        Raises:
            PreannotateError: the fetcher's (``input_not_found``, ``fetch_failed``, ``url_not_allowed``,
                ``fetch_timeout`` past ``deadline_s``, ...).
        """
        key = hashlib.sha256(f"{tenant}\0{url}".encode("utf-8", "surrogatepass")).hexdigest()
        with self._stripes[int(key[:8], 16) % _STRIPES]:
            entry = self._pin(key)
            if entry is None:
                entry = self._fetch(key, url, deadline_s)
        try:
            yield entry.path
        finally:
            self._unpin(entry)

    def clear(self) -> None:
        """Remove every file not in use."""
        with self._lock:
            for key in [k for k, entry in self._entries.items() if entry.pins == 0]:
                self._remove(self._entries.pop(key))

    def close(self) -> None:
        self.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _pin(self, key: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if not entry.path.exists():  # removed behind our back: fetched again, never reused
                del self._entries[key]
                self._retire(entry)
                return None
            entry.pins += 1
            self._entries.move_to_end(key)
            return entry

    def _fetch(self, key: str, url: str, deadline_s: float | None) -> _Entry:
        fetched = self._fetcher.fetch(url, self.root, deadline_s=deadline_s)
        if not fetched.temporary:  # a file:// URL: the user's own file, read in place, never cached or removed
            return _Entry(fetched.path, 0, pins=1, owned=False)
        # A new name for each download: a reader of an older file of this key keeps its own
        path = fetched.path.rename(self.root / f"{key}-{next(self._names)}{fetched.path.suffix}")
        entry = _Entry(path, fetched.size_bytes, pins=1)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._retire(old)
            self._entries[key] = entry
            self._evict()
        return entry

    def _unpin(self, entry: _Entry) -> None:
        if not entry.owned:
            return
        with self._lock:
            entry.pins -= 1
            if entry in self._retired and entry.pins == 0:
                self._retired.remove(entry)
                self._remove(entry)
            self._evict()

    def _retire(self, entry: _Entry) -> None:
        """An entry no longer found by its key: removed now, or by its last reader."""
        if entry.pins == 0:
            self._remove(entry)
        else:
            self._retired.append(entry)

    def _evict(self) -> None:
        """Remove unpinned entries, least recently used first, until the total is within the bound; the most
        recently used one stays unless the bound is 0 (keep nothing)."""
        total = sum(entry.size_bytes for entry in self._entries.values())
        keep_last = self.max_bytes > 0
        for key in list(self._entries)[:-1] if keep_last else list(self._entries):
            if total <= self.max_bytes:
                return
            entry = self._entries[key]
            if entry.pins == 0:
                total -= entry.size_bytes
                self._remove(self._entries.pop(key))

    def _remove(self, entry: _Entry) -> None:
        entry.path.unlink(missing_ok=True)
        log.debug("preview cache: removed %s (%d bytes)", entry.path.name, entry.size_bytes)
