"""The API's background chores on the job store: due retries into the queue, expired jobs out of it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.errors import PreannotateError

log = logging.getLogger(__name__)

_EXPIRE_BATCH = 100  # jobs per expire_jobs call; a backlog is worked off in back-to-back calls


class Housekeeper:
    """Daemon threads, one per chore, so a slow one (removing objects from a bucket that times out) never holds up
    the other: ``promote()`` every ``promote_every_s`` (Redis: a delayed retry is neither lag nor pending, so nothing
    else wakes a worker scaled to zero for it), and ``expire(limit=...)`` at start and then every
    ``expire_every_s``, until a call removes fewer than a batch. A store that is down is logged at debug level: the
    API reports it on every request.

    Args:
        expire: ``JobStore.expire_jobs``.
        promote: ``RedisJobStore.promote_due``, or None (the embedded store's workers promote as they lease).
    """

    def __init__(
        self,
        *,
        expire: Callable[..., int],
        expire_every_s: float,
        promote: Callable[[], int] | None = None,
        promote_every_s: float = 1.0,
    ) -> None:
        self._expire = expire
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(self.expire_now, expire_every_s), daemon=True)]
        if promote is not None:
            self._threads.append(threading.Thread(target=self._loop, args=(promote, promote_every_s), daemon=True))
        for thread, name in zip(self._threads, ("expiry", "retry-promoter"), strict=False):
            thread.name = name

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)

    def expire_now(self) -> int:
        """Remove every job past its retention now; returns how many."""
        removed = 0
        while not self._stop.is_set():
            batch = self._expire(limit=_EXPIRE_BATCH)
            removed += batch
            if batch < _EXPIRE_BATCH:
                break
        if removed:
            log.info("removed %d jobs past their retention", removed)
        return removed

    def _loop(self, chore: Callable[[], int], every_s: float) -> None:
        while not self._stop.is_set():  # at once first: a restarted API catches up
            try:
                chore()
            except PreannotateError as exc:
                log.debug("housekeeping (%s) failed: %s", threading.current_thread().name, exc)
            except Exception:  # a bug here must not end the thread: retries would stop reaching the queue
                log.exception("housekeeping (%s) failed", threading.current_thread().name)
            self._stop.wait(every_s)
