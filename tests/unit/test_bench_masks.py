"""``preannotate bench masks`` at a toy size: both methods run on the same frames and boxes, give the same masks,
and the results file says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_masks, common
from service.cli import build_parser
from service.commands.bench import BENCHMARKS

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_bench_masks_runs_both_methods_and_writes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)

    code = bench_masks.main(["--frames", "2", "--boxes", "3", "--repeats", "1", "--device", "cpu"])

    assert code == 0
    (written,) = tmp_path.glob("masks-*.json")
    report = json.loads(written.read_text())
    assert report["masks"] == 6
    ours, peers = report["methods"]["ours"], report["methods"]["peers"]
    assert ours["masks_per_s"] > 0
    assert peers["masks_per_s"] > 0
    assert report["ratio"] == pytest.approx(ours["masks_per_s"] / peers["masks_per_s"])
    # the same model on the same boxes: around each box the masks agree but for resampling at their edges
    assert report["mean_iou_in_box_regions"] >= 0.95
    assert report["segmenter"]["input_size_px"] == bench_masks.SAM_INPUT_PX
    assert "ratio" in capsys.readouterr().out


def test_masks_is_a_bench_the_cli_runs() -> None:
    assert "masks" in BENCHMARKS
    assert build_parser().parse_args(["bench", "masks"]).name == "masks"
