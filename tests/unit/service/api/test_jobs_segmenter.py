"""A job's segmenter: ``"segmenter"`` in the body (default ``PREANNOTATE_SEGMENTER``) is pinned with the job, spec and
version, and a worker that runs it stores a mask per box; a segmenter the server does not run is a 404."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from models.base import Detector
from models.types import Detections, RGBImage
from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes import jobs as jobs_routes
from service.api.state import AppState
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.jobs.worker import WorkerConfig, WorkerPool
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.pipeline.options import MediaLimits
from service.pipeline.predictions import item_predictions_from_json
from service.queue.sqlite_store import SqliteJobStore
from service.queue.store import ItemState, Lease
from service.spec.job import JobSpec
from service.spec.requests import ItemIn
from tests.fakes.segmenter import EllipseSegmenter, ellipse_in
from tests.unit.service.intake.helpers import CentreBox

TOKEN = "segmenter-test-api-token-" + "s" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TENANT = TokenAuth([TOKEN]).tenant_for(TOKEN)


class BigBox(CentreBox):
    """One box over the middle half of every frame."""

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            box = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], np.float32)
            out.append(Detections(box, np.array([0.9], np.float32), np.array([0], np.int64)))
        return out


@contextmanager
def jobs_app(
    tmp_path: Path, *, loaded: EllipseSegmenter | None, detector: Detector | None = None
) -> Iterator[tuple[TestClient, SqliteJobStore, ModelRegistry]]:
    full = Settings(api_tokens=SecretStr(TOKEN), db_path=tmp_path / "jobs.db", local_roots=[tmp_path])
    full = full.model_copy(update={"segmenter": None if loaded is None else loaded.info.spec})
    batcher = DynamicBatcher(detector or BigBox(), max_batch_size=4, max_wait_ms=0)
    batcher.start()
    registry = ModelRegistry([LoadedModel(spec="fake:centre", batcher=batcher)], segmenter=loaded)
    store = SqliteJobStore(full.db_path, max_attempts=full.max_attempts)
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(jobs_routes.router)
    fetcher = Fetcher(full.fetch_policy())
    app.state.preannotate = AppState(
        settings=full, auth=TokenAuth([TOKEN]), store=store, fetcher=fetcher, models=registry
    )
    try:
        with TestClient(app) as client:
            yield client, store, registry
    finally:
        store.close()
        batcher.close()


def photo(tmp_path: Path, name: str = "photo.png", size: tuple[int, int] = (96, 128)) -> str:
    path = tmp_path / name
    cv2.imwrite(str(path), np.full((*size, 3), 127, np.uint8))
    return path.as_uri()


def run_jobs(store: SqliteJobStore, registry: ModelRegistry, tmp_path: Path, settings: Settings) -> None:
    """One in-process worker until the store has nothing left to lease."""
    config = WorkerConfig(concurrency=1, lease_s=30.0, heartbeat_s=5.0, limits=MediaLimits(), work_dir=tmp_path)
    pool = WorkerPool(store, registry, Fetcher(settings.fetch_policy()), config)
    pool.start()
    try:
        deadline = time.monotonic() + 30
        while (store.depth() or pool.busy) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pool.stop(grace_s=5.0)


def test_a_job_with_a_segmenter_stores_a_mask_per_box_in_source_pixels(tmp_path: Path) -> None:
    segmenter = EllipseSegmenter()
    with jobs_app(tmp_path, loaded=segmenter) as (client, store, registry):
        body = {"items": [{"name": "a", "slots": [{"url": photo(tmp_path)}]}], "segmenter": "fake:ellipse"}
        response = client.post("/v1/jobs", json=body, headers=AUTH)
        assert response.status_code in (200, 201, 202), response.text
        job_id = response.json()["job_id"]
        record = store.get_job(tenant=TENANT, job_id=job_id)
        assert record is not None
        assert (record.spec.segmenter, record.spec.segmenter_version) == ("fake:ellipse", "e1")

        run_jobs(store, registry, tmp_path, Settings(local_roots=[tmp_path]))

        (result,) = store.results(tenant=TENANT, job_id=job_id) or []
    assert result.state is ItemState.SUCCEEDED, result
    assert result.result is not None
    (frame,) = result.result["frames"]
    assert "masks" in frame
    predictions = item_predictions_from_json("a", result.result)
    masks = predictions.frames[0].detections.masks
    assert masks is not None
    expected = ellipse_in((32, 24, 96, 72), 96, 128)
    np.testing.assert_array_equal(masks.full(0, 96, 128), expected)
    assert segmenter.calls == [1]


def test_the_settings_segmenter_is_the_default_and_a_job_without_one_stores_boxes_only(tmp_path: Path) -> None:
    with jobs_app(tmp_path, loaded=None) as (client, store, registry):
        body = {"items": [{"name": "a", "slots": [{"url": photo(tmp_path)}]}]}
        job_id = client.post("/v1/jobs", json=body, headers=AUTH).json()["job_id"]
        run_jobs(store, registry, tmp_path, Settings(local_roots=[tmp_path]))
        (result,) = store.results(tenant=TENANT, job_id=job_id) or []
    assert result.result is not None
    assert "masks" not in result.result["frames"][0]
    served = tmp_path / "served"
    served.mkdir()
    with jobs_app(served, loaded=EllipseSegmenter()) as (client, store, _):
        body = {"items": [{"name": "a", "slots": [{"url": photo(served)}]}]}
        job_id = client.post("/v1/jobs", json=body, headers=AUTH).json()["job_id"]
        record = store.get_job(tenant=TENANT, job_id=job_id)
    assert record is not None
    assert (record.spec.segmenter, record.spec.segmenter_version) == ("fake:ellipse", "e1")


@pytest.mark.parametrize("served", [None, "fake:ellipse"])
def test_a_segmenter_the_server_does_not_run_is_a_404_model_not_found(tmp_path: Path, served: str | None) -> None:
    segmenter = None if served is None else EllipseSegmenter()
    with jobs_app(tmp_path, loaded=segmenter) as (client, _, _):
        body = {"items": [{"name": "a", "slots": [{"url": photo(tmp_path)}]}], "segmenter": "hf:/models/sam-huge"}
        response = client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "model_not_found"
    assert "segmenter 'hf:/models/sam-huge' is not served" in response.json()["error"]["message"]


def test_a_worker_without_the_jobs_segmenter_leaves_it_to_one_that_has_it(tmp_path: Path) -> None:
    registry = ModelRegistry([LoadedModel("fake:centre", DynamicBatcher(BigBox(), max_batch_size=1, max_wait_ms=0))])
    pinned = JobSpec(
        model="fake:centre",
        fps=1.0,
        sampling="exact",  # type: ignore[arg-type]
        threshold=0.5,
        segmenter="fake:ellipse",
        segmenter_version="e1",
    )
    with pytest.raises(PreannotateError) as info:
        registry.segmenter_for_run(pinned)
    assert info.value.code is ErrorCode.NOT_READY
    other = ModelRegistry(registry.all(), segmenter=EllipseSegmenter())
    assert other.segmenter_for_run(pinned) is other.segmenter
    for stale in ("older", None):  # other weights; a job no worker has pinned yet (the worker pins it first)
        with pytest.raises(PreannotateError):
            other.segmenter_for_run(pinned.model_copy(update={"segmenter_version": stale}))
    assert other.segmenter_for_run(pinned.model_copy(update={"segmenter": None})) is None


UNPINNED_SAM = {"model": "fake:centre", "fps": 1.0, "sampling": "exact", "threshold": 0.5, "segmenter": "fake:ellipse"}
"""A job as a distributed API pod stores it: it loads no segmenter, so its version is unknown."""


def ellipse_version(version: str) -> EllipseSegmenter:
    segmenter = EllipseSegmenter()
    segmenter.info = replace(segmenter.info, version=version)
    return segmenter


def test_the_first_worker_pins_the_segmenter_version_of_a_job_submitted_without_it(tmp_path: Path) -> None:
    segmenter = ellipse_version("e1")
    registry = ModelRegistry(
        [LoadedModel("fake:centre", DynamicBatcher(BigBox(), max_batch_size=1, max_wait_ms=0))], segmenter=segmenter
    )
    registry.default.batcher.start()
    store = SqliteJobStore(tmp_path / "jobs.db")
    try:
        job, _ = store.create_job(
            tenant=TENANT,
            idem_key="cold",
            spec=JobSpec.from_stored(UNPINNED_SAM),
            items=[ItemIn.model_validate({"name": "a", "slots": [{"url": photo(tmp_path)}]})],
        )
        run_jobs(store, registry, tmp_path, Settings(local_roots=[tmp_path]))
        record = store.get_job(tenant=TENANT, job_id=job.id)
        (result,) = store.results(tenant=TENANT, job_id=job.id) or []
    finally:
        store.close()
        registry.default.close()
    assert record is not None
    assert record.spec.segmenter_version == "e1"
    assert result.state is ItemState.SUCCEEDED, result
    assert segmenter.calls == [1]


class _PinnedElsewhere(SqliteJobStore):
    """Another worker, running segmenter weights ``e1``, pins each job as this one leases it; records failures."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failures: list[tuple[str, bool]] = []

    def lease(self, worker: str, *, max_items: int, lease_s: float) -> list[Lease]:
        leases = super().lease(worker, max_items=max_items, lease_s=lease_s)
        for lease in leases:
            self.pin_segmenter(lease.job_id, version="e1")
        return leases

    def fail(self, worker: str, item_id: int, **kwargs: Any) -> None:
        self.failures.append((kwargs["code"], kwargs["retryable"]))
        super().fail(worker, item_id, **kwargs)


