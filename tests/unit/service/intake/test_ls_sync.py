"""``sync label-studio``'s loop against the fake LS: predictions pushed once, failures named by their URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import SecretStr

from models.prompts import PromptSet
from service.backends.label_studio import LabelStudioClient, LabelStudioConfig
from service.config import Settings
from service.errors import ErrorCode, PartialMediaError, PreannotateError
from service.intake.ls_sync import SyncOptions, SyncReport, sync_project
from service.pipeline.options import SamplingOptions
from tests.fakes.promptable import BASE_VERSION, GridPrompts
from tests.unit.service.backends.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio, serving
from tests.unit.service.backends.test_ls_ml_backend import CONFIG, CentreBox

PROJECT = 7


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeLabelStudio]:
    fake = FakeLabelStudio()
    fake.projects[PROJECT] = {"id": PROJECT, "label_config": CONFIG, "model_version": ""}
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.full((40, 80, 3), 128, np.uint8))
    fake.media["/data/upload/1/a.png"] = png.read_bytes()
    with serving(fake):
        yield fake


def run_sync(
    fake: FakeLabelStudio,
    work_dir: Path,
    warnings: list[tuple[int, PreannotateError]] | None = None,
    class_thresholds: dict[str, float] | None = None,
) -> SyncReport:
    settings = Settings(work_dir=work_dir)
    options = SyncOptions(
        project_id=PROJECT,
        model_spec="fake:centre",
        sampling=SamplingOptions(),
        threshold=0.5,
        class_thresholds=class_thresholds,
    )
    on_warning = None if warnings is None else lambda task, warning: warnings.append((task, warning))
    with LabelStudioClient(LabelStudioConfig(url=fake.base_url, api_key=SecretStr(LEGACY_TOKEN))) as client:
        return sync_project(client, CentreBox(), options, settings, on_warning=on_warning)


def test_sync_pushes_each_task_once(fake: FakeLabelStudio, tmp_path: Path) -> None:
    task = fake.add_task(PROJECT, {"image": "/data/upload/1/a.png"})
    first = run_sync(fake, tmp_path)
    second = run_sync(fake, tmp_path)
    assert (first.created, second.created, second.skipped) == (1, 0, 1)
    (prediction,) = fake.predictions_of(task)
    assert prediction["result"][0]["value"]["rectanglelabels"] == ["Face"]
    assert fake.projects[PROJECT]["model_version"] == "centre-00000001"


@pytest.mark.parametrize(("face_threshold", "boxes"), [(0.95, 0), (0.85, 1)])
def test_sync_keeps_each_class_at_its_threshold(
    fake: FakeLabelStudio, tmp_path: Path, face_threshold: float, boxes: int
) -> None:
    task = fake.add_task(PROJECT, {"image": "/data/upload/1/a.png"})
    run_sync(fake, tmp_path, class_thresholds={"face": face_threshold})  # CentreBox scores its face 0.9
    (prediction,) = fake.predictions_of(task)
    assert len(prediction["result"]) == boxes


def test_sync_refuses_a_threshold_for_a_class_the_model_lacks_before_any_task(
    fake: FakeLabelStudio, tmp_path: Path
) -> None:
    task = fake.add_task(PROJECT, {"image": "/data/upload/1/a.png"})
    with pytest.raises(PreannotateError) as info:
        run_sync(fake, tmp_path, class_thresholds={"cat": 0.4})
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "unknown class(es) in thresholds cat" in str(info.value)
    assert fake.predictions_of(task) == []


def test_a_decoder_surprise_is_reported_by_url_not_scratch_path(
    fake: FakeLabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = fake.add_task(PROJECT, {"image": "/data/upload/1/a.png"})
    bad = fake.add_task(PROJECT, {"image": "/data/upload/1/b.png?sig=canary-sig"})
    broken = cv2.imencode(".png", np.zeros((30, 30, 3), np.uint8))[1].tobytes()
    fake.media["/data/upload/1/b.png?sig=canary-sig"] = broken
    real = __import__("service.pipeline.images", fromlist=["load_rgb"]).load_rgb

    def boom_on_b(path: Path, limits: object) -> object:
        if path.read_bytes() == broken:
            raise ValueError(f"cannot decode {path}")
        return real(path, limits)

    monkeypatch.setattr("service.pipeline.images.load_rgb", boom_on_b)
    report = run_sync(fake, tmp_path)

    assert report.created == 1
    assert len(fake.predictions_of(good)) == 1
    error = report.failed[bad]
    assert error.code.code == "internal"
    assert error.message.startswith(f"task-{bad}: {fake.base_url}/data/upload/1/b.png#")
    assert "ValueError: cannot decode" in error.message  # the CLI prints the detail
    assert str(tmp_path) not in error.message
    assert "preannotate-ls-" not in error.message
    assert "canary-sig" not in error.message


def test_reader_errors_and_warnings_name_the_url(
    fake: FakeLabelStudio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = fake.add_task(PROJECT, {"image": "/data/upload/1/a.png?sig=canary-sig"})
    corrupt = fake.add_task(PROJECT, {"image": "/data/upload/1/c.png"})
    fake.media["/data/upload/1/a.png?sig=canary-sig"] = fake.media["/data/upload/1/a.png"]
    fake.media["/data/upload/1/c.png"] = cv2.imencode(".png", np.zeros((30, 30, 3), np.uint8))[1].tobytes()
    calls: list[Path] = []

    def failing(path: Path, limits: object) -> object:  # a reader's own errors name the file it read
        calls.append(path)
        if len(calls) == 1:
            raise PartialMediaError(f"{path}: decoding failed after 0 of 1 frames")
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: not a PNG")

    monkeypatch.setattr("service.pipeline.images.load_rgb", failing)
    warnings: list[tuple[int, PreannotateError]] = []
    report = run_sync(fake, tmp_path, warnings)

    ((task, warning),) = warnings
    assert task == partial
    assert warning.message.startswith(f"{fake.base_url}/data/upload/1/a.png#")
    assert report.created == 1  # pushed with what decoded (nothing, here)
    error = report.failed[corrupt]
    assert error.code is ErrorCode.CORRUPT_MEDIA
    assert error.message.startswith(f"{fake.base_url}/data/upload/1/c.png#")
    assert error.message.endswith(": not a PNG")
    for text in (warning.message, error.message):
        assert str(tmp_path) not in text
        assert "canary-sig" not in text


PROMPT_CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image">
  <Label value="hard hat"/><Label value="PED" prompt="pedestrian"/><Label value="vehicle" predicted_values="car"/>
  <Label value="car"/>
</RectangleLabels></View>"""


