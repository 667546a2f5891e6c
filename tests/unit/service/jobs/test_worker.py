"""WorkerPool against a real SQLite store, with a fake ``run_item``: what a shutdown does to items in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from models.prompts import PromptSet
from models.types import ModelInfo
from service.jobs import worker as worker_module
from service.jobs.runner import ItemRun, ItemStoppedError
from service.jobs.worker import WorkerConfig, WorkerPool
from service.loaded_models import DEFAULT_MAX_PROMPT_SETS, LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.pipeline.options import MediaLimits
from service.pipeline.predictions import ItemPredictions
from service.queue.sqlite_store import SqliteJobStore
from service.queue.store import ItemState, JobStatus, Lease
from service.spec.job import JobSpec
from service.spec.requests import ItemIn
from service.spec.thresholds import ClassThreshold, ThresholdsFile
from tests.fakes.promptable import BASE_VERSION, GridPrompts

TENANT = "tenant-a"
REQUEST = {
    "model": "m",
    "model_version": "m-v1",
    "class_names": ["face"],
    "fps": 1.0,
    "sampling": "exact",
    "threshold": 0.5,
    "classes": None,
    "destinations": [],
}


def _item(name: str) -> ItemIn:
    return ItemIn.model_validate({"name": name, "slots": [{"url": f"file:///media/{name}"}]})


class _Model:
    """A loaded model as the pool sees it (``run_item`` is faked): the one ``REQUEST`` is pinned to."""

    info = ModelInfo("m", "m", "m-v1", ("face",), "onnxruntime", "cpu", 1, 640)


class _Models:
    def get(self, name: str | None) -> _Model:
        return _Model()

    def acquire(self, name: str | None, prompts: object) -> _Model:
        return self.get(name)

    def release(self, model: object) -> None:
        pass

    def segmenter_for_run(self, spec: object) -> None:
        return None


class _SpyStore(SqliteJobStore):
    """Records ``release`` and ``fail`` calls."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.released: list[list[int]] = []
        self.failures: list[tuple[str, bool]] = []

    def fail(self, worker: str, item_id: int, **kwargs: Any) -> None:
        self.failures.append((kwargs["code"], kwargs["retryable"]))
        super().fail(worker, item_id, **kwargs)

    def release(self, worker: str, item_ids: Sequence[int]) -> list[int]:
        self.released.append(list(item_ids))
        return super().release(worker, item_ids)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[_SpyStore]:
    s = _SpyStore(tmp_path / "jobs.db")
    yield s
    s.close()


def _empty_run(lease: Lease) -> ItemRun:
    """A finished item with nothing detected."""
    return ItemRun(ItemPredictions(lease.item.name, (), ()))


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """``run_item`` replaced by one that runs until it is told to stop."""
    event = threading.Event()

    def endless(lease: Lease, *, on_progress: Callable[[int, int], bool], **kwargs: Any) -> ItemRun:
        event.set()
        while on_progress(0, 10):
            time.sleep(0.01)
        raise ItemStoppedError

    monkeypatch.setattr(worker_module, "run_item", endless)
    return event


def pool_for(store: SqliteJobStore) -> WorkerPool:
    config = WorkerConfig(concurrency=1, lease_s=60.0, heartbeat_s=0.05, limits=MediaLimits(), work_dir=None)
    return WorkerPool(store, cast(ModelRegistry, _Models()), cast(Fetcher, None), config)


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_stopping_the_pool_hands_unfinished_items_back(store: _SpyStore, started: threading.Event) -> None:
    job, _ = store.create_job(tenant=TENANT, idem_key="k", spec=JobSpec.from_stored(REQUEST), items=[_item("long.mp4")])
    pool = pool_for(store)
    pool.start()
    assert started.wait(5)

    pool.stop(grace_s=0.1)

    assert len(store.released) == 1
    record = store.get_job(tenant=TENANT, job_id=job.id)
    assert record is not None
    assert record.status is JobStatus.QUEUED  # not left leased until the lease expires
    (again,) = store.lease("next-worker", max_items=1, lease_s=60.0)
    assert again.attempt == 1  # the interrupted attempt did not count


