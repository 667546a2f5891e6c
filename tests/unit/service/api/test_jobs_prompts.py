"""A job's ``prompts`` (a string, a list of names, or ``{label: prompt(s)}``): pinned with the open-vocabulary
model's view (its version and the prompts' names), part of the dedupe key, run by the worker on that view
(``ModelRegistry.prompted``) end to end through the SQLite store; prompts a model cannot take are a 422."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes import jobs as jobs_routes
from service.api.state import AppState
from service.config import Settings
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.queue.sqlite_store import SqliteJobStore
from service.queue.store import ItemState
from tests.fakes.promptable import BASE_VERSION, GridPrompts, grid_score
from tests.unit.service.api.test_jobs_segmenter import AUTH, TENANT, TOKEN, BigBox, photo, run_jobs


@contextmanager
def prompts_app(
    tmp_path: Path, max_prompt_classes: int = 200
) -> Iterator[tuple[TestClient, SqliteJobStore, ModelRegistry, GridPrompts]]:
    settings = Settings(
        api_tokens=SecretStr(TOKEN),
        db_path=tmp_path / "jobs.db",
        local_roots=[tmp_path],
        model="fake:centre",
        max_prompt_classes=max_prompt_classes,
    )
    grid = GridPrompts()
    models = []
    for spec, detector in (("fake:centre", BigBox()), ("fake:gridprompts", grid)):
        batcher = DynamicBatcher(detector, max_batch_size=4, max_wait_ms=0)
        batcher.start()
        models.append(LoadedModel(spec, batcher))
    registry = ModelRegistry(models)
    store = SqliteJobStore(settings.db_path, max_attempts=settings.max_attempts)
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(jobs_routes.router)
    app.state.preannotate = AppState(
        settings=settings,
        auth=TokenAuth([TOKEN]),
        store=store,
        fetcher=Fetcher(settings.fetch_policy()),
        models=registry,
    )
    try:
        with TestClient(app) as client:
            yield client, store, registry, grid
    finally:
        store.close()
        registry.close()


def _body(tmp_path: Path, prompts: object, **extra: Any) -> dict[str, Any]:
    """A job of one photo (written once: a rewritten file is another job) for the open-vocabulary model."""
    url = (tmp_path / "photo.png").as_uri() if (tmp_path / "photo.png").exists() else photo(tmp_path)
    body = {"items": [{"name": "a", "slots": [{"url": url}]}], "model": "gridprompts", "prompts": prompts}
    return {**body, **extra}


@pytest.mark.parametrize(
    ("prompts", "expected"),
    [
        ("person, PED=pedestrian|person walking", {"person": ("person",), "PED": ("pedestrian", "person walking")}),
        (["person", "red car"], {"person": ("person",), "red car": ("red car",)}),
        ({"PED": "pedestrian", "car": ["car", "automobile"]}, {"PED": ("pedestrian",), "car": ("car", "automobile")}),
    ],
)
def test_each_body_form_is_pinned_with_the_views_version_and_the_prompts_names(
    tmp_path: Path, prompts: object, expected: dict[str, tuple[str, ...]]
) -> None:
    with prompts_app(tmp_path) as (client, store, _, _):
        response = client.post("/v1/jobs", json=_body(tmp_path, prompts), headers=AUTH)
        assert response.status_code == 202, response.text
        record = store.get_job(tenant=TENANT, job_id=response.json()["job_id"])
    assert record is not None
    spec = record.spec
    assert spec.prompts is not None
    assert {c.name: c.prompts for c in spec.prompts.classes} == expected
    assert spec.model == "fake:gridprompts"
    assert spec.model_version == f"{BASE_VERSION}+{spec.prompts.key}"
    assert spec.class_names == tuple(expected)


def test_the_same_prompts_are_the_same_job_and_other_prompts_another(tmp_path: Path) -> None:
    with prompts_app(tmp_path) as (client, _, _, _):
        ids = [
            client.post("/v1/jobs", json=_body(tmp_path, prompts), headers=AUTH).json()["job_id"]
            for prompts in ("person, car", ["person", "car"], "person, truck")
        ]
    assert ids[0] == ids[1]
    assert ids[2] != ids[0]


def test_a_worker_runs_a_prompted_job_on_the_view_and_the_result_uses_the_prompts_names(tmp_path: Path) -> None:
    with prompts_app(tmp_path) as (client, store, registry, grid):
        body = _body(tmp_path, {"PED": "pedestrian", "car": "car", "bus": "bus"}, threshold=0.75)
        job_id = client.post("/v1/jobs", json=body, headers=AUTH).json()["job_id"]
        run_jobs(store, registry, tmp_path, Settings(local_roots=[tmp_path]))
        (item,) = store.results(tenant=TENANT, job_id=job_id) or []
        coco = client.get(f"/v1/jobs/{job_id}/result", params={"format": "coco"}, headers=AUTH).json()
    assert item.state is ItemState.SUCCEEDED, item
    assert [c["name"] for c in coco["categories"]] == ["PED", "car", "bus"]
    kept = [i for i in range(3) if grid_score(i) >= 0.75]  # PED 0.9, car 0.8; bus 0.7 is under the threshold
    assert sorted(a["category_id"] for a in coco["annotations"]) == [coco["categories"][i]["id"] for i in kept]
    assert grid.frames_seen == 1
    assert list(grid.encoded.values()) == [1]


def test_a_classes_filter_names_prompted_classes(tmp_path: Path) -> None:
    with prompts_app(tmp_path) as (client, _, _, _):
        ok = client.post("/v1/jobs", json=_body(tmp_path, "PED=pedestrian, car", classes=["PED"]), headers=AUTH)
        bad = client.post("/v1/jobs", json=_body(tmp_path, "PED=pedestrian, car", classes=["pedestrian"]), headers=AUTH)
    assert ok.status_code == 202, ok.text
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_argument")


@pytest.mark.parametrize(
    ("model", "prompts", "words"),
    [
        ("centre", "person", "has classes of its own"),
        ("gridprompts", None, "is open-vocabulary"),
        ("gridprompts", "person, Person", "given twice"),
        ("gridprompts", [], "at least one class"),
        ("gridprompts", {"PED": []}, "has no prompt"),
    ],
)
def test_prompts_a_model_cannot_take_are_a_422_invalid_prompts(
    tmp_path: Path, model: str, prompts: object, words: str
) -> None:
    with prompts_app(tmp_path) as (client, store, _, _):
        response = client.post("/v1/jobs", json={**_body(tmp_path, prompts), "model": model}, headers=AUTH)
        assert store.depth() == 0
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_prompts"
    assert words in error["message"]


def test_a_fixed_class_job_keeps_its_stored_form(tmp_path: Path) -> None:
    with prompts_app(tmp_path) as (client, store, _, _):
        body = {"items": [{"name": "a", "slots": [{"url": photo(tmp_path)}]}]}
        job_id = client.post("/v1/jobs", json=body, headers=AUTH).json()["job_id"]
        record = store.get_job(tenant=TENANT, job_id=job_id)
    assert record is not None
    assert "prompts" not in record.spec.to_stored()
    assert record.spec.prompts is None


def test_a_body_over_max_prompt_classes_is_a_422_and_nothing_is_queued(tmp_path: Path) -> None:
    with prompts_app(tmp_path, max_prompt_classes=2) as (client, store, _, grid):
        response = client.post("/v1/jobs", json=_body(tmp_path, ["a", "b", "c"]), headers=AUTH)
        assert store.depth() == 0
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_prompts"
    assert "3 prompted classes; at most 2 (PREANNOTATE_MAX_PROMPT_CLASSES)" in error["message"]
    assert not grid.encoded
