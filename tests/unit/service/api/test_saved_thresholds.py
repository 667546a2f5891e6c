"""Thresholds saved for a model version (``calibrate --save``), as the interactive routes apply them and
``GET /v1/models`` lists them: on the real routers and a real SQLite store; a different version never inherits
them. ``CentreBox`` scores its one face 0.9."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes import ls_ml_backend, predict
from service.api.routes import models as models_routes
from service.api.state import AppState
from service.config import Settings
from service.jobs.calibrated import SavedThresholds, save_calibration
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.queue.redis_store import RedisJobStore
from service.queue.sqlite_store import SqliteJobStore
from service.queue.stores import open_sqlite_store
from service.remote_models import PublishedModel, RemoteModels
from service.spec.thresholds import ClassThreshold, ThresholdsFile
from tests.redis_server import RedisServer
from tests.unit.service.backends.test_ls_ml_backend import CONFIG, CentreBox, basic
from tests.unit.service.queue.store_contract import FakeClock

TOKEN = "saved-thresholds-token-" + "t" * 20
VERSION = "centre-00000001"


def calibration(version: str, face: float, **entry: Any) -> ThresholdsFile:
    return ThresholdsFile(model_version=version, classes={"face": ClassThreshold(threshold=face, **entry)})


@dataclass
class Served:
    client: TestClient
    store: SqliteJobStore
    image: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(
        api_tokens=SecretStr(TOKEN), db_path=tmp_path / "jobs.db", work_dir=tmp_path, local_roots=[tmp_path]
    )
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), np.full((40, 80, 3), 128, np.uint8))
    store = SqliteJobStore(settings.db_path)
    batcher = DynamicBatcher(CentreBox(), max_batch_size=4, max_wait_ms=0)
    batcher.start()
    app = FastAPI()
    register_exception_handlers(app)
    for module in (predict, models_routes, ls_ml_backend):
        app.include_router(module.router)
    app.state.preannotate = AppState(
        settings=settings,
        auth=TokenAuth([TOKEN]),
        store=store,
        fetcher=Fetcher(settings.fetch_policy()),
        models=ModelRegistry([LoadedModel(spec="fake:centre", batcher=batcher)]),
    )
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            yield Served(client, store, image)
    finally:
        batcher.close()
        store.close()


def predicted_scores(served: Served) -> list[float]:
    files = {"file": ("grey.png", served.image.read_bytes(), "image/png")}
    response = served.client.post("/v1/predict", files=files)
    assert response.status_code == 200, response.text
    return [d["score"] for d in response.json()["detections"]]


def ls_regions(served: Served) -> list[Any]:
    body = {"tasks": [{"id": 1, "data": {"image": served.image.as_uri()}}], "project": "7.1", "label_config": CONFIG}
    response = served.client.post("/ls/predict", json=body, headers=basic(TOKEN))
    assert response.status_code == 200, response.text
    (entry,) = response.json()["results"]
    return list(entry["result"])


@pytest.mark.parametrize(("saved", "kept"), [(None, 1), ((VERSION, 0.95), 0), ((VERSION, 0.2), 1)])
def test_predict_and_the_label_studio_backend_apply_the_thresholds_saved_for_their_version(
    served: Served, saved: tuple[str, float] | None, kept: int
) -> None:
    if saved is not None:
        served.store.save_thresholds(saved[0], calibration(*saved))
    assert len(predicted_scores(served)) == kept
    assert len(ls_regions(served)) == kept


def test_another_versions_thresholds_are_never_applied(served: Served) -> None:
    served.store.save_thresholds("centre-00000002", calibration("centre-00000002", 0.95))
    served.store.save_thresholds(f"{VERSION}+0123456789ab", calibration(f"{VERSION}+0123456789ab", 0.95))
    assert predicted_scores(served) == [0.9]
    assert len(ls_regions(served)) == 1


def test_a_lower_saved_threshold_keeps_what_the_global_one_drops(served: Served) -> None:
    served.store.save_thresholds(VERSION, calibration(VERSION, 0.5))
    files = {"file": ("grey.png", served.image.read_bytes(), "image/png")}
    response = served.client.post("/v1/predict", files=files, data={"threshold": "0.95"})
    assert [d["score"] for d in response.json()["detections"]] == [0.9]


def test_the_models_route_lists_the_thresholds_saved_for_each_loaded_version(served: Served) -> None:
    (before,) = served.client.get("/v1/models").json()
    assert before["thresholds"] is None
    served.store.save_thresholds("centre-00000002", calibration("centre-00000002", 0.4))
    served.store.save_thresholds(VERSION, calibration(VERSION, 0.3, f1=0.8, support=12))
    served.client.app.state.preannotate.saved = None  # type: ignore[attr-defined]  # the cache, read afresh
    (model,) = served.client.get("/v1/models").json()
    assert (model["version"], model["thresholds"]) == (VERSION, {"face": 0.3})


def test_the_distributed_catalog_lists_the_published_versions_thresholds(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    store.save_thresholds(VERSION, calibration(VERSION, 0.3))
    published = PublishedModel(spec="fake:centre", info=CentreBox().info, max_batch_size=4, live_workers=1)
    settings = Settings(api_tokens=SecretStr(TOKEN), db_path=tmp_path / "jobs.db", model="fake:centre")
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(models_routes.router)
    app.state.preannotate = AppState(
        settings=settings,
        auth=TokenAuth([TOKEN]),
        store=store,
        fetcher=None,  # type: ignore[arg-type]  # the models route fetches nothing
        models=RemoteModels(lambda: [published], "fake:centre"),
    )
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            (model,) = client.get("/v1/models").json()
    finally:
        store.close()
    assert (model["known"], model["thresholds"]) == (True, {"face": 0.3})


# -- the cache -----------------------------------------------------------------------------------------------------


def test_saved_thresholds_are_read_again_once_the_cache_expires(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    clock = FakeClock(0.0)
    cache = SavedThresholds(store, ttl_s=30.0, clock=clock)
    try:
        assert cache.class_thresholds(VERSION, ("face",)) is None
        store.save_thresholds(VERSION, calibration(VERSION, 0.3))
        clock.advance(29.0)
        assert cache.class_thresholds(VERSION, ("face",)) is None  # still the cached answer
        clock.advance(1.0)
        assert cache.class_thresholds(VERSION, ("face",)) == {"face": 0.3}
        assert cache.class_thresholds(VERSION, ("car",)) == {}  # a class the model lacks is left out
    finally:
        store.close()


def test_the_cache_ttl_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREANNOTATE_THRESHOLDS_CACHE_S", "5")
    monkeypatch.setenv("PREANNOTATE_MAX_SAVED_THRESHOLDS", "7")
    settings = Settings()
    assert (settings.thresholds_cache_s, settings.max_saved_thresholds) == (5.0, 7)
    fields = Settings.model_fields
    assert (fields["thresholds_cache_s"].default, fields["max_saved_thresholds"].default) == (30.0, 256)


# -- calibrate --save ------------------------------------------------------------------------------------------------


def test_save_calibration_saves_in_the_configured_sqlite_store(tmp_path: Path) -> None:
    settings = Settings(db_path=tmp_path / "jobs.db", max_saved_thresholds=1)
    where = save_calibration(settings, calibration("v1", 0.3))
    assert str(tmp_path / "jobs.db") in where
    assert "v1" in where
    save_calibration(settings, calibration("v2", 0.4))
    store = open_sqlite_store(settings)
    try:
        assert store.saved_thresholds() == {"v2": calibration("v2", 0.4)}  # bounded by the setting
    finally:
        store.close()


def test_save_calibration_refuses_a_file_without_a_model_version(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_version"):
        save_calibration(Settings(db_path=tmp_path / "jobs.db"), ThresholdsFile(model_version=" "))
    assert not (tmp_path / "jobs.db").exists()


def test_save_calibration_saves_in_redis_when_the_queue_url_is_set(redis_url: str) -> None:
    settings = Settings(queue_url=SecretStr(redis_url))
    where = save_calibration(settings, calibration("v1", 0.3))
    assert "v1" in where
    store = RedisJobStore(redis_url)
    try:
        assert store.thresholds_for("v1") == calibration("v1", 0.3)
    finally:
        store.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    server = RedisServer()
    try:
        server.start()
        yield server.url
    finally:
        server.cleanup()
