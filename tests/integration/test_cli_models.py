"""``preannotate models`` and ``preannotate models fetch`` in real subprocesses, without npm or the real package."""

from __future__ import annotations

import io
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
    assert list(model_dir.iterdir()) == []


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
    assert any(line.startswith(f"  {default}") for line in lines)
    assert sum("(default)" in line for line in lines) == 1