def test_a_cancelled_item_is_not_handed_back(store: _SpyStore, started: threading.Event) -> None:
    job, _ = store.create_job(tenant=TENANT, idem_key="k", spec=JobSpec.from_stored(REQUEST), items=[_item("long.mp4")])
    pool = pool_for(store)
    pool.start()
    assert started.wait(5)

    store.cancel_job(tenant=TENANT, job_id=job.id)
    wait_until(lambda: pool.busy == 0)  # the heartbeat saw the cancel and stopped the item
    pool.stop(grace_s=0.1)

    assert store.released == []
    results = store.results(tenant=TENANT, job_id=job.id)
    assert results is not None
    assert [r.state for r in results] == [ItemState.CANCELLED]


class _FaceModel:
    """A loaded model as the pool sees it; ``run_item`` must refuse the job before it needs the batcher."""

    info = ModelInfo("m", "m", "m-v7", ("face",), "onnxruntime", "cpu", 1, 640)


class _FaceModels(_Models):
    def get(self, name: str | None) -> _FaceModel:
        return _FaceModel()


def test_a_job_submitted_before_its_model_was_published_is_pinned_and_its_classes_checked(
    store: _SpyStore,
) -> None:
    """Distributed cold start: the API accepted the job knowing neither the version nor the class names."""
    unpinned = {**REQUEST, "model_version": None, "class_names": None, "classes": ["face", "car"]}
    job, _ = store.create_job(
        tenant=TENANT, idem_key="cold", spec=JobSpec.from_stored(unpinned), items=[_item("a.jpg")]
    )
    config = WorkerConfig(concurrency=1, lease_s=60.0, heartbeat_s=0.05, limits=MediaLimits(), work_dir=None)
    # No fetcher: the class check must come before any download.
    pool = WorkerPool(store, cast(ModelRegistry, _FaceModels()), cast(Fetcher, None), config)
    pool.start()
    try:
        wait_until(lambda: pool.busy == 0 and store.depth() == 0)
    finally:
        pool.stop(grace_s=1.0)

    record = store.get_job(tenant=TENANT, job_id=job.id)
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert (record.spec.model_version, list(record.spec.class_names or ())) == ("m-v7", ["face"])
    (error,) = record.errors
    assert error.code == "invalid_argument"  # not retryable: a retry would fail the same way
    assert "car" in error.message
    assert "face" in error.message


class _LosingTheRace(_SpyStore):
    """Another worker pins the job to ``winner`` between our lease and our pin."""

    def __init__(self, path: Path, winner: tuple[str, list[str]]) -> None:
        super().__init__(path)
        self.winner = winner

    def lease(self, worker: str, *, max_items: int, lease_s: float) -> list[Lease]:
        leases = super().lease(worker, max_items=max_items, lease_s=lease_s)
        for lease in leases:
            self.pin_model(lease.job_id, version=self.winner[0], class_names=self.winner[1])
        return leases


def test_a_worker_that_loses_the_pin_to_other_classes_leaves_the_item_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling update: its results would be stored under the winner's class names, mislabelled."""
    ran: list[Lease] = []
    monkeypatch.setattr(worker_module, "run_item", lambda lease, **kwargs: ran.append(lease) or _empty_run(lease))
    store = _LosingTheRace(tmp_path / "jobs.db", ("m-v2", ["car", "face"]))
    unpinned = {**REQUEST, "model_version": None, "class_names": None}
    job, _ = store.create_job(
        tenant=TENANT, idem_key="cold", spec=JobSpec.from_stored(unpinned), items=[_item("a.jpg")]
    )
    pool = pool_for(store)  # runs m-v1 with ("face",)
    pool.start()
    try:
        wait_until(lambda: bool(store.failures))
    finally:
        pool.stop(grace_s=1.0)
        record = store.get_job(tenant=TENANT, job_id=job.id)
        store.close()

    assert ran == []
    assert store.failures[0] == ("not_ready", True)  # retried later, on a worker of the pinned model
    assert record is not None
    assert (record.spec.model_version, list(record.spec.class_names or ())) == (
        "m-v2",
        ["car", "face"],
    )
    assert record.status is not JobStatus.SUCCEEDED


