"""iou_results.csv: Encord's annotator-training script reproduced on its own semantics, text for text."""

from __future__ import annotations

import pytest

from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.pairing import pair_units
from service.evaluate.seed_csv import SeedRow, pairing_to_seed_rows, seed_iou, seed_rows_to_csv
from tests.unit.service.evaluate.fixtures import CAR, coco, coco_results, encord_box, encord_row
from tests.unit.service.evaluate.seed_rows import EXPECTED_CSV, benchmark_rows, training_rows


def _seed_csv(bench_doc: object, cand_doc: object, name: str = "alice") -> str:
    bench = documents_to_datasets([("bench.json", bench_doc)], name="benchmark", role=BENCHMARK)[0]
    cand = documents_to_datasets([("cand.json", cand_doc)], name=name, role=CANDIDATE, benchmark=bench)[0]
    return seed_rows_to_csv(pairing_to_seed_rows(pair_units(bench, cand), candidate_name=name))


def test_hand_built_label_rows_give_the_scripts_csv_exactly() -> None:
    # Greedy, many-to-one (G and D both take car A), misses invisible (person B, car C), boxes only (the
    # polygon is ignored), frame 0 only (H on frame 7), rows in the training project's order, ties to the first.
    assert _seed_csv(benchmark_rows(), training_rows()) == EXPECTED_CSV


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0.125, 0.125, 0.25, 0.25), (0.125, 0.125, 0.25, 0.25), 1.0),
        ((0.125, 0.125, 0.25, 0.25), (0.25, 0.125, 0.25, 0.25), 1 / 3),
        ((0.0, 0.0, 0.1, 0.1), (0.5, 0.5, 0.1, 0.1), 0.0),  # no overlap: max(0, negative) is int 0
        ((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), 0.0),  # empty union
        ((0.1, 0.5, 0.1, 0.2), (0.1, 0.5, 0.1, 0.2), 0.9999999999999993),  # the script's own float error, kept
    ],
)
def test_seed_iou_is_the_scripts_formula(a: tuple[float, ...], b: tuple[float, ...], expected: float) -> None:
    assert seed_iou(a, b) == expected  # type: ignore[arg-type]


def test_missing_creator_falls_back_to_the_candidate_name_and_data_title_may_be_empty() -> None:
    box = encord_box("A0000000", CAR, (0.125, 0.125, 0.25, 0.25))
    del box["createdBy"]
    bench = encord_row(
        data_hash="d", title="", label_hash="lb", objects=[encord_box("B0000000", CAR, (0.125, 0.125, 0.25, 0.25))]
    )
    cand = encord_row(data_hash="d", title="", label_hash="lc", objects=[box])
    assert _seed_csv([bench], [cand], name="yolo-v2").splitlines()[1] == "yolo-v2,,lc,1.0,1.0"


def test_coco_candidates_use_pixels_and_class_names() -> None:
    gt = coco({"a.jpg": [("car", (0, 0, 100, 100)), ("person", (200, 0, 300, 100))]})
    preds = coco_results(gt, {"a.jpg": [("person", (0, 0, 100, 50), 0.9), ("car", (0, 0, 100, 100), 0.8)]})
    assert _seed_csv(gt, preds, name="model").splitlines()[1:] == ["model,a.jpg,,0.5,0.0", "model,a.jpg,,1.0,1.0"]


def test_csv_quotes_like_pandas() -> None:
    rows = [SeedRow('a "b", c', "x,y", "", 0.1 + 0.2, 1.0), SeedRow("e", "n", "l", 1.234e-05, 0.0)]
    assert seed_rows_to_csv(rows) == (
        "training_email,data_unit_name,label_id,iou_score,class_score\n"
        '"a ""b"", c","x,y",,0.30000000000000004,1.0\n'
        "e,n,l,1.234e-05,0.0\n"
    )
