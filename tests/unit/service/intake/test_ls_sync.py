"""``sync label-studio``'s loop against the fake LS: predictions pushed once, failures named by their URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import SecretStr

from service.backends.label_studio import LabelStudioClient, LabelStudioConfig
from service.config import Settings
from service.intake.ls_sync import SyncOptions, SyncReport, sync_project
from service.pipeline.options import SamplingOptions
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


def run_sync(fake: FakeLabelStudio, work_dir: Path) -> SyncReport:
    settings = Settings(work_dir=work_dir)
    options = SyncOptions(project_id=PROJECT, model_spec="fake:centre", sampling=SamplingOptions(), threshold=0.5)
    with LabelStudioClient(LabelStudioConfig(url=fake.base_url, api_key=SecretStr(LEGACY_TOKEN))) as client:
        return sync_project(client, CentreBox(), options, settings)


def test_sync_pushes_each_task_once(fake: FakeLabelStudio, tmp_path: Path) -> None:
    task = fake.add_task(PROJECT, {"image": "/data/upload/1/a.png"})
    first = run_sync(fake, tmp_path)
    second = run_sync(fake, tmp_path)
    assert (first.created, second.created, second.skipped) == (1, 0, 1)
    (prediction,) = fake.predictions_of(task)
    assert prediction["result"][0]["value"]["rectanglelabels"] == ["Face"]
    assert fake.projects[PROJECT]["model_version"] == "centre-00000001"


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
