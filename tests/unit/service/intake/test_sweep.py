"""The Label Studio reconciliation sweep against the fake LS: jobs for tasks lacking this model version's
prediction, once, however often it runs; young tasks left to their webhook; failures reported."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.backends.label_studio import LabelStudioClient, LabelStudioConfig
from service.config import Settings
from service.intake import label_studio as ls
from service.intake.config import WebhookConfig
from service.intake.sweep import LabelStudioSweep, start_label_studio_sweep
from service.loaded_models import ModelRegistry
from service.queue.sqlite_store import SqliteJobStore
from tests.unit.service.backends.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio, serving
from tests.unit.service.intake.helpers import MODEL_VERSION, make_models
from tests.unit.service.intake.payloads import IMAGE_CONFIG

PROJECT = 17
OLD = "2026-01-01T00:00:00Z"
NOW = 1_800_000_000.0  # 2027-01-15, well after OLD


@pytest.fixture
def fake() -> Iterator[FakeLabelStudio]:
    fake = FakeLabelStudio()
    fake.projects[PROJECT] = {"id": PROJECT, "label_config": IMAGE_CONFIG, "model_version": ""}
    with serving(fake):
        yield fake


@pytest.fixture
def registry() -> Iterator[ModelRegistry]:
    models, batcher = make_models()
    yield models
    batcher.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    store = SqliteJobStore(tmp_path / "jobs.db")
    yield store
    store.close()


def sweep_for(
    fake: FakeLabelStudio, store: SqliteJobStore, registry: ModelRegistry, **config: object
) -> LabelStudioSweep:
    settings = Settings(label_studio_url=fake.base_url, label_studio_api_key=SecretStr(LEGACY_TOKEN))
    client = LabelStudioClient(LabelStudioConfig(url=fake.base_url, api_key=SecretStr(LEGACY_TOKEN)))
    options = {"label_studio_projects": (PROJECT,), "sweep_min_age_s": 300.0, **config}
    return LabelStudioSweep(
        settings=settings,
        config=WebhookConfig(**options),  # type: ignore[arg-type]
        store=store,
        models=lambda: registry,
        tenant="webhooks",
        client=client,
        clock=lambda: NOW,
    )


def add_task(fake: FakeLabelStudio, image: str, *, created_at: str = OLD, version: str | None = None) -> int:
    predictions = [{"model_version": version, "result": []}] if version else []
    task_id = fake.add_task(PROJECT, {"image": image}, predictions)
    fake.tasks[task_id].update(created_at=created_at, updated_at=created_at)
    return task_id


def test_tasks_without_this_versions_prediction_become_jobs_once(
    fake: FakeLabelStudio, store: SqliteJobStore, registry: ModelRegistry
) -> None:
    missing = add_task(fake, "/data/upload/1/a.jpg")
    add_task(fake, "/data/upload/1/b.jpg", version=MODEL_VERSION)  # done already
    other_version = add_task(fake, "/data/upload/1/c.jpg", version="someone-else-1")
    add_task(fake, "/data/upload/1/d.jpg", created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 10)))
    broken = fake.add_task(PROJECT, {"text": "no image"})
    sweep = sweep_for(fake, store, registry)

    (report,) = sweep.sweep_once()
    assert (report.submitted, report.duplicates, report.predicted, report.too_young) == (2, 0, 1, 1)
    assert list(report.failed) == [broken]
    assert report.error is None

    (again,) = sweep.sweep_once()  # nothing pushed yet (no workers): the same tasks, the same jobs
    assert (again.submitted, again.duplicates) == (0, 2)

    leases = store.lease("w", max_items=10, lease_s=60)
    assert sorted((lease.item.external_ids or {})["label_studio"] for lease in leases) == sorted(
        [str(missing), str(other_version)]
    )
    slot = leases[0].item.model_dump(exclude_none=True)["slots"][0]
    assert slot["url"].startswith(f"label-studio+{fake.base_url}/data/upload/1/")
    assert leases[0].spec.to_stored()["destinations"] == [{"backend": "label_studio", "project": PROJECT}]
    sweep.stop()


def test_a_one_task_delivery_and_the_sweep_share_a_job(
    fake: FakeLabelStudio, store: SqliteJobStore, registry: ModelRegistry
) -> None:
    task_id = add_task(fake, "/data/upload/1/a.jpg")
    sweep = sweep_for(fake, store, registry)
    (report,) = sweep.sweep_once()
    assert report.submitted == 1
    # What the webhook route computes for a TASKS_CREATED delivery of that one task:
    (lease,) = store.lease("w", max_items=1, lease_s=60)
    key = ls.delivery_idem(PROJECT, ls.TASKS_CREATED, [(task_id, OLD)], lease.spec)
    _, created = store.create_job(tenant="webhooks", idem_key=key, spec=lease.spec, items=[lease.item])
    assert created is False


def test_failures_are_reported_not_raised(
    fake: FakeLabelStudio, store: SqliteJobStore, registry: ModelRegistry
) -> None:
    fake.projects[PROJECT]["label_config"] = '<View><Text name="t" value="$text"/></View>'
    (report,) = sweep_for(fake, store, registry).sweep_once()
    assert report.error is not None
    assert "RectangleLabels" in report.error
    del fake.projects[PROJECT]
    (gone,) = sweep_for(fake, store, registry).sweep_once()
    assert gone.error is not None
    assert gone.error.startswith("label studio:")


def test_nothing_while_models_load(fake: FakeLabelStudio, store: SqliteJobStore) -> None:
    settings = Settings(label_studio_url=fake.base_url, label_studio_api_key=SecretStr(LEGACY_TOKEN))
    sweep = LabelStudioSweep(
        settings=settings,
        config=WebhookConfig(label_studio_projects=(PROJECT,)),
        store=store,
        models=lambda: None,
        tenant="t",
    )
    assert sweep.sweep_once() == []


def test_the_background_thread_sweeps_every_interval(
    fake: FakeLabelStudio, store: SqliteJobStore, registry: ModelRegistry
) -> None:
    add_task(fake, "/data/upload/1/a.jpg")
    sweep = sweep_for(fake, store, registry, sweep_interval_s=0.05)
    sweep.start()
    deadline = time.monotonic() + 10
    while store.depth() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    sweep.stop(timeout_s=5)
    assert store.depth() == 1


def test_start_is_a_no_op_unless_configured(store: SqliteJobStore) -> None:
    assert start_label_studio_sweep(Settings(), store, lambda: None, tenant="t") is None
