"""The output directory: four files, a leaderboard with pass/fail, and a report with nothing to fetch."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from service.evaluate.evaluation import Thresholds, evaluate
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.outputs import OUTPUT_FILES, write_outputs
from tests.unit.service.evaluate.fixtures import coco, coco_results


def test_write_outputs(tmp_path: Path) -> None:
    gt = coco(
        {"a.jpg": [("car", (0, 0, 100, 100)), ("person", (200, 0, 300, 100))], "b.jpg": [("car", (0, 0, 50, 50))]}
    )
    good = coco_results(gt, {"a.jpg": [("car", (0, 0, 100, 100), 0.9), ("person", (200, 0, 300, 100), 0.8)]})
    bad = coco_results(
        gt, {"a.jpg": [("person", (0, 0, 100, 100), 0.9)], "b.jpg": [("car", (300, 300, 350, 350), 0.6)]}
    )
    bench = documents_to_datasets([("gt.json", gt)], name="benchmark", role=BENCHMARK)[0]
    cands = [
        d
        for name, doc in (("bad", bad), ("good", good))
        for d in documents_to_datasets([(f"{name}.json", doc)], name=name, role=CANDIDATE, benchmark=bench)
    ]
    evaluation = evaluate(bench, cands, thresholds=Thresholds(min_f1=0.5, min_map50=0.5))

    paths = write_outputs(evaluation, tmp_path / "out")

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(OUTPUT_FILES)
    board = list(csv.DictReader(paths["leaderboard.csv"].open()))
    assert [(r["rank"], r["candidate"], r["passed"]) for r in board] == [("1", "good", "pass"), ("2", "bad", "fail")]
    assert board[1]["failed_checks"].startswith("f1 0.0000 < 0.5000")
    summary = json.loads(paths["summary.json"].read_text())
    assert (summary["candidate"], summary["tp"], summary["fp"], summary["fn"]) == ("bad", 0, 2, 3)
    assert summary["confusion"]["car"] == {"(none)": 1, "person": 1}
    assert [c["candidate"] for c in summary["candidates"]] == ["bad", "good"]
    assert (
        paths["iou_results.csv"].read_text().splitlines()[0]
        == "training_email,data_unit_name,label_id,iou_score,class_score"
    )

    html = paths["report.html"].read_text()
    assert html.count("data:image/png;base64,") >= 3  # PR curves, and per-class bars for each candidate
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert "http" not in html.replace("http-equiv", "")
