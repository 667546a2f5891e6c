"""``run --prompts``: an open-vocabulary model runs its view for the prompts, and the outputs (COCO categories and
provenance, Darwin annotations) carry the prompts' names and the view's version; prompts a model cannot take, and
a malformed list, exit 2 with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO  # type: ignore[import-untyped, unused-ignore]  # no stubs

from models.base import DetectorOptions
from models.prompts import PromptSet
from service import cli
from service.commands import run as run_module
from service.commands.run import RunRequest, execute_run
from service.config import Settings, get_settings
from service.pipeline.media import ItemSpec, SlotSpec
from service.pipeline.options import SamplingOptions
from tests.fakes.promptable import BASE_VERSION, GridPrompts

PROMPTS = "PED=pedestrian|person walking, car, bus"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), np.full((60, 120, 3), 90, np.uint8))
    return path


@pytest.fixture
def grid(monkeypatch: pytest.MonkeyPatch) -> GridPrompts:
    """What ``--model fake:gridprompts`` loads: no CLI model spec yields a fake, so the loader is replaced."""
    model = GridPrompts()
    monkeypatch.setattr(run_module, "load_detector", lambda spec, options: model)
    return model


def _request(photo: Path, out: Path, output_format: str, prompts: PromptSet | None) -> RunRequest:
    return RunRequest(
        items=[ItemSpec(name="street.png", slots=(SlotSpec("0", (photo,)),))],
        model_spec="fake:gridprompts",
        detector_options=DetectorOptions(),
        sampling=SamplingOptions(),
        threshold=0.75,
        classes=None,
        out=out,
        quiet=True,
        output_format=output_format,
        tracker=None,
        prompts=prompts,
    )


def test_coco_categories_and_provenance_are_the_prompts_names_and_the_views_version(
    grid: GridPrompts, photo: Path, tmp_path: Path
) -> None:
    prompts = PromptSet.parse(PROMPTS)
    out = tmp_path / "out.json"
    output, failures = execute_run(_request(photo, out, "coco", prompts), Settings())

    assert failures == []
    assert output.coco is not None
    coco = COCO(str(out))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["PED", "car", "bus"]
    labels = sorted(coco.cats[a["category_id"]]["name"] for a in coco.anns.values())
    assert labels == ["PED", "car"]  # bus scores 0.7, under the threshold
    assert output.coco["info"]["model_version"] == f"{BASE_VERSION}+{prompts.key}"
    assert list(grid.encoded) == [prompts.key]


def test_darwin_annotations_are_named_by_the_prompts(grid: GridPrompts, photo: Path, tmp_path: Path) -> None:
    prompts = PromptSet.parse(PROMPTS)
    output, _ = execute_run(_request(photo, tmp_path / "darwin", "darwin", prompts), Settings())
    (document,) = output.darwin.values()
    assert sorted(a["name"] for a in document["annotations"]) == ["PED", "car"]
    model = document["annotations"][0]["inference"]["model"]  # type: ignore[typeddict-item]
    assert model["name"] == f"fake:gridprompts@{BASE_VERSION}+{prompts.key}"


def test_an_open_vocabulary_model_without_prompts_exits_2_with_one_line(
    grid: GridPrompts, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["run", str(photo), "--model", "fake:gridprompts", "--out", str(tmp_path / "o.json"), "-q"])
    lines = capsys.readouterr().err.splitlines()
    assert (code, len(lines)) == (2, 1), lines
    assert lines[0].startswith("error: invalid_prompts: model 'fake:gridprompts' is open-vocabulary")
    assert "--prompts" in lines[0]
    assert not (tmp_path / "o.json").exists()


def _preannotate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


@pytest.mark.parametrize(
    ("prompts", "line"),
    [
        (
            "person, car",
            "error: invalid_prompts: model 'builtin:centerface' has classes of its own (face) and takes no prompts; "
            "name an open-vocabulary model, or leave prompts out",
        ),
        ("person, Person", "error: invalid_prompts: --prompts: class 'Person' is given twice"),
        (" , ", "error: invalid_prompts: --prompts: a prompt set needs at least one class"),
    ],
)
def test_prompts_the_model_cannot_take_exit_2_with_one_line(
    photo: Path, tmp_path: Path, prompts: str, line: str
) -> None:
    out = tmp_path / "o.json"
    result = _preannotate("run", photo, "--model", "builtin:centerface", "--prompts", prompts, "--out", out, "-q")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line]
    assert not out.exists()


def test_prompts_over_max_prompt_classes_exit_2_with_one_line(
    grid: GridPrompts, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREANNOTATE_MAX_PROMPT_CLASSES", "2")
    out = tmp_path / "o.json"
    get_settings.cache_clear()  # the process reads its settings once
    try:
        code = cli.main(
            ["run", str(photo), "--model", "fake:gridprompts", "--prompts", "a, b, c", "--out", str(out), "-q"]
        )
    finally:
        get_settings.cache_clear()
    lines = capsys.readouterr().err.splitlines()
    assert (code, lines) == (
        2,
        ["error: invalid_prompts: --prompts: 3 prompted classes; at most 2 (PREANNOTATE_MAX_PROMPT_CLASSES)"],
    )
    assert not grid.encoded
    assert not out.exists()
