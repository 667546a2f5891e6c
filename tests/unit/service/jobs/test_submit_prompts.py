"""``prepare_job`` pins an open-vocabulary model's prompts from the job's destination project (fake V7 API, an Encord
ontology file) when the job gives none; fixed-class models' jobs are left exactly as they were."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.jobs.submit import enqueue, idempotency_key_idem, prepare_job
from service.queue.sqlite_store import SqliteJobStore
from service.remote_models import JobModel, JobSegmenter
from service.spec.job import JobSpec
from service.spec.requests import JobCreate
from tests.builders import CAR_PERSON_ONTOLOGY_JSON
from tests.fakes.http import serving
from tests.fakes.promptable import BASE_VERSION
from tests.fakes.v7_server import FakeV7

V7_KEY = "CANARY-v7-key-" + "p" * 24
OPEN = JobModel("fake:gridprompts", BASE_VERSION, (), open_vocabulary=True)
FIXED = JobModel("fake:centre", "centre-00000001", ("Car", "Person"))
COLD = JobModel("fake:gridprompts", None, None)  # distributed: no worker has published it yet
TENANT = "tenant-a"


class Models:
    def __init__(self, model: JobModel) -> None:
        self.model = model

    def for_job(self, name: str | None) -> JobModel:
        return self.model

    def segmenter_for_job(self, name: str | None) -> JobSegmenter | None:
        return None


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("PREANNOTATE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def v7() -> Iterator[FakeV7]:
    app = FakeV7(api_key=V7_KEY, team="acme", dataset_slug="sites", dataset_id=7)
    with serving(app):
        yield app
    assert app.errors == [], app.errors


def v7_settings(fake: FakeV7) -> Settings:
    return Settings(
        v7_api_key=SecretStr(V7_KEY),
        v7_team_slug="acme",
        v7_dataset_slug="sites",
        v7_dataset_id=7,
        v7_base_url=fake.base_url + "/api",
    )


def job(backend: str, **body: Any) -> JobCreate:
    items = [{"name": "a.jpg", "slots": [{"url": "https://example.com/a.jpg"}], "external_ids": {"encord": "d" * 36}}]
    return JobCreate.model_validate({"items": items, "destinations": [{"backend": backend}], **body})


def test_an_open_vocabulary_job_is_prompted_with_the_v7_datasets_classes(v7: FakeV7) -> None:
    v7.add_class("hard hat", ["bounding_box"], [7])
    v7.add_class("PED", ["bounding_box"], [7])
    spec = prepare_job(job("v7"), settings=v7_settings(v7), models=Models(OPEN)).spec
    assert spec.prompts is not None
    assert spec.prompts.class_names == ("hard hat", "PED")
    assert spec.class_names == ("hard hat", "PED")
    assert spec.model_version == f"{BASE_VERSION}+{spec.prompts.key}"
    stored = JobSpec.from_stored(spec.to_stored())  # what a worker reads back
    assert stored.prompts == spec.prompts

    # other classes, another view: its version names the prompts (the keys leave them out: SERVER_PINNED's reasons)
    v7.add_class("cone", ["bounding_box"], [7])
    again = prepare_job(job("v7"), settings=v7_settings(v7), models=Models(OPEN))
    assert again.spec.prompts is not None
    assert again.spec.prompts.class_names == ("hard hat", "PED", "cone")
    assert again.spec.model_version != spec.model_version


def test_a_v7_failure_refuses_the_job_with_the_backend_error(v7: FakeV7) -> None:
    v7.fail_next(403)
    with pytest.raises(PreannotateError) as caught:
        prepare_job(job("v7"), settings=v7_settings(v7), models=Models(OPEN))
    assert caught.value.code is ErrorCode.BACKEND_AUTH_FAILED


def test_an_open_vocabulary_job_is_prompted_with_the_encord_ontology(tmp_path: Path) -> None:
    path = tmp_path / "ontology.json"
    path.write_text(json.dumps(CAR_PERSON_ONTOLOGY_JSON))
    settings = Settings(
        encord_project_hash="p" * 36, encord_ontology_file=path, encord_bearer_token=SecretStr("t" * 40)
    )
    spec = prepare_job(job("encord"), settings=settings, models=Models(OPEN)).spec
    assert spec.class_names == ("Car", "Person")


def test_fixed_class_jobs_are_untouched_and_open_vocabulary_ones_without_a_destination_refused(v7: FakeV7) -> None:
    fixed = prepare_job(job("v7"), settings=v7_settings(v7), models=Models(FIXED)).spec
    assert (fixed.prompts, fixed.class_names, fixed.model_version) == (None, ("Car", "Person"), "centre-00000001")
    assert "prompts" not in fixed.to_stored()
    no_destination = JobCreate.model_validate({"items": [{"name": "a", "slots": [{"url": "https://e.com/a.jpg"}]}]})
    with pytest.raises(PreannotateError) as refused:  # nothing to take prompts from: refused, not run unprompted
        prepare_job(no_destination, settings=v7_settings(v7), models=Models(OPEN))
    assert refused.value.code is ErrorCode.INVALID_PROMPTS
    assert v7.bodies == []  # nothing was asked of V7


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    sqlite = SqliteJobStore(tmp_path / "jobs.db")
    yield sqlite
    sqlite.close()


def test_a_client_keys_retry_after_the_projects_labels_changed_is_the_same_job(
    v7: FakeV7, store: SqliteJobStore
) -> None:
    settings, key = v7_settings(v7), idempotency_key_idem("retry-1")
    v7.add_class("PED", ["bounding_box"], [7])
    first, created = enqueue(
        prepare_job(job("v7"), settings=settings, models=Models(OPEN)),
        settings=settings,
        store=store,
        tenant=TENANT,
        idem_key=key,
    )
    assert created

    v7.add_class("cone", ["bounding_box"], [7])  # someone edits the dataset's classes before the client retries
    retry = prepare_job(job("v7"), settings=settings, models=Models(OPEN))
    assert retry.project_prompts
    assert enqueue(retry, settings=settings, store=store, tenant=TENANT, idem_key=key) == (first, False)

    # prompts the body sends are the body's: other ones under the same key are another body
    sent = prepare_job(job("v7", prompts="PED, cone"), settings=settings, models=Models(OPEN))
    assert not sent.project_prompts
    with pytest.raises(PreannotateError) as reused:
        enqueue(sent, settings=settings, store=store, tenant=TENANT, idem_key=key)
    assert reused.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED


def test_a_cold_start_job_is_found_again_by_its_content_once_the_model_is_published(
    v7: FakeV7, store: SqliteJobStore
) -> None:
    settings = v7_settings(v7)
    v7.add_class("PED", ["bounding_box"], [7])
    cold = prepare_job(job("v7"), settings=settings, models=Models(COLD))  # no worker published: no prompts yet
    assert cold.spec.prompts is None
    queued, _ = enqueue(cold, settings=settings, store=store, tenant=TENANT, idem_key=cold.content_key())

    published = prepare_job(job("v7"), settings=settings, models=Models(OPEN))
    assert published.content_key() == cold.content_key()
    assert enqueue(published, settings=settings, store=store, tenant=TENANT, idem_key=published.content_key()) == (
        queued,
        False,
    )  # not a second job for the same items

    # once its worker pinned the view, a project prompted otherwise since is another run
    assert published.spec.model_version is not None
    store.pin_model(queued.id, version=published.spec.model_version, class_names=["PED"])
    v7.add_class("cone", ["bounding_box"], [7])
    edited = prepare_job(job("v7"), settings=settings, models=Models(OPEN))
    again, created = enqueue(edited, settings=settings, store=store, tenant=TENANT, idem_key=edited.content_key())
    assert created
    assert again.id != queued.id
