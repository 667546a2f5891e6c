"""In-process workers: lease items from the job store, run them, heartbeat, store results or failures.

Each worker thread holds its own lease owner id. A heartbeat thread extends the leases of items in
flight; an item whose lease is gone (cancelled, or taken over after a stall) is told to stop at its
next frame. Stopping the pool stops leasing, then gives in-flight items until the grace period to
finish; what does not finish is stopped and handed back to the queue (``release``, the attempt uncounted),
so another process picks it up at once. An item whose thread does not stop in time keeps its lease until it
expires (or until ``ResilientStore.release_held`` in a ``preannotate worker`` process).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from service.backends.base import PushJson
from service.backends.registry import Backends
from service.errors import ErrorCode, PreannotateError
from service.jobs.deliver import deliver
from service.jobs.runner import ItemStoppedError, run_item
from service.jobs.submit import saved_for
from service.loaded_models import LoadedModel, ModelRegistry
from service.metrics import ITEMS_FINISHED
from service.pipeline.fetch import Fetcher
from service.pipeline.options import DecoderChoice, MediaLimits
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import TrackerOptions
from service.queue.store import JobStore, Lease
from service.retry import RetryPolicy
from service.spec.job import ModelPin

log = logging.getLogger(__name__)

_IDLE_POLL_S = 0.2
_PROGRESS_EVERY_S = 1.0
# A failed item's requeue delay; the store counts the attempts (PREANNOTATE_MAX_ATTEMPTS).
_ITEM_RETRY = RetryPolicy(base_delay_s=2.0, max_delay_s=300.0)


def retry_delay_s(attempt: int) -> float:
    """Capped exponential backoff with full jitter (attempt 1 -> up to 2 s, 2 -> 4 s, ...)."""
    return _ITEM_RETRY.backoff_s(attempt)


@dataclass(slots=True)
class _InFlight:
    worker: str
    stop: threading.Event = field(default_factory=threading.Event)
    draining: bool = False  # stopped by the pool's shutdown, not by a cancel or a lost lease: hand it back
    last_progress_s: float = 0.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int
    lease_s: float
    heartbeat_s: float
    limits: MediaLimits
    work_dir: Path | None
    decoder: DecoderChoice = DecoderChoice.PYAV
    default_tracker: TrackerOptions | None = field(default_factory=TrackerOptions)
    """The settings' tracker (``Settings.tracker_options``), for a job stored before trackers were pinned."""
    decode_workers: int = 2  # PREANNOTATE_DECODE_WORKERS: an item's slots decoded at once
    prefetch_frames: int = 16  # PREANNOTATE_PREFETCH_FRAMES


