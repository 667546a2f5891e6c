"""A job's destination project gives an open-vocabulary model its prompts: Label Studio's receiving labels (fake LS
REST), V7's dataset classes (the fake Darwin API), Encord's ontology objects (the ontology file pushes read)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service.backends.project_prompts import encord_prompts, project_prompts
from service.config import Settings
from service.convert.encord_ontology import EncordOntology
from service.errors import ErrorCode, PreannotateError
from service.spec.requests import Destination
from tests.builders import CAR_PERSON_ONTOLOGY_JSON
from tests.fakes.http import serving as serving_v7
from tests.fakes.v7_server import FakeV7
from tests.unit.service.backends.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio, serving

V7_KEY = "CANARY-v7-key-" + "p" * 24
CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="mask" toName="image"><Label value="road"/></BrushLabels>
<RectangleLabels name="label" toName="image"><Label value="hard hat"/><Label value="PED" prompt="pedestrian"/>
</RectangleLabels></View>"""
ONTOLOGY = {
    "objects": [
        *CAR_PERSON_ONTOLOGY_JSON["objects"],  # type: ignore[misc]
        {"id": "3", "name": "Lane", "color": "#16406C", "shape": "polygon", "featureNodeHash": "lanePoly"},
        {"id": "4", "name": "car", "color": "#16406C", "shape": "bitmask", "featureNodeHash": "carMask1"},
        {"id": "5", "name": "Sign", "color": "#16406C", "shape": "point", "featureNodeHash": "signPnt1"},
    ],
    "classifications": [],
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("PREANNOTATE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def ls() -> Iterator[FakeLabelStudio]:
    fake = FakeLabelStudio()
    fake.projects[3] = {"id": 3, "label_config": CONFIG, "model_version": ""}
    with serving(fake):
        yield fake


@pytest.fixture
def v7() -> Iterator[FakeV7]:
    app = FakeV7(api_key=V7_KEY, team="acme", dataset_slug="sites", dataset_id=7)
    with serving_v7(app):
        yield app


def pairs(prompts: Any) -> list[tuple[str, tuple[str, ...]]]:
    return [(c.name, c.prompts) for c in prompts.classes]


def v7_settings(fake: FakeV7, **extra: Any) -> Settings:
    return Settings(
        v7_api_key=SecretStr(V7_KEY),
        v7_team_slug="acme",
        v7_dataset_slug="sites",
        v7_dataset_id=7,
        v7_base_url=fake.base_url + "/api",
        **extra,
    )


def test_no_destination_no_prompts() -> None:
    assert project_prompts([], Settings()) is None


@pytest.mark.parametrize(
    ("masks", "expected"),
    [
        (False, [("hard hat", ("hard hat",)), ("PED", ("pedestrian",))]),
        (True, [("road", ("road",)), ("hard hat", ("hard hat",)), ("PED", ("pedestrian",))]),
    ],
)
def test_label_studio_gives_the_projects_receiving_labels(
    ls: FakeLabelStudio, masks: bool, expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    settings = Settings(label_studio_url=ls.base_url, label_studio_api_key=SecretStr(LEGACY_TOKEN))
    prompts = project_prompts([Destination(backend="label_studio", project=3)], settings, masks=masks)
    assert pairs(prompts) == expected


@pytest.mark.parametrize(("project", "code"), [(4, ErrorCode.BACKEND_REJECTED), (3, ErrorCode.BACKEND_AUTH_FAILED)])
def test_label_studio_failures_are_backend_errors(ls: FakeLabelStudio, project: int, code: ErrorCode) -> None:
    key = LEGACY_TOKEN if code is ErrorCode.BACKEND_REJECTED else "wrong-token-0123456789"
    settings = Settings(label_studio_url=ls.base_url, label_studio_api_key=SecretStr(key))
    with pytest.raises(PreannotateError) as caught:
        project_prompts([Destination(backend="label_studio", project=project)], settings)
    assert caught.value.code is code


def test_v7_gives_the_datasets_box_classes(v7: FakeV7) -> None:
    v7.add_class("hard hat", ["bounding_box"], [7])
    v7.add_class("Lane", ["polygon"], [7])
    v7.add_class("other dataset's", ["bounding_box"], [8])
    v7.add_class("label", ["tag"], [7])
    v7.add_class("PED", ["bounding_box", "polygon"], [7, 8])
    v7.add_class("ped", ["polygon"], [7])  # one name, another type: one class
    destination = [Destination(backend="v7")]
    assert pairs(project_prompts(destination, v7_settings(v7))) == [("hard hat", ("hard hat",)), ("PED", ("PED",))]
    with_masks = project_prompts(destination, v7_settings(v7), masks=True, overrides={"ped": "pedestrian"})
    assert pairs(with_masks) == [("hard hat", ("hard hat",)), ("Lane", ("Lane",)), ("PED", ("pedestrian",))]
    assert v7.errors == []


def test_v7_without_classes_or_refusing_the_key(v7: FakeV7) -> None:
    with pytest.raises(PreannotateError) as caught:
        project_prompts([Destination(backend="v7")], v7_settings(v7))
    assert caught.value.code is ErrorCode.INVALID_PROMPTS
    assert "'sites' has no bounding_box class" in caught.value.message
    v7.fail_next(403)  # V7's answer to a revoked key
    with pytest.raises(PreannotateError) as caught:
        project_prompts([Destination(backend="v7")], v7_settings(v7))
    assert caught.value.code is ErrorCode.BACKEND_AUTH_FAILED


def test_encord_gives_the_ontologys_objects(tmp_path: Path) -> None:
    path = tmp_path / "ontology.json"
    path.write_text(json.dumps({"editor_ontology": ONTOLOGY}))  # as a project record wraps it
    settings = Settings(encord_project_hash="p" * 36, encord_ontology_file=path)
    destination = [Destination(backend="encord")]
    assert pairs(project_prompts(destination, settings)) == [("Car", ("Car",)), ("Person", ("Person",))]
    masked = project_prompts(destination, settings, masks=True)
    assert masked is not None
    assert masked.class_names == ("Car", "Person", "Lane")  # "car" (bitmask) is Car; a point is no detection
    aliased = settings.model_copy(update={"encord_class_aliases": {"pedestrian": "Person", "walker": "persBBx1"}})
    assert pairs(project_prompts(destination, aliased))[1] == ("Person", ("pedestrian", "walker"))
    # a model class that is another object's name stays that object's prompt (a prompt names one class)
    crossed = settings.model_copy(update={"encord_class_aliases": {"car": "Person", "walker": "Person"}})
    assert pairs(project_prompts(destination, crossed)) == [("Car", ("Car",)), ("Person", ("walker",))]


def test_encord_without_a_usable_ontology(tmp_path: Path) -> None:
    destination = [Destination(backend="encord")]
    with pytest.raises(PreannotateError) as caught:
        project_prompts(destination, Settings(encord_project_hash="p" * 36))
    assert caught.value.code is ErrorCode.BACKEND_NOT_CONFIGURED
    path = tmp_path / "ontology.json"
    path.write_text("{")
    with pytest.raises(PreannotateError) as caught:
        project_prompts(destination, Settings(encord_project_hash="p" * 36, encord_ontology_file=path))
    assert caught.value.code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert str(path) in caught.value.message
    points = EncordOntology.from_json({"objects": [ONTOLOGY["objects"][-1]]})  # type: ignore[index]
    with pytest.raises(PreannotateError) as caught:
        encord_prompts(points)
    assert caught.value.code is ErrorCode.INVALID_PROMPTS
