"""Our mAP agrees with pycocotools' COCOeval run directly on the same files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from service.evaluate.evaluation import evaluate
from service.evaluate.inputs import load_benchmark, load_candidates


def generated_set(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Random GT over 3 classes and 12 images (some empty), and detections: jittered true boxes, duplicates,
    wrong classes and background boxes, all with distinct random scores."""
    rng = np.random.default_rng(seed)
    gt: dict[str, Any] = {
        "images": [{"id": 10 + i, "file_name": f"img_{i:02d}.jpg", "width": 640, "height": 480} for i in range(12)],
        "annotations": [],
        "categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "person"}, {"id": 5, "name": "bike"}],
    }
    dets: list[dict[str, Any]] = []
    for image in gt["images"][:10]:
        for _ in range(rng.integers(0, 6)):
            x, y = rng.uniform(0, 500), rng.uniform(0, 350)
            w, h = rng.uniform(10, 140), rng.uniform(10, 130)
            cat = int(rng.choice([7, 3, 5]))
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": image["id"], "category_id": cat, "bbox": [x, y, w, h]}
                | {"area": w * h, "iscrowd": 0}
            )
            for _ in range(rng.integers(0, 3)):  # zero to two detections per object (duplicates)
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                det_cat = cat if rng.random() > 0.15 else int(rng.choice([7, 3, 5]))
                box = [x + jitter[0], y + jitter[1], max(2.0, w + jitter[2]), max(2.0, h + jitter[3])]
                dets.append({"image_id": image["id"], "category_id": det_cat, "bbox": box})
        for _ in range(rng.integers(0, 3)):  # background
            dets.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice([7, 3])),
                    "bbox": [*rng.uniform(0, 400, 2), 40.0, 40.0],
                }
            )
    for det, score in zip(dets, rng.permutation(len(dets)) / len(dets) + 0.001, strict=True):
        det["score"] = float(score)
    return gt, dets


def pycocotools_stats(gt_path: Path, dt_path: Path) -> tuple[float, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(dt_path))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_cocoeval_on_a_generated_set(tmp_path: Path, seed: int) -> None:
    gt, dets = generated_set(seed)
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(dets))
    expected_map, expected_map50 = pycocotools_stats(gt_path, dt_path)

    benchmark = load_benchmark(str(gt_path))
    result = evaluate(benchmark, load_candidates(str(dt_path), benchmark)).candidates[0]

    assert result.map is not None
    assert result.map.map == pytest.approx(expected_map, abs=1e-6)
    assert result.map.map50 == pytest.approx(expected_map50, abs=1e-6)
    assert 0.0 < expected_map50 < 1.0  # the set is neither trivial nor hopeless


def test_a_candidate_without_detections_scores_zero(tmp_path: Path) -> None:
    gt, _ = generated_set(0)
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps({**gt, "annotations": []}))  # a full COCO with no annotations
    benchmark = load_benchmark(str(gt_path))
    result = evaluate(benchmark, load_candidates(str(dt_path), benchmark)).candidates[0]
    assert result.map is None  # no shapes at all: no scores, so no mAP
    assert (result.score.overall.tp, result.score.overall.fn) == (0, len(gt["annotations"]))
