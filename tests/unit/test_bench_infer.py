"""``bench infer --model SPEC``: its options parse, its photo frames are real photos, and a model that was never
fetched ends the bench at once (exit 2, the fetch command named, no results file) rather than after the baseline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_infer, common
from service.cli import build_parser

FETCH_HINT = "preannotate models fetch nanodet"


def test_model_option_parses_with_its_model_dir_and_defaults_to_photos(tmp_path: Path) -> None:
    args = bench_infer.parse_args(["--model", "builtin:nanodet", "--model-dir", str(tmp_path), "--batch-sizes", "1,4"])

    assert (args.model, args.model_dir, args.batch_sizes, args.content) == (
        "builtin:nanodet",
        tmp_path,
        [1, 4],
        "photos",
    )
    assert (args.arch, args.threshold) == ("detr-r50", 0.5)  # the baseline stays the bench's default pipeline


def test_without_a_model_the_bench_is_what_it_was() -> None:
    args = bench_infer.parse_args([])

    assert (args.model, args.model_dir, args.batch_sizes, args.content) == (None, None, None, "synthetic")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "builtin:nope"], "unknown builtin model 'nope'"),
        (["--model", "nanodet"], "invalid model spec"),
        (["--batch-sizes", "1,x"], "comma-separated integers"),
        (["--batch-sizes", "0"], "must be >= 1"),
    ],
)
def test_bad_options_exit_2_naming_the_problem(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        bench_infer.parse_args(argv)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_photo_frames_cycle_the_three_photos_at_the_frame_size() -> None:
    frames = bench_infer.photo_frames(5)

    assert [f.shape for f in frames] == [(*bench_infer.FRAME_HW, 3)] * 5
    assert all(f.dtype == np.uint8 and f.flags.c_contiguous for f in frames)
    assert [np.array_equal(frames[0], f) for f in frames] == [True, False, False, True, False]
    assert np.array_equal(frames[1], frames[4])
    assert not np.array_equal(frames[1], frames[2])


def test_not_fetched_exits_2_with_the_fetch_command_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    monkeypatch.setattr(common, "RESULTS_DIR", results)

    argv = ["--model", "builtin:nanodet", "--model-dir", str(tmp_path / "empty"), "--device", "cpu", "--frames", "1"]
    assert bench_infer.main(argv) == 2

    err = capsys.readouterr().err
    assert FETCH_HINT in err
    assert str(tmp_path / "empty") in err
    assert not results.exists()


@pytest.mark.timeout(120)
def test_preannotate_bench_infer_passes_the_model_on_and_its_exit_status(tmp_path: Path) -> None:
    args = build_parser().parse_args(["bench", "infer", "--model", "builtin:nanodet"])
    assert (args.name, args.extra) == ("infer", ["--model", "builtin:nanodet"])

    # the model directory from the environment, as the service reads it (tests/conftest.py sets an empty one)
    env = {**os.environ, "PREANNOTATE_MODEL_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "bench", "infer", "--model", "builtin:nanodet", "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=100,
    )

    assert done.returncode == 2, done.stderr
    assert FETCH_HINT in done.stderr
    assert str(tmp_path) in done.stderr
