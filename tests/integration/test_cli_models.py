"""``preannotate models`` and ``preannotate models fetch`` in real subprocesses, without npm or the real package."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest


def preannotate(*args: str | Path, model_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREANNOTATE_MODEL_DIR": str(model_dir)}
    env.pop("PREANNOTATE_MODEL", None)
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )


def test_fetch_with_a_missing_tarball_is_exit_2_and_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.tgz"

    result = preannotate("models", "fetch", "nanodet", "--tarball", missing, model_dir=tmp_path / "models")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: model_fetch_failed: {missing}: no such file"]
    assert "Traceback" not in result.stderr


def test_fetch_of_a_tarball_with_other_files_is_exit_2_and_keeps_nothing(tmp_path: Path) -> None:
    tarball = tmp_path / "human-models-3.0.4.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in {"models/nanodet.json": b"{}", "models/nanodet.bin": b"\0", "LICENSE": b"MIT"}.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    model_dir = tmp_path / "models"

    result = preannotate("models", "fetch", "nanodet", "--tarball", tarball, model_dir=model_dir)

    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: model_fetch_failed: human-models-3.0.4.tgz: models/nanodet.json has SHA-256 ")
    assert [p.name for p in model_dir.iterdir()] == [".nanodet.lock"]  # no model, no staging folder


@pytest.mark.parametrize("installed", [False, True])
def test_models_lists_nanodet_with_the_fetch_hint_until_installed(tmp_path: Path, installed: bool) -> None:
    model_dir = tmp_path / "models"
    if installed:
        (model_dir / "nanodet").mkdir(parents=True)
        (model_dir / "nanodet" / "nanodet.onnx").write_bytes(b"listed, not loaded")

    result = preannotate("models", model_dir=model_dir)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    hint = f"    not installed in {model_dir}: `preannotate models fetch nanodet` (needs npm)"
    assert (hint in lines) is not installed
    default = "builtin:nanodet (default):" if installed else "builtin:centerface (default):"
    assert f"default model: {'builtin:nanodet' if installed else 'builtin:centerface'} (from {model_dir};" in (
        result.stdout
    )
    assert any(line.startswith(f"  {default}") for line in lines)
    assert sum("(default)" in line for line in lines) == 1


def test_models_marks_the_pinned_default_and_fetch_says_it_stays_pinned(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    (model_dir / "nanodet").mkdir(parents=True)
    (model_dir / "nanodet" / "nanodet.onnx").write_bytes(b"listed, not loaded")
    env = {**os.environ, "PREANNOTATE_MODEL_DIR": str(model_dir), "PREANNOTATE_MODEL": "builtin:centerface"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "models"], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    marked = [line for line in result.stdout.splitlines() if "(default)" in line]
    assert len(marked) == 1
    assert marked[0].startswith("  builtin:centerface (default):")
    assert "default model (PREANNOTATE_MODEL): builtin:centerface" in result.stdout


def test_fetch_into_a_model_dir_that_is_a_file_is_exit_2_and_one_line(tmp_path: Path) -> None:
    blocked = tmp_path / "models"
    blocked.write_text("not a folder")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()

    result = preannotate("models", "fetch", "nanodet", "--from-dir", unpacked, model_dir=blocked)

    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: model_fetch_failed: cannot install into {blocked}: ")


def test_run_reads_builtin_nanodet_from_the_model_dir_setting(tmp_path: Path) -> None:
    """`run` used to rebuild the detector options and drop PREANNOTATE_MODEL_DIR: the default resolved to
    builtin:nanodet from the setting, and the loader then looked in ~/.cache."""
    import cv2
    import numpy as np

    from tests.unit.models import onnx_graphs
    from tests.unit.models.test_nanodet import METADATA, SIDE_PX, _heads

    model_dir = tmp_path / "models"
    (model_dir / "nanodet").mkdir(parents=True)
    cls, box = _heads()
    onnx_graphs.save(
        onnx_graphs.nanodet_model(cls, box, side_px=SIDE_PX, metadata=METADATA), model_dir / "nanodet" / "nanodet.onnx"
    )
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 90, np.uint8))
    out = tmp_path / "preds.json"

    result = preannotate("run", image, "--out", out, "--threshold", "0.25", model_dir=model_dir)

    assert result.returncode == 0, result.stderr
    coco = json.loads(out.read_text())
    assert {c["name"] for c in coco["categories"]} >= {"person", "car"}
    assert len(coco["annotations"]) >= 2
