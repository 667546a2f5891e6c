"""Distributed cold start for an open-vocabulary model: a job sent to a Label Studio project before any worker
published the model is stored without prompts (the API cannot tell the model takes them); the first worker reads
the project's labels, pins them with the job (real SQLite and Redis stores), and its items finish under those
labels, pushed to the project (fake LS REST)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.backends.registry import Backends
from service.config import Settings
from service.jobs.submit import create_job_from
from service.jobs.worker import WorkerConfig, WorkerPool
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.pipeline.options import MediaLimits
from service.queue.redis_store import RedisJobStore
from service.queue.sqlite_store import SqliteJobStore
from service.queue.store import ItemState, JobStore
from service.remote_models import RemoteModels
from service.spec.requests import JobCreate
from tests.fakes.promptable import BASE_VERSION, GridPrompts
from tests.redis_server import RedisServer
from tests.unit.service.api.test_jobs_segmenter import photo
from tests.unit.service.backends.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio, serving

TENANT = "tenant-a"
PROJECT = 3
CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image"><Label value="Car"/><Label value="Pedestrian"/></RectangleLabels></View>"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("PREANNOTATE_"):
            monkeypatch.delenv(key)


@pytest.fixture
def ls() -> Iterator[FakeLabelStudio]:
    fake = FakeLabelStudio()
    fake.projects[PROJECT] = {"id": PROJECT, "label_config": CONFIG, "model_version": ""}
    with serving(fake):
        yield fake


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        sqlite = SqliteJobStore(tmp_path / "jobs.db")
        yield sqlite
        sqlite.close()
        return
    server = RedisServer()
    server.start()
    try:
        redis_store = RedisJobStore(server.url)
        yield redis_store
        redis_store.close()
    finally:
        server.cleanup()


def run_until_drained(store: JobStore, registry: ModelRegistry, settings: Settings, work_dir: Path) -> None:
    config = WorkerConfig(concurrency=1, lease_s=30.0, heartbeat_s=5.0, limits=MediaLimits(), work_dir=work_dir)
    backends = Backends(settings)
    pool = WorkerPool(store, registry, Fetcher(settings.fetch_policy()), config, backends)
    pool.start()
    try:
        deadline = time.monotonic() + 30
        while (store.depth() or pool.busy) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pool.stop(grace_s=5.0)
        backends.close()


def test_a_cold_start_job_runs_under_the_projects_labels(store: JobStore, ls: FakeLabelStudio, tmp_path: Path) -> None:
    settings = Settings(
        local_roots=[tmp_path],
        model="fake:gridprompts",
        label_studio_url=ls.base_url,
        label_studio_api_key=SecretStr(LEGACY_TOKEN),
    )
    url = photo(tmp_path)
    tasks = [ls.add_task(PROJECT, {"image": url}) for _ in range(2)]
    body = {
        "items": [
            {"name": f"t{task}", "slots": [{"url": url}], "external_ids": {"label_studio": str(task)}} for task in tasks
        ],
        "destinations": [{"backend": "label_studio", "project": PROJECT}],
    }
    catalog = RemoteModels(list, settings.model)  # no worker has published anything yet
    job, _ = create_job_from(
        JobCreate.model_validate(body), settings=settings, store=store, models=catalog, tenant=TENANT
    )
    assert job.spec.prompts is None  # the API could not tell the model takes prompts, nor read the project
    assert job.spec.model_version is None

    grid = GridPrompts()
    batcher = DynamicBatcher(grid, max_batch_size=4, max_wait_ms=0)
    batcher.start()
    registry = ModelRegistry([LoadedModel("fake:gridprompts", batcher)])
    try:
        run_until_drained(store, registry, settings, tmp_path)
    finally:
        registry.close()

    results = store.results(tenant=TENANT, job_id=job.id) or []
    assert [r.state for r in results] == [ItemState.SUCCEEDED] * 2, results
    record = store.get_job(tenant=TENANT, job_id=job.id)
    assert record is not None
    assert record.spec.prompts is not None
    assert record.spec.prompts.class_names == ("Car", "Pedestrian")
    assert record.spec.model_version == f"{BASE_VERSION}+{record.spec.prompts.key}"
    assert record.spec.class_names == ("Car", "Pedestrian")
    assert list(grid.encoded) == [record.spec.prompts.key]  # both items ran on the one pinned view
    for task in tasks:
        (prediction,) = ls.predictions_of(task)
        labels = sorted(label for region in prediction["result"] for label in region["value"]["rectanglelabels"])
        assert labels == ["Car", "Pedestrian"]