def test_a_worker_with_other_segmenter_weights_leaves_a_job_pinned_elsewhere(tmp_path: Path) -> None:
    """A rolling update: masks of other weights would be stored under the pinned version."""
    segmenter = ellipse_version("e2")
    registry = ModelRegistry(
        [LoadedModel("fake:centre", DynamicBatcher(BigBox(), max_batch_size=1, max_wait_ms=0))], segmenter=segmenter
    )
    registry.default.batcher.start()
    store = _PinnedElsewhere(tmp_path / "jobs.db")
    config = WorkerConfig(concurrency=1, lease_s=30.0, heartbeat_s=5.0, limits=MediaLimits(), work_dir=tmp_path)
    pool = WorkerPool(store, registry, Fetcher(Settings(local_roots=[tmp_path]).fetch_policy()), config)
    try:
        job, _ = store.create_job(
            tenant=TENANT,
            idem_key="cold",
            spec=JobSpec.from_stored(UNPINNED_SAM),
            items=[ItemIn.model_validate({"name": "a", "slots": [{"url": photo(tmp_path)}]})],
        )
        pool.start()
        deadline = time.monotonic() + 10
        while not store.failures and time.monotonic() < deadline:
            time.sleep(0.02)
        pool.stop(grace_s=5.0)
        record = store.get_job(tenant=TENANT, job_id=job.id)
    finally:
        store.close()
        registry.default.close()
    assert store.failures == [("not_ready", True)]  # retried later, on a worker running e1
    assert segmenter.calls == []
    assert record is not None
    assert record.spec.segmenter_version == "e1"


