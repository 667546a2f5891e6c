"""``preannotate calibrate`` and ``evaluate --thresholds`` end to end through ``python -m service.cli``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.spec.thresholds import ThresholdsFile
from tests.unit.service.evaluate.calibration_scenes import f1_scene, to_coco, to_label_studio


def preannotate(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("calibrate")
    gt, preds = to_coco(f1_scene())
    gt_path, preds_path = root / "gt.json", root / "preds.json"
    gt_path.write_text(json.dumps(gt))
    preds_path.write_text(json.dumps(preds))
    export = to_label_studio(f1_scene())
    for task in export:  # a second model version in the same export
        task["predictions"].append({**task["predictions"][0], "model_version": "m2"})
    (root / "ls.json").write_text(json.dumps(export))
    return {"root": root, "gt": gt_path, "preds": preds_path, "ls": root / "ls.json"}


def test_calibrate_writes_the_thresholds_file_and_prints_a_table(files: dict[str, Path]) -> None:
    out = files["root"] / "thresholds.json"
    result = preannotate(
        "calibrate", "--benchmark", files["gt"], "--candidate", files["preds"], "--model-version", "v7", "--out", out
    )

    assert result.returncode == 0, result.stderr
    thresholds = ThresholdsFile.read(out)
    assert (thresholds.model_version, thresholds.objective, thresholds.global_threshold) == ("v7", "f1", 0.5)
    assert thresholds.class_thresholds() == {"car": 0.6}
    assert not thresholds.classes["person"].calibrated
    lines = result.stderr.splitlines()
    assert lines[0].split() == ["class", "support", "threshold", "precision", "recall", "f1", "note"]
    assert lines[1].split()[:4] == ["car", "11", "0.600", "0.909"]
    assert "support 3 < min support 10" in lines[2]
    assert result.stdout == ""


def test_min_support_comes_from_the_setting_and_the_flag_overrides_it(files: dict[str, Path]) -> None:
    out = files["root"] / "support.json"
    args = ("calibrate", "--benchmark", files["gt"], "--candidate", files["preds"], "--out", out)

    by_setting = preannotate(*args, env={"PREANNOTATE_CALIBRATE_MIN_SUPPORT": "3"})
    assert by_setting.returncode == 0, by_setting.stderr
    assert ThresholdsFile.read(out).class_thresholds() == {"car": 0.6, "person": 0.9}

    by_flag = preannotate(*args, "--min-support", "4", env={"PREANNOTATE_CALIBRATE_MIN_SUPPORT": "3"})
    assert by_flag.returncode == 0, by_flag.stderr
    assert ThresholdsFile.read(out).class_thresholds() == {"car": 0.6}


def test_the_model_version_comes_from_a_label_studio_candidate(files: dict[str, Path]) -> None:
    out = files["root"] / "ls-thresholds.json"
    result = preannotate(
        "calibrate",
        "--benchmark",
        f"{files['ls']}#annotations",
        "--candidate",
        f"{files['ls']}#predictions=m2",
        "--objective",
        "precision=0.9",
        "--out",
        out,
    )

    assert result.returncode == 0, result.stderr
    thresholds = ThresholdsFile.read(out)
    assert (thresholds.model_version, thresholds.objective) == ("m2", "precision=0.9")
    assert thresholds.classes["car"].threshold == 0.6


@pytest.mark.parametrize(
    ("candidate", "extra", "message"),
    [
        ("ls", (), "calibrate takes one candidate, this holds 2"),
        ("gt", (), "nothing to calibrate"),
        ("missing", (), "no such file"),
        ("preds", ("--objective", "precision"), "--objective: objective must be"),
    ],
)
def test_bad_input_is_exit_2_and_one_line_naming_it(
    files: dict[str, Path], candidate: str, extra: tuple[str, ...], message: str
) -> None:
    path = files.get(candidate, files["root"] / "missing.json")
    result = preannotate(
        "calibrate", "--benchmark", files["gt"], "--candidate", path, *extra, "--out", files["root"] / "x.json"
    )

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    if candidate != "preds":
        assert str(path) in result.stderr


def test_evaluate_with_thresholds_adds_the_per_class_comparison(files: dict[str, Path]) -> None:
    thresholds = files["root"] / "for-evaluate.json"
    flags = ("--benchmark", files["gt"], "--candidate", files["preds"])
    made = preannotate("calibrate", *flags, "--threshold", "0.3", "--out", thresholds)
    assert made.returncode == 0, made.stderr
    out = files["root"] / "report"

    result = preannotate(
        "evaluate", "--benchmark", files["gt"], "--candidate", files["preds"], "--thresholds", thresholds, "--out", out
    )

    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "summary.json").read_text())["class_thresholds"]
    assert (rows["car"]["threshold"], rows["car"]["f1_global"]) == (0.6, pytest.approx(20 / 27))
    assert rows["car"]["f1_calibrated"] == pytest.approx(10 / 11)
    html = (out / "report.html").read_text()
    assert "<h3>Per-class thresholds</h3>" in html
    assert "<th>F1 at global</th><th>F1 calibrated</th><th>change</th>" in html
    assert "<td>+0.168</td>" in html  # 10/11 - 20/27


def test_evaluate_refuses_a_file_that_is_not_a_thresholds_file(files: dict[str, Path]) -> None:
    result = preannotate(
        "evaluate", "--benchmark", files["gt"], "--candidate", files["preds"], "--thresholds", files["preds"], "--out",
        files["root"] / "bad",
    )  # fmt: skip

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: invalid_argument: {files['preds']}: not a thresholds file")
    assert len(result.stderr.splitlines()) == 1
