"""``preannotate bench preview`` at a toy size: all three ways run, draw the same files, and the file says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_preview, common
from service.cli import build_parser
from service.commands.bench import BENCHMARKS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_bench_preview_runs_ours_and_the_baseline_and_writes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)

    assert bench_preview.main(["--duration", "1", "--fps", "2", "--repeats", "1"]) == 0

    (written,) = tmp_path.glob("preview-*.json")
    report = json.loads(written.read_text())
    assert set(report["results"]) == {"run", "run --preview", "run + render"}
    assert "pan-720p.mp4.mp4" in report["files_drawn"]
    assert "index.html" in report["files_drawn"]
    medians = {name: r["median_s"] for name, r in report["results"].items()}
    assert report["ratio_baseline_over_ours"] == pytest.approx(medians["run + render"] / medians["run --preview"])
    assert "run + render / run --preview" in capsys.readouterr().out


def test_preview_is_a_bench_the_cli_runs() -> None:
    assert "preview" in BENCHMARKS
    assert build_parser().parse_args(["bench", "preview"]).name == "preview"