def test_a_worker_that_loses_the_pin_to_the_same_classes_runs_the_item_under_the_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same classes from other weights label the same way: the item runs, its results name the pin."""
    ran: list[Lease] = []
    monkeypatch.setattr(worker_module, "run_item", lambda lease, **kwargs: ran.append(lease) or _empty_run(lease))
    store = _LosingTheRace(tmp_path / "jobs.db", ("m-v0", ["face"]))
    unpinned = {**REQUEST, "model_version": None, "class_names": None}
    store.create_job(tenant=TENANT, idem_key="cold", spec=JobSpec.from_stored(unpinned), items=[_item("a.jpg")])
    pool = pool_for(store)  # runs m-v1 with ("face",)
    pool.start()
    try:
        wait_until(lambda: bool(ran))
    finally:
        pool.stop(grace_s=1.0)
        store.close()

    (run,) = ran
    assert (run.spec.model_version, list(run.spec.class_names or ())) == ("m-v0", ["face"])
    assert store.failures == []


def test_a_job_pinned_to_other_classes_is_not_run_by_this_worker(
    store: _SpyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling update: the job was submitted while the old model (other classes) was published."""
    ran: list[Lease] = []
    monkeypatch.setattr(worker_module, "run_item", lambda lease, **kwargs: ran.append(lease) or _empty_run(lease))
    old_model = {**REQUEST, "model_version": "m-v0", "class_names": ["person"]}
    store.create_job(tenant=TENANT, idem_key="old", spec=JobSpec.from_stored(old_model), items=[_item("a.jpg")])
    pool = pool_for(store)
    pool.start()
    try:
        wait_until(lambda: bool(store.failures or ran))
    finally:
        pool.stop(grace_s=1.0)

    assert ran == []
    assert store.failures == [("not_ready", True)]


class _SegModels(_Models):
    """A worker whose model makes masks itself (a ``-seg`` export)."""

    def get(self, name: str | None) -> _Model:
        model = _Model()
        model.info = ModelInfo("m", "m", "m-v1", ("face",), "onnxruntime", "cpu", 1, 640, makes_masks=True)
        return model