@pytest.mark.parametrize("served", [True, False], ids=["server-segments", "server-does-not"])
def test_a_job_opts_out_of_the_servers_segmenter_with_none(tmp_path: Path, served: bool) -> None:
    """``"segmenter": "none"``: boxes only, stored as a job without a segmenter (its stored form and keys too)."""
    segmenter = EllipseSegmenter() if served else None
    with jobs_app(tmp_path, loaded=segmenter) as (client, store, registry):
        items = [{"name": "a", "slots": [{"url": photo(tmp_path)}]}]
        response = client.post("/v1/jobs", json={"items": items, "segmenter": "none"}, headers=AUTH)
        assert response.status_code in (200, 201, 202), response.text
        job_id = response.json()["job_id"]
        record = store.get_job(tenant=TENANT, job_id=job_id)
        assert record is not None
        run_jobs(store, registry, tmp_path, Settings(local_roots=[tmp_path]))
        (result,) = store.results(tenant=TENANT, job_id=job_id) or []
    assert (record.spec.segmenter, record.spec.segmenter_version) == (None, None)
    assert "segmenter" not in record.spec.to_stored()
    assert result.state is ItemState.SUCCEEDED, result
    assert result.result is not None
    assert "masks" not in result.result["frames"][0]
    assert segmenter is None or segmenter.calls == []