def test_an_open_vocabulary_model_is_prompted_with_the_projects_labels(fake: FakeLabelStudio, tmp_path: Path) -> None:
    fake.projects[PROJECT]["label_config"] = PROMPT_CONFIG
    task = fake.add_task(PROJECT, {"image": "/data/upload/1/a.png"})
    model = GridPrompts()
    options = SyncOptions(
        project_id=PROJECT,
        model_spec="fake:gridprompts",
        sampling=SamplingOptions(),
        threshold=0.0,
        aliases={"helmet": "hard hat"},
        prompt_map={"vehicle": ["truck", "bus"]},
    )
    with LabelStudioClient(LabelStudioConfig(url=fake.base_url, api_key=SecretStr(LEGACY_TOKEN))) as client:
        report = sync_project(client, model, options, Settings(work_dir=tmp_path))
    assert report.prompts is not None
    assert [(c.name, c.prompts) for c in report.prompts.classes] == [
        ("hard hat", ("helmet",)),
        ("PED", ("pedestrian",)),
        ("vehicle", ("truck", "bus")),
        ("car", ("car",)),
    ]
    (prediction,) = fake.predictions_of(task)
    # GridPrompts puts class i in column i: every box lands under its own label, "car" under car (not vehicle)
    regions = sorted(prediction["result"], key=lambda r: r["value"]["x"])
    assert [r["value"]["rectanglelabels"] for r in regions] == [["hard hat"], ["PED"], ["vehicle"], ["car"]]
    version = f"{BASE_VERSION}+{report.prompts.key}"
    assert (report.model_version, prediction["model_version"]) == (version, version)
    assert fake.projects[PROJECT]["model_version"] == version
    assert list(model.encoded.values()) == [1]