def test_a_cold_start_pin_records_that_the_model_makes_masks(store: _SpyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its results are then served with mask shapes in the default LS config / Encord ontology."""
    seen: list[JobSpec] = []

    def run(lease: Lease, **kwargs: Any) -> ItemRun:
        seen.append(lease.spec)
        return _empty_run(lease)

    monkeypatch.setattr(worker_module, "run_item", run)
    unpinned = {**REQUEST, "model_version": None, "class_names": None}
    job, _ = store.create_job(tenant=TENANT, idem_key="cold", spec=JobSpec.from_stored(unpinned), items=[_item("a")])
    config = WorkerConfig(concurrency=1, lease_s=60.0, heartbeat_s=0.05, limits=MediaLimits(), work_dir=None)
    pool = WorkerPool(store, cast(ModelRegistry, _SegModels()), cast(Fetcher, None), config)
    pool.start()
    try:
        wait_until(lambda: pool.busy == 0 and store.depth() == 0)
    finally:
        pool.stop(grace_s=1.0)

    record = store.get_job(tenant=TENANT, job_id=job.id)
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert record.spec.makes_masks
    assert [s.makes_masks for s in seen] == [True]


# -- saved thresholds, pinned with the model at a cold start -------------------------------------------------------


def run_cold_job(store: _SpyStore, monkeypatch: pytest.MonkeyPatch, **request: Any) -> Lease:
    """A job submitted unpinned (distributed cold start) with ``request``'s fields, run by a worker of m-v1."""
    ran: list[Lease] = []
    monkeypatch.setattr(worker_module, "run_item", lambda lease, **kwargs: ran.append(lease) or _empty_run(lease))
    unpinned = {**REQUEST, "model_version": None, "class_names": None, **request}
    store.create_job(tenant=TENANT, idem_key="cold", spec=JobSpec.from_stored(unpinned), items=[_item("a.jpg")])
    pool = pool_for(store)
    pool.start()
    try:
        wait_until(lambda: bool(ran))
    finally:
        pool.stop(grace_s=1.0)
    (run,) = ran
    return run


def test_a_cold_start_pin_brings_the_thresholds_saved_for_the_pinned_version(
    store: _SpyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = {"face": ClassThreshold(threshold=0.3), "cat": ClassThreshold(threshold=0.2)}  # cat: not a class of m
    store.save_thresholds("m-v1", ThresholdsFile(model_version="m-v1", classes=saved))
    run = run_cold_job(store, monkeypatch)
    assert run.spec.class_thresholds == {"face": 0.3}
    (job,) = store.list_jobs(tenant=TENANT, limit=1)[0]
    assert job.spec.class_thresholds == {"face": 0.3}  # stored: every later item and GET /result agree


def test_a_cold_start_pin_never_takes_another_versions_thresholds(
    store: _SpyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save_thresholds("m-v0", ThresholdsFile(model_version="m-v0", classes={"face": ClassThreshold(threshold=0.3)}))
    run = run_cold_job(store, monkeypatch)
    assert run.spec.class_thresholds is None


def test_a_cold_job_with_its_own_thresholds_keeps_them(store: _SpyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.save_thresholds("m-v1", ThresholdsFile(model_version="m-v1", classes={"face": ClassThreshold(threshold=0.3)}))
    run = run_cold_job(store, monkeypatch, class_thresholds={"face": 0.8})
    assert run.spec.class_thresholds == {"face": 0.8}


def test_a_prompted_items_view_is_held_while_it_runs_so_other_prompt_sets_never_close_it(
    store: _SpyStore, started: threading.Event
) -> None:
    grid = GridPrompts()
    batcher = DynamicBatcher(grid, max_batch_size=4, max_wait_ms=0)
    batcher.start()
    registry = ModelRegistry([LoadedModel("fake:gridprompts", batcher)], max_prompt_sets=DEFAULT_MAX_PROMPT_SETS)
    a = PromptSet.parse("a")
    spec = {**REQUEST, "model": "fake:gridprompts", "model_version": f"{BASE_VERSION}+{a.key}", "class_names": ["a"]}
    store.create_job(
        tenant=TENANT, idem_key="k", spec=JobSpec.from_stored({**spec, "prompts": a.to_json()}), items=[_item("v.mp4")]
    )
    config = WorkerConfig(concurrency=1, lease_s=60.0, heartbeat_s=0.05, limits=MediaLimits(), work_dir=None)
    pool = WorkerPool(store, registry, cast(Fetcher, None), config)
    pool.start()
    try:
        assert started.wait(5)  # the item runs on A's view: a long video
        view_a = registry.prompted("fake:gridprompts", a)
        for i in range(DEFAULT_MAX_PROMPT_SETS):  # requests for 16 other prompt sets meanwhile
            registry.prompted("fake:gridprompts", PromptSet.parse(f"other{i}"))
        frame = np.zeros((40, 80, 3), np.uint8)
        assert len(view_a.batcher.detect([frame], threshold=0.5)) == 1  # the item's frames still run
    finally:
        pool.stop(grace_s=0.1)
        registry.close()
