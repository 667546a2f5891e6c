"""A worker process's view of the Redis store: rides out Redis outages and remembers what it holds.

``WorkerPool`` polls ``lease()`` every 0.2 s and logs every exception, and an exception from ``fail()``
inside its error handler would end a worker thread. While Redis restarts, this wrapper instead:

- backs off leasing with capped exponential delays and full jitter (one shared schedule for all threads),
  logging once when the queue goes away and once when it is back;
- keeps in-flight items running (heartbeat and progress failures mean "unknown", not "lost"; ownership is
  checked again when the result is stored);
- retries ``complete()`` and ``fail()`` until Redis answers or ``give_up_s`` passes (a computed result is
  worth waiting for); if the lease lapsed meanwhile, another worker has the item and the store says so;
- likewise rides out the result objects' store (``PREANNOTATE_RESULTS_URL``) while ``complete()`` writes to it,
  heartbeats keeping the lease; past ``give_up_s`` the item fails as retryable ``results_unavailable``.

It also tracks the items this process holds, so a SIGTERM can hand unfinished ones back at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeVar

from models.prompts import PromptSet
from service.errors import ErrorCode, PreannotateError
from service.queue.redis_store import RedisJobStore
from service.queue.store import ItemResult, ItemState, JobRecord, Lease
from service.retry import RetryPolicy
from service.spec.job import JobSpec, ModelPin
from service.spec.requests import ItemIn
from service.spec.thresholds import ThresholdsFile

log = logging.getLogger(__name__)

T = TypeVar("T")
# What a write waits out: Redis (NOT_READY) or the result objects' store (RESULTS_UNAVAILABLE) away for a while.
_OUTAGES = frozenset({ErrorCode.NOT_READY, ErrorCode.RESULTS_UNAVAILABLE})


class ResilientStore:
    """``JobStore`` for ``WorkerPool`` in a ``preannotate worker`` process.

    Args:
        store: The Redis store.
        stopping: Set on SIGTERM: no more leases, and backoff waits end early.
        base_s: Backoff unit: the wait after ``n`` consecutive failures is uniform in
            ``[0, min(cap_s, base_s x 2^n)]`` (the service's ``RetryPolicy``, full jitter).
        cap_s: Largest backoff ceiling.
        give_up_s: How long ``complete()``/``fail()`` keep retrying while Redis is unreachable.
    """

    def __init__(
        self,
        store: RedisJobStore,
        stopping: threading.Event,
        *,
        base_s: float = 0.25,
        cap_s: float = 5.0,
        give_up_s: float = 60.0,
    ) -> None:
        self.store, self._stopping = store, stopping
        self._backoff = RetryPolicy(base_delay_s=base_s, max_delay_s=cap_s)
        self._give_up_s = give_up_s
        self._aborted = threading.Event()  # the grace period is over: stop retrying writes
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self._held: dict[int, str] = {}
        self._unsent: dict[int, tuple[int, int]] = {}  # progress Redis missed, sent again before the result
        self.consumers: set[str] = set()

    # --- backoff -------------------------------------------------------------------------------------

    def _down(self, exc: PreannotateError) -> float:
        """Record a failure; returns the monotonic time of the next attempt."""
        with self._lock:
            if self._failures == 0:
                log.warning("%s; retrying with backoff", exc.message)
            self._failures += 1
            # The policy's attempt n waits up to base x 2^(n-1): one past the failures keeps base x 2^failures.
            delay_s = self._backoff.backoff_s(self._failures + 1)
            self._retry_at = max(self._retry_at, time.monotonic() + delay_s)
            return self._retry_at

    def _up(self) -> None:
        with self._lock:
            if self._failures:
                log.warning("the job store is reachable again (after %d failed calls)", self._failures)
            self._failures = 0

    def _persist(self, call: Callable[[], T], fallback: T) -> T:
        """``call()`` until Redis (and the result store) answer, ``give_up_s`` passes or the shutdown grace is over.

        Given up on Redis: ``fallback`` (the lease lapses and the item is delivered again). Given up on the result
        store: its error is raised, so the worker fails the item as retryable with that reason; a lapsed lease
        would only say ``lease_expired`` and spend the attempt all the same.
        """
        deadline = time.monotonic() + self._give_up_s
        while True:
            try:
                result = call()
            except PreannotateError as exc:
                if exc.code not in _OUTAGES:
                    raise
                retry_at = self._down(exc)
                if retry_at >= deadline or self._aborted.wait(max(0.0, retry_at - time.monotonic())):
                    if exc.code is ErrorCode.RESULTS_UNAVAILABLE:
                        raise
                    return fallback
                continue
            self._up()
            return result

    # --- what WorkerPool calls -----------------------------------------------------------------------

    def lease(self, worker: str, *, max_items: int, lease_s: float) -> list[Lease]:
        with self._lock:
            wait = self._retry_at - time.monotonic()
        if wait > 0 and self._stopping.wait(wait):
            return []
        if self._stopping.is_set():
            return []
        try:
            leases = self.store.lease(worker, max_items=max_items, lease_s=lease_s)
        except PreannotateError as exc:
            if exc.code is not ErrorCode.NOT_READY:
                raise
            self._down(exc)
            return []
        self._up()
        with self._lock:
            self.consumers.add(worker)
            self._held.update((lease.item_id, worker) for lease in leases)
        return leases

    def heartbeat(self, worker: str, item_ids: Sequence[int], *, lease_s: float) -> list[int]:
        try:
            held = self.store.heartbeat(worker, item_ids, lease_s=lease_s)
        except PreannotateError as exc:
            if exc.code is not ErrorCode.NOT_READY:
                raise
            self._down(exc)
            return list(item_ids)  # unknown: keep working; complete() checks ownership
        self._up()
        with self._lock:
            for item_id in set(item_ids) - set(held):
                self._held.pop(item_id, None)
        return held

    def progress(self, worker: str, item_id: int, *, frames_done: int, frames_planned: int) -> bool:
        try:
            kept = self.store.progress(worker, item_id, frames_done=frames_done, frames_planned=frames_planned)
        except PreannotateError as exc:
            if exc.code is not ErrorCode.NOT_READY:
                raise
            self._down(exc)
            with self._lock:
                self._unsent[item_id] = (frames_done, frames_planned)
            return True
        with self._lock:
            self._unsent.pop(item_id, None)
        return kept

    def complete(self, worker: str, item_id: int, result: Mapping[str, object]) -> bool:
        with self._lock:
            unsent = self._unsent.pop(item_id, None)

        def call() -> bool:
            if unsent is not None:  # the final frame count, lost while Redis was away
                self.store.progress(worker, item_id, frames_done=unsent[0], frames_planned=unsent[1])
            return self.store.complete(worker, item_id, result)

        try:
            return self._persist(call, False)
        finally:
            with self._lock:
                self._held.pop(item_id, None)

    def fail(self, worker: str, item_id: int, *, code: str, message: str, retryable: bool, retry_in_s: float) -> None:
        def call() -> None:
            self.store.fail(worker, item_id, code=code, message=message, retryable=retryable, retry_in_s=retry_in_s)

        try:
            self._persist(call, None)  # given up: the lease lapses and the item is retried
        finally:
            with self._lock:
                self._held.pop(item_id, None)
                self._unsent.pop(item_id, None)

    def release(self, worker: str, item_ids: Sequence[int]) -> list[int]:
        """Hand items back now (``WorkerPool`` stopping them); ``release_held`` no longer sees them. If Redis is
        away the error propagates and they stay tracked, so ``release_held`` tries again."""
        released = self.store.release(worker, item_ids)
        with self._lock:
            for item_id in item_ids:  # released, or held by this worker no more: nothing left to hand back
                self._held.pop(item_id, None)
                self._unsent.pop(item_id, None)
        return released

    # --- shutdown ------------------------------------------------------------------------------------

    def abort(self) -> None:
        """The grace period is over: pending ``complete()``/``fail()`` retries give up."""
        self._aborted.set()

    def release_held(self) -> int:
        """Hand every item this process still holds back to the queue; returns how many were released. The pool
        releases the items it stops (``release``), so this catches the ones whose threads did not stop in time."""
        with self._lock:
            by_worker: dict[str, list[int]] = {}
            for item_id, worker in self._held.items():
                by_worker.setdefault(worker, []).append(item_id)
            self._held.clear()
        released = 0
        for worker, ids in by_worker.items():
            try:
                released += len(self.store.release(worker, ids))
            except PreannotateError as exc:  # the leases lapse on their own instead
                log.warning("could not release %d items: %s", len(ids), exc)
        return released

    # --- the rest of JobStore, for completeness -----------------------------------------------------

    def create_job(
        self, *, tenant: str, idem_key: str, spec: JobSpec, items: Sequence[ItemIn]
    ) -> tuple[JobRecord, bool]:
        return self.store.create_job(tenant=tenant, idem_key=idem_key, spec=spec, items=items)

    def find_job(self, *, tenant: str, idem_key: str) -> JobRecord | None:
        return self.store.find_job(tenant=tenant, idem_key=idem_key)

    def forget_idem_key(self, *, tenant: str, idem_key: str, job_id: str) -> bool:
        return self.store.forget_idem_key(tenant=tenant, idem_key=idem_key, job_id=job_id)

    def get_job(self, *, tenant: str, job_id: str) -> JobRecord | None:
        return self.store.get_job(tenant=tenant, job_id=job_id)

    def cancel_job(self, *, tenant: str, job_id: str) -> JobRecord | None:
        return self.store.cancel_job(tenant=tenant, job_id=job_id)

    def delete_job(self, *, tenant: str, job_id: str) -> bool | None:
        return self.store.delete_job(tenant=tenant, job_id=job_id)

    def expire_jobs(self, *, limit: int = 100) -> int:
        return self.store.expire_jobs(limit=limit)

    def list_jobs(self, *, tenant: str, limit: int, cursor: str | None = None) -> tuple[list[JobRecord], str | None]:
        return self.store.list_jobs(tenant=tenant, limit=limit, cursor=cursor)

    def results(
        self,
        *,
        tenant: str,
        job_id: str,
        states: Collection[ItemState] | None = None,
        after: int = -1,
        limit: int | None = None,
        with_results: bool = True,
    ) -> list[ItemResult] | None:
        return self.store.results(
            tenant=tenant, job_id=job_id, states=states, after=after, limit=limit, with_results=with_results
        )

    def item_spec(self, *, tenant: str, job_id: str, position: int) -> ItemIn | None:
        return self.store.item_spec(tenant=tenant, job_id=job_id, position=position)

    def pin_model(
        self,
        job_id: str,
        *,
        version: str,
        class_names: Sequence[str],
        makes_masks: bool = False,
        class_thresholds: Mapping[str, float] | None = None,
    ) -> ModelPin | None:
        # NOT_READY propagates: the item fails retryably and is run again once Redis is back.
        return self.store.pin_model(
            job_id,
            version=version,
            class_names=class_names,
            makes_masks=makes_masks,
            class_thresholds=class_thresholds,
        )

    def pin_prompts(self, job_id: str, prompts: PromptSet) -> PromptSet | None:
        return self.store.pin_prompts(job_id, prompts)  # NOT_READY propagates, as for pin_model

    def pin_segmenter(self, job_id: str, *, version: str) -> str | None:
        return self.store.pin_segmenter(job_id, version=version)  # NOT_READY propagates, as for pin_model

    def save_thresholds(self, model_version: str, file: ThresholdsFile) -> None:
        self.store.save_thresholds(model_version, file)

    def thresholds_for(self, model_version: str) -> ThresholdsFile | None:
        return self.store.thresholds_for(model_version)

    def saved_thresholds(self) -> dict[str, ThresholdsFile]:
        return self.store.saved_thresholds()

    def depth(self) -> int:
        return self.store.depth()

    def settled_items(self) -> int:
        return self.store.settled_items()

    def claim_delivery(self, key: str, owner: str, *, ttl_s: float) -> str:
        return self.store.claim_delivery(key, owner, ttl_s=ttl_s)

    def close(self) -> None:
        self.store.close()