def test_a_project_without_labels_for_an_open_vocabulary_model(fake: FakeLabelStudio, tmp_path: Path) -> None:
    fake.projects[PROJECT]["label_config"] = PROMPT_CONFIG.replace('prompt="pedestrian"', 'prompt=""')
    options = SyncOptions(project_id=PROJECT, model_spec="fake:gridprompts", sampling=SamplingOptions(), threshold=0)
    config = LabelStudioConfig(url=fake.base_url, api_key=SecretStr(LEGACY_TOKEN))
    with LabelStudioClient(config) as client, pytest.raises(PreannotateError) as caught:
        sync_project(client, GridPrompts(), options, Settings(work_dir=tmp_path))
    assert caught.value.code is ErrorCode.INVALID_PROMPTS


VEHICLE_AND_CAR = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image">
  <Label value="Vehicle" predicted_values="car,truck"/><Label value="Car"/>
</RectangleLabels></View>"""


@pytest.mark.parametrize(
    ("prompts", "classes", "labels"),
    [
        # from the labels: "car" is Car's, so Vehicle is asked for the truck alone
        (None, [("Vehicle", ("truck",)), ("Car", ("Car",))], [["Vehicle"], ["Car"]]),
        # explicit: the names are labels (or dropped, like "bus"), never sent on by predicted_values
        ("Car=automobile, bus, Vehicle=lorry", [("Car", ("automobile",)), ("bus", ("bus",))], [["Car"], ["Vehicle"]]),
    ],
)
def test_a_prompted_sync_writes_each_class_under_its_own_label(
    fake: FakeLabelStudio,
    tmp_path: Path,
    prompts: str | None,
    classes: list[tuple[str, tuple[str, ...]]],
    labels: list[list[str]],
) -> None:
    fake.projects[PROJECT]["label_config"] = VEHICLE_AND_CAR
    task = fake.add_task(PROJECT, {"image": "/data/upload/1/a.png"})
    options = SyncOptions(
        project_id=PROJECT,
        model_spec="fake:gridprompts",
        sampling=SamplingOptions(),
        threshold=0.0,
        prompts=None if prompts is None else PromptSet.parse(prompts),
    )
    with LabelStudioClient(LabelStudioConfig(url=fake.base_url, api_key=SecretStr(LEGACY_TOKEN))) as client:
        report = sync_project(client, GridPrompts(), options, Settings(work_dir=tmp_path))
    assert report.prompts is not None
    assert [(c.name, c.prompts) for c in report.prompts.classes][: len(classes)] == classes
    (prediction,) = fake.predictions_of(task)
    regions = sorted(prediction["result"], key=lambda r: r["value"]["x"])
    assert [r["value"]["rectanglelabels"] for r in regions] == labels
    assert dict(report.dropped) == ({} if prompts is None else {"bus": 1})


def test_a_project_with_more_labels_than_max_prompt_classes_is_refused_before_any_task(
    fake: FakeLabelStudio, tmp_path: Path
) -> None:
    fake.projects[PROJECT]["label_config"] = PROMPT_CONFIG  # 4 receiving labels
    task = fake.add_task(PROJECT, {"image": "/data/upload/1/a.png"})
    options = SyncOptions(project_id=PROJECT, model_spec="fake:gridprompts", sampling=SamplingOptions(), threshold=0.0)
    settings = Settings(work_dir=tmp_path, max_prompt_classes=3)
    with (
        LabelStudioClient(LabelStudioConfig(url=fake.base_url, api_key=SecretStr(LEGACY_TOKEN))) as client,
        pytest.raises(PreannotateError) as refused,
    ):
        sync_project(client, GridPrompts(), options, settings)
    assert refused.value.code is ErrorCode.INVALID_PROMPTS
    assert "PREANNOTATE_MAX_PROMPT_CLASSES" in refused.value.message
    assert fake.predictions_of(task) == []
