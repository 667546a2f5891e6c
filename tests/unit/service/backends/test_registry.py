"""The backend registry: one factory per destination, checks at submit, and the records job results show."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.backends.base import Backend, EncordPushRecord, LabelStudioPushRecord, V7PushRecord
from service.backends.registry import BACKENDS, Backends, check_destination
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.spec.requests import Destination, ItemIn


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("PREANNOTATE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def item(**external_ids: str) -> ItemIn:
    return ItemIn.model_validate(
        {"name": "a.jpg", "slots": [{"url": "file:///a.jpg"}], "external_ids": external_ids or None}
    )


def configured(tmp_path: Path) -> Settings:
    ontology = tmp_path / "ontology.json"
    ontology.write_text("{}")
    return Settings(
        label_studio_url="http://ls.example.com",
        label_studio_api_key="key",
        v7_api_key="key",
        v7_team_slug="acme",
        v7_dataset_slug="faces",
        v7_dataset_id=7,
        encord_project_hash="p",
        encord_ontology_file=ontology,
    )


def test_every_destination_a_job_may_name_has_a_backend() -> None:
    named = set(Destination.model_fields["backend"].annotation.__args__)  # type: ignore[union-attr]
    assert set(BACKENDS) == named
    backends = Backends(Settings())
    for name in BACKENDS:
        backend = backends.get(name)
        assert isinstance(backend, Backend)
        assert backend.name == name
        assert backends.get(name) is backend  # built once per process
    backends.close()  # nothing was connected: closing builds nothing


@pytest.mark.parametrize("backend", ["label_studio", "v7", "encord"])
def test_an_unconfigured_destination_is_refused(backend: str) -> None:
    destination = Destination.model_validate({"backend": backend, "project": 1})
    with pytest.raises(PreannotateError) as info:
        check_destination(Settings(), destination, [item(label_studio="1", encord="h")])
    assert info.value.code is ErrorCode.BACKEND_NOT_CONFIGURED


@pytest.mark.parametrize(
    ("destination", "external_ids", "message"),
    [
        ({"backend": "label_studio"}, {"label_studio": "1"}, "needs its project id"),
        ({"backend": "label_studio", "project": 1}, {"encord": "h"}, "label_studio task id"),
        ({"backend": "encord"}, {"label_studio": "1"}, "encord data hash"),
    ],
)
def test_items_a_tool_cannot_place_are_refused(
    tmp_path: Path, destination: dict[str, object], external_ids: dict[str, str], message: str
) -> None:
    with pytest.raises(PreannotateError) as info:
        check_destination(configured(tmp_path), Destination.model_validate(destination), [item(**external_ids)])
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert message in info.value.message


def test_v7_finds_items_by_name(tmp_path: Path) -> None:
    check_destination(configured(tmp_path), Destination(backend="v7"), [item()])


def test_records_keep_the_result_shape() -> None:
    assert LabelStudioPushRecord(task=3, outcome="created", id=9, dropped={"cat": 1}).to_json() == {
        "backend": "label_studio",
        "task": 3,
        "outcome": "created",
        "id": 9,
        "dropped": {"cat": 1},
    }
    assert V7PushRecord(item="i", imported=2, skipped_reason=None).to_json() == {
        "backend": "v7",
        "item": "i",
        "imported": 2,
        "skipped_reason": None,
    }
    assert V7PushRecord(item="i", imported=2, skipped_reason=None, registered="upload").to_json()["registered"] == (
        "upload"
    )
    assert EncordPushRecord(data_hash="d", label_hash="l", objects=1, bundle_items=2).to_json() == {
        "backend": "encord",
        "data_hash": "d",
        "label_hash": "l",
        "objects": 1,
        "bundle_items": 2,
    }
