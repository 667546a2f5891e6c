"""Calibrated per-class thresholds kept by the job store, by model version: ``calibrate --save`` saves them
(``save_calibration``), jobs pin them at submit (``submit.with_saved_thresholds``), and interactive requests
(``/v1/predict``, the Label Studio ML backend) read them through a short cache (``SavedThresholds``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.config import Settings
from service.queue.store import JobStore
from service.queue.stores import open_redis_store, open_sqlite_store
from service.spec.thresholds import ThresholdsFile

log = logging.getLogger(__name__)


def save_calibration(settings: Settings, file: ThresholdsFile) -> str:
    """Save ``file`` under its ``model_version`` in the store the service runs on (Redis at
    ``PREANNOTATE_QUEUE_URL`` when set, else the SQLite file at ``PREANNOTATE_DB_PATH``), as ``preannotate
    worker``/``serve`` open it; returns where it went, for the command to print.

    Raises:
        ValueError: ``file`` names no model version (it would apply to no run).
        PreannotateError: NOT_READY when Redis cannot be reached.
    """
    version = file.model_version.strip()
    if not version:
        raise ValueError("the thresholds file names no model_version: calibrate it against a model to save it")
    if settings.queue_url is not None:
        redis_store = open_redis_store(settings)
        try:
            redis_store.save_thresholds(version, file)
        finally:
            redis_store.close()
        return f"the job queue ({redis_store.where}), model version {version}"
    sqlite_store = open_sqlite_store(settings)
    try:
        sqlite_store.save_thresholds(version, file)
    finally:
        sqlite_store.close()
    return f"{settings.db_path}, model version {version}"


@dataclass(frozen=True, slots=True)
class _Entry:
    file: ThresholdsFile | None
    read_at_s: float


class SavedThresholds:
    """``JobStore.thresholds_for`` behind a cache of ``ttl_s`` per version: interactive requests do not read the
    store each time, and a new ``calibrate --save`` is seen within ``ttl_s`` (``PREANNOTATE_THRESHOLDS_CACHE_S``).
    A store that cannot be read keeps what was cached (or none): a request never fails for want of them."""

    def __init__(self, store: JobStore, *, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def for_version(self, model_version: str) -> ThresholdsFile | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(model_version)
        if entry is not None and now - entry.read_at_s < self._ttl_s:
            return entry.file
        try:
            file = self._store.thresholds_for(model_version)
        except Exception as exc:  # a store outage (told by readiness): what was cached stands; the next request retries
            log.info("saved thresholds of %s not read (%s: %s)", model_version, type(exc).__name__, exc)
            return None if entry is None else entry.file
        with self._lock:
            self._entries[model_version] = _Entry(file, now)
        return file

    def class_thresholds(self, model_version: str, class_names: tuple[str, ...]) -> dict[str, float] | None:
        """The saved thresholds of ``model_version`` for a model with ``class_names`` (classes it lacks left out);
        None when none are saved."""
        file = self.for_version(model_version)
        if file is None:
            return None
        return {name: t for name, t in file.class_thresholds().items() if name in class_names}
