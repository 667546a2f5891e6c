"""``preannotate bench results`` at a toy size, on the real servers it starts: it runs both modes, measures what it
says (Redis keeps result bytes only in the baseline), and writes its results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_results, common
from service.cli import build_parser
from service.commands.bench import BENCHMARKS
from tests.redis_server import redis_server_binary
from tests.s3_server import require_moto_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_bench_results_measures_both_modes_and_writes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_server_binary()
    require_moto_server()
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)

    code = bench_results.main(["--items", "20", "--frames", "120", "--fetch-items", "10", "--stream-items", "3"])

    assert code == 0
    (written,) = tmp_path.glob("results-*.json")
    report = json.loads(written.read_text())
    redis, s3 = report["modes"]["redis"], report["modes"]["s3"]
    # the baseline keeps every result's bytes in Redis; object storage keeps a small record per item
    assert redis["redis_bytes_per_item"] > redis["result_json_bytes"] > 50_000
    assert s3["redis_bytes_per_item"] < 10_000
    assert report["summary"]["redis_memory_ratio"] > 5
    for mode in (redis, s3):
        assert mode["store_read"]["items"] == 20
        assert mode["get_result_images"]["items"] == 10
        assert mode["get_result_hours"]["mib"] > 0.1  # 3 items of 120 frames, 5 boxes each, as COCO
    assert "Redis bytes per item" in capsys.readouterr().out


def test_results_is_a_bench_the_cli_runs() -> None:
    assert "results" in BENCHMARKS
    assert build_parser().parse_args(["bench", "results"]).name == "results"
