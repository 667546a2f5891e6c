"""The API's background chores on the job store: due retries into the queue, expired jobs out of it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from service.errors import PreannotateError

log = logging.getLogger(__name__)

_EXPIRE_BATCH = 100  # jobs per expire_jobs call; a backlog is worked off in back-to-back calls


class Housekeeper:
    """A daemon thread: ``promote`` every ``promote_every_s`` (Redis: a delayed retry is neither lag nor pending, so
    nothing else wakes a worker scaled to zero for it), ``expire(limit)`` every ``expire_every_s`` until a call
    removes fewer than a batch. A store that is down is logged at debug: the API reports it on every request.

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._expire, self._promote = expire, promote
        self._expire_every_s, self._promote_every_s = expire_every_s, promote_every_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def expire_now(self) -> int:
        """Remove every job past its retention now; returns how many."""
        removed = 0
        while not self._stop.is_set():
            batch = self._expire(limit=_EXPIRE_BATCH)
            removed += batch
            if batch < _EXPIRE_BATCH:
                break
        return removed

    def _run(self) -> None:
        tick_s = self._promote_every_s if self._promote is not None else self._expire_every_s
        next_expiry = self._clock()  # once at startup: a restarted API catches up at once
        while not self._stop.is_set():
            try:
                if self._promote is not None:
                    self._promote()
                if self._clock() >= next_expiry:
                    next_expiry = self._clock() + self._expire_every_s
                    removed = self.expire_now()
                    if removed:
                        log.info("removed %d jobs past their retention", removed)
            except PreannotateError as exc:
                log.debug("housekeeping failed: %s", exc)
            except Exception:  # a bug here must not end the thread: retries would stop reaching the queue
                log.exception("housekeeping failed")
            self._stop.wait(tick_s)