class WorkerPool:
    def __init__(
        self,
        store: JobStore,
        models: ModelRegistry,
        fetcher: Fetcher,
        config: WorkerConfig,
        backends: Backends | None = None,
    ) -> None:
        self._store, self._models, self._fetcher, self._config = store, models, fetcher, config
        self._backends = backends
        self._stopping = threading.Event()
        self._stop_heartbeat = threading.Event()
        self._in_flight: dict[int, _InFlight] = {}
        self._lock = threading.Lock()
        # Unique per pool, even across containers that all run as pid 1.
        prefix = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._threads = [
            threading.Thread(target=self._work, args=(f"{prefix}-{i}",), name=f"worker-{i}", daemon=True)
            for i in range(config.concurrency)
        ]
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        if self._threads:
            self._heartbeat.start()

    def stop(self, grace_s: float) -> None:
        """Stop leasing; wait up to ``grace_s`` for items in flight, then ask them to stop."""
        self._stopping.set()
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            for flight in self._in_flight.values():
                flight.draining = True  # before stop: the item thread reads it once it sees stop
                flight.stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._stop_heartbeat.set()

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def _work(self, worker: str) -> None:
        while not self._stopping.is_set():
            try:
                leases = self._store.lease(worker, max_items=1, lease_s=self._config.lease_s)
            except Exception:  # a store hiccup must not kill the worker
                log.exception("leasing failed")
                leases = []
            if not leases:
                self._stopping.wait(_IDLE_POLL_S)
                continue
            for lease in leases:
                try:
                    self._process(worker, lease)
                except Exception:  # e.g. the store failing while recording a failure: keep the thread alive
                    log.exception("item %s could not be processed or recorded", lease.item_id)

    def _process(self, worker: str, lease: Lease) -> None:
        flight = _InFlight(worker=worker)
        with self._lock:
            self._in_flight[lease.item_id] = flight
        name = lease.item.name
        model: LoadedModel | None = None
        try:
            lease = self._with_project_prompts(lease)
            # a prompted job: the view, held for the whole item (a view in use is never evicted)
            model = self._models.acquire(lease.spec.model, lease.spec.prompts)
            lease = self._segmenter_pinned(self._pinned(lease, model))
            segmenter = self._models.segmenter_for_run(lease.spec)
            run = run_item(
                lease,
                model=model,
                fetcher=self._fetcher,
                limits=self._config.limits,
                work_dir=self._config.work_dir,
                decoder=self._config.decoder,
                decode_workers=self._config.decode_workers,
                queue_frames=self._config.prefetch_frames,
                on_progress=lambda done, planned: self._progress(lease, flight, done, planned),
                tracker=lease.spec.tracker_or(self._config.default_tracker),
                segmenter=segmenter,
            )
            result = run.to_json(pushes=self._push(lease, flight, run.predictions))
            if self._store.complete(worker, lease.item_id, result):
                ITEMS_FINISHED.labels(outcome="succeeded").inc()
            else:
                log.info("item %s finished after its lease was lost; result dropped", lease.item_id)
        except ItemStoppedError:
            if flight.draining:
                self._release(worker, lease)
            else:  # cancelled or taken over: the item is not ours to hand back
                log.info("item %s stopped (cancelled or lease lost)", lease.item_id)
        except PreannotateError as exc:
            self._fail(worker, lease, exc)
        except Exception as exc:
            log.exception("item %s (%s) failed unexpectedly", lease.item_id, name)
            self._fail(worker, lease, PreannotateError(ErrorCode.INTERNAL, f"{type(exc).__name__} while processing"))
        finally:
            if model is not None:
                self._models.release(model)
            with self._lock:
                self._in_flight.pop(lease.item_id, None)

    def _with_project_prompts(self, lease: Lease) -> Lease:
        """The lease with the prompts of its destination project pinned, for an open-vocabulary model's job
        submitted before any worker had published the model (distributed cold start: the API could not tell it
        takes prompts, so it stored none; ``project_prompts_for``). The first worker reads the project as the API
        would have, and the first pin stands (``JobStore.pin_prompts``): every item runs on the same view.

        Raises:
            PreannotateError: ``project_prompts``' (the backend's errors, ``INVALID_PROMPTS``);
                ``BACKEND_NOT_CONFIGURED`` for a worker without backends.
        """
        spec = lease.spec
        if spec.prompts is not None or spec.pin is not None or not spec.destinations:
            return lease
        base = self._models.get(spec.model).info
        if not base.open_vocabulary:
            return lease
        if self._backends is None:
            raise PreannotateError(ErrorCode.BACKEND_NOT_CONFIGURED, "this worker has no backends configured")
        from service.backends.project_prompts import project_prompts  # vendor clients load on use, as in submit

        masks = spec.segmenter is not None or base.makes_masks
        read = project_prompts(spec.destinations, self._backends.settings, masks=masks)
        if read is None:  # no destination: ruled out above
            return lease
        prompts = self._store.pin_prompts(lease.job_id, read) or read
        return replace(lease, spec=spec.model_copy(update={"prompts": prompts}))

    def _pinned(self, lease: Lease, model: LoadedModel) -> Lease:
        """The lease with the job's pin: a job submitted before any worker had published its model (distributed
        cold start) carries no version, and the first worker to run it pins the one it runs, so results and
        pushes name it.

        Raises:
            PreannotateError: NOT_READY (retryable) when the job is pinned to classes this worker's model does
                not have (another worker won the pin, or a rolling update): results stored under the job's
                class names would be mislabelled, so a worker of the pinned model is left to run it.
        """
        mine = ModelPin(model.info.version, tuple(model.info.class_names), model.info.makes_masks)
        pin = lease.spec.pin
        if pin is None:
            saved = self._store.thresholds_for(mine.version)
            pin = (
                self._store.pin_model(
                    lease.job_id,
                    version=mine.version,
                    class_names=mine.class_names,
                    makes_masks=mine.makes_masks,
                    class_thresholds=None if saved is None else saved_for(saved, mine.class_names),
                )
                or mine
            )
            spec = lease.spec.pinned(pin.version, pin.class_names, makes_masks=pin.makes_masks)
            if spec.class_thresholds is None and pin.version != mine.version:  # another worker's version won
                saved = self._store.thresholds_for(pin.version)
            if spec.class_thresholds is None and saved is not None:  # as pin_model stored them
                spec = spec.model_copy(update={"class_thresholds": saved_for(saved, pin.class_names)})
            lease = replace(lease, spec=spec)
        if pin.class_names and pin.class_names != mine.class_names:
            raise PreannotateError(
                ErrorCode.NOT_READY,
                f"the job is pinned to model version {pin.version!r} with classes {list(pin.class_names)}; "
                f"this worker runs {mine.version!r} with classes {list(mine.class_names)}: "
                "left to a worker of the pinned model",
            )
        return lease

    def _segmenter_pinned(self, lease: Lease) -> Lease:
        """The lease with the job's segmenter version pinned: a job submitted where the segmenter was not loaded
        (distributed API pods) names none, and the first worker running that segmenter pins its own, so every
        later worker must match it (``ModelRegistry.segmenter_for_run``). A worker running another segmenter,
        or none, pins nothing: ``segmenter_for_run`` leaves the item to one that runs it."""
        spec = lease.spec
        if spec.segmenter is None or spec.segmenter_version is not None:
            return lease
        loaded = self._models.segmenter
        if loaded is None or loaded.info.spec != spec.segmenter:
            return lease
        version = self._store.pin_segmenter(lease.job_id, version=loaded.info.version) or loaded.info.version
        return replace(lease, spec=spec.model_copy(update={"segmenter_version": version}))

    def _push(self, lease: Lease, flight: _InFlight, predictions: ItemPredictions) -> list[PushJson] | None:
        """Send the item to the job's destinations; their records for its result (None: it has none). Pushes are
        idempotent, so a retry re-sends safely."""
        destinations = lease.spec.destinations
        if not destinations:
            return None
        if self._backends is None:
            raise PreannotateError(ErrorCode.BACKEND_NOT_CONFIGURED, "this worker has no backends configured")
        if flight.stop.is_set():
            raise ItemStoppedError
        return deliver(self._backends, lease.item, predictions, lease.spec)

    def _release(self, worker: str, lease: Lease) -> None:
        """The pool is stopping: hand the item back so the next lease anywhere takes it, attempt uncounted."""
        try:
            released = self._store.release(worker, [lease.item_id])
        except Exception:  # the lease lapses on its own instead
            log.exception("item %s could not be handed back", lease.item_id)
            return
        if released:
            log.info("item %s stopped by the shutdown and handed back", lease.item_id)
        else:
            log.info("item %s stopped by the shutdown; it was no longer held", lease.item_id)

    def _fail(self, worker: str, lease: Lease, exc: PreannotateError) -> None:
        log.info("item %s failed: %s", lease.item_id, exc)
        self._store.fail(
            worker,
            lease.item_id,
            code=exc.code.code,
            message=exc.message,
            retryable=exc.code.retryable,
            retry_in_s=retry_delay_s(lease.attempt),
        )
        ITEMS_FINISHED.labels(outcome="retried" if exc.code.retryable else "failed").inc()

    def _progress(self, lease: Lease, flight: _InFlight, done: int, planned: int) -> bool:
        if flight.stop.is_set():
            return False
        now = time.monotonic()
        if now - flight.last_progress_s < _PROGRESS_EVERY_S and done < planned:
            return True
        flight.last_progress_s = now
        return self._store.progress(flight.worker, lease.item_id, frames_done=done, frames_planned=planned)

    def _beat(self) -> None:
        # Keeps beating while stopping, until the workers are done: their items must stay leased.
        while not self._stop_heartbeat.wait(self._config.heartbeat_s):
            with self._lock:
                by_worker: dict[str, list[int]] = {}
                for item_id, flight in self._in_flight.items():
                    by_worker.setdefault(flight.worker, []).append(item_id)
            for worker, ids in by_worker.items():
                try:
                    held = set(self._store.heartbeat(worker, ids, lease_s=self._config.lease_s))
                except Exception:
                    log.exception("heartbeat failed")
                    continue
                with self._lock:
                    for item_id in ids:
                        if item_id not in held and item_id in self._in_flight:
                            self._in_flight[item_id].stop.set()
