"""calibrate(): per-class thresholds on synthetic scenes whose optimum is known exactly, in every input format,
and the counts it reports are what evaluate's matching says at each threshold."""

from __future__ import annotations

import random
from typing import Any

import pytest

from service.errors import PreannotateError
from service.evaluate.calibration import KeepAbove, Objective, calibrate, class_curves
from service.evaluate.evaluation import evaluate, evaluation_to_summary
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.metrics import score_pairing
from service.evaluate.pairing import pair_units
from service.evaluate.types import Dataset
from service.spec.thresholds import ThresholdsFile
from tests.unit.service.evaluate.calibration_scenes import (
    Image,
    f1_scene,
    ranked_scene,
    to_coco,
    to_darwin,
    to_encord,
    to_label_studio,
)
from tests.unit.service.evaluate.fixtures import coco, coco_results


def load(bench: Any, cand: Any, *, multi: bool = False, selector: str | None = None) -> tuple[Dataset, Dataset]:
    b_docs = [(f"gt{i}.json", d) for i, d in enumerate(bench)] if multi else [("gt.json", bench)]
    c_docs = [(f"pred{i}.json", d) for i, d in enumerate(cand)] if multi else [("pred.json", cand)]
    b = documents_to_datasets(b_docs, name="benchmark", role=BENCHMARK)[0]
    (c,) = documents_to_datasets(c_docs, name="model", role=CANDIDATE, benchmark=b, selector=selector)
    return b, c


def run(images: list[Image], objective: str = "f1", *, min_support: int = 10) -> ThresholdsFile:
    b, c = load(*to_coco(images))
    return calibrate(
        b, c, objective=Objective.parse(objective), iou_threshold=0.5, global_threshold=0.5, min_support=min_support
    )


def test_f1_optimum_is_the_lowest_true_positive_score() -> None:
    result = run(f1_scene())

    car = result.classes["car"]
    assert (car.threshold, car.calibrated, car.support) == (0.6, True, 11)
    assert car.precision == car.recall == car.f1 == pytest.approx(10 / 11)
    assert result.class_thresholds() == {"car": 0.6}
    assert (result.objective, result.iou, result.global_threshold) == ("f1", 0.5, 0.5)


def test_a_class_with_too_little_support_keeps_the_global_threshold_and_says_why() -> None:
    result = run(f1_scene())

    person = result.classes["person"]
    assert (person.threshold, person.calibrated, person.support) == (0.5, False, 3)
    assert person.reason is not None
    assert "support 3 < min support 10" in person.reason
    assert (person.precision, person.recall) == (1.0, 1.0)  # what the global threshold achieves

    assert run(f1_scene(), min_support=3).classes["person"].calibrated


# T = a detection on an unfound object, F = one on background; 10 objects. Precision and recall by threshold:
# .95 1/1 .1 | .90 2/2 .2 | .85 2/3 .2 | .80 3/4 .3 | .75 4/5 .4 | .70 4/6 .4 | .65 5/7 .5 | .60 5/8 .5 | .55 5/9 .5
# | .50 6/10 .6
RANKED = [
    (0.95, True),
    (0.9, True),
    (0.85, False),
    (0.8, True),
    (0.75, True),
    (0.7, False),
    (0.65, True),
    (0.6, False),
    (0.55, False),
    (0.5, True),
]


@pytest.mark.parametrize(
    ("objective", "threshold", "precision", "recall"),
    [
        ("precision=0.75", 0.75, 4 / 5, 0.4),  # .80 and .75 both reach 0.75; .75 finds more
        ("precision=0.9", 0.9, 1.0, 0.2),
        ("recall=0.5", 0.65, 5 / 7, 0.5),  # .65 .. .55 reach 0.5; .65 is the most precise
        ("recall=0.6", 0.5, 0.6, 0.6),
        ("f1", 0.5, 0.6, 0.6),  # F1 .6 at .50 beats 10/17 at .65
    ],
)
def test_precision_and_recall_objectives(objective: str, threshold: float, precision: float, recall: float) -> None:
    car = run(ranked_scene(RANKED, support=10), objective).classes["car"]

    assert (car.threshold, car.calibrated) == (threshold, True)
    assert (car.precision, car.recall) == pytest.approx((precision, recall))


def test_an_objective_no_threshold_meets_keeps_the_global_threshold() -> None:
    car = run(ranked_scene(RANKED, support=10), "recall=0.7").classes["car"]

    assert (car.threshold, car.calibrated) == (0.5, False)
    assert car.reason == "no threshold meets recall=0.7"


def test_a_tie_goes_to_the_higher_threshold() -> None:
    # 5 of 10 found at 0.9: F1 10/15. At 0.4 one more object and two background boxes: F1 12/18, the same.
    outcomes = [(0.9, True)] * 5 + [(0.4, True), (0.4, False), (0.4, False)]
    car = run(ranked_scene(outcomes, support=10)).classes["car"]

    assert car.threshold == 0.9
    assert car.f1 == pytest.approx(2 / 3)


@pytest.mark.parametrize("fmt", ["coco", "darwin", "label_studio", "encord"])
def test_every_input_format_calibrates(fmt: str) -> None:
    images = f1_scene()
    if fmt == "coco":
        b, c = load(*to_coco(images))
    elif fmt == "darwin":
        b, c = load(*to_darwin(images), multi=True)
        assert c.model_version == "m"  # the one inference.model name the files carry
    elif fmt == "encord":
        b, c = load(*to_encord(images), multi=True)
    else:
        export = to_label_studio(images)
        b, c = load(export, export)
        assert c.model_version == "m1"

    result = calibrate(b, c, objective=Objective(), iou_threshold=0.5, global_threshold=0.5, min_support=10)

    car_name = "car"
    assert set(result.classes) == {car_name, "person"}
    car = result.classes[car_name]
    assert (car.threshold, car.support, car.calibrated) == (0.6, 11, True)
    assert car.f1 == pytest.approx(10 / 11)


def test_human_labels_cannot_be_calibrated() -> None:
    gt, _ = to_coco(f1_scene())
    b, c = load(gt, gt)

    with pytest.raises(PreannotateError, match="without a score"):
        calibrate(b, c, objective=Objective(), iou_threshold=0.5, global_threshold=0.5, min_support=1)


@pytest.mark.parametrize("text", ["precision", "recall=2", "f2", "precision=0.9x", ""])
def test_bad_objectives_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="objective must be"):
        Objective.parse(text)


def _random_scene(rng: random.Random) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Crowded frames of two classes on a coarse grid: duplicates, near misses, wrong classes, shared scores."""
    images: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
    dets: dict[str, list[tuple[str, tuple[float, float, float, float], float]]] = {}

    def box() -> tuple[float, float, float, float]:
        x, y = rng.randrange(0, 200, 20), rng.randrange(0, 200, 20)
        return float(x), float(y), float(x + rng.choice([40, 60, 80])), float(y + rng.choice([40, 60, 80]))

    for i in range(12):
        name = f"r{i}.png"
        images[name] = [(rng.choice(["car", "person"]), box()) for _ in range(rng.randint(0, 5))]
        dets[name] = [
            (rng.choice(["car", "person"]), box(), rng.choice([0.2, 0.35, 0.5, 0.65, 0.8, 0.95]))
            for _ in range(rng.randint(0, 8))
        ]
        for label, b in images[name]:  # near-copies so that many pairs match
            if rng.random() < 0.7:
                dets[name].append((label, (b[0] + rng.choice([0, 5, 15]), b[1], b[2], b[3]), rng.random()))
    gt = coco(images)
    for ann in gt["annotations"][::7]:
        ann["iscrowd"] = 1  # crowd regions: detections in them count neither way
    return gt, coco_results(gt, dets)


@pytest.mark.parametrize("seed", range(6))
def test_reported_counts_are_evaluates_at_every_threshold(seed: int) -> None:
    b, c = load(*_random_scene(random.Random(seed)))
    pairing = pair_units(b, c)

    for label, curve in class_curves(b, c, iou_threshold=0.5).items():
        for i, threshold in enumerate(curve.thresholds):
            expected = score_pairing(pairing, iou_threshold=0.5, keep=KeepAbove(None, {label: threshold}))
            got = curve.counts(i)
            e = expected.per_class[label]
            assert (got.tp, got.fp, got.fn) == (e.tp, e.fp, e.fn), (label, threshold)


def test_evaluate_with_thresholds_reports_f1_at_global_and_calibrated() -> None:
    b, c = load(*to_coco(f1_scene()))
    thresholds = calibrate(b, c, objective=Objective(), iou_threshold=0.5, global_threshold=0.3, min_support=10)

    summary = evaluation_to_summary(evaluate(b, [c], class_thresholds=thresholds))

    rows = summary["class_thresholds"]
    assert rows is not None
    # At 0.3 the car keeps every background box (TP 10, FP 6, FN 1: F1 20/27); at 0.6 only the 0.95 one.
    assert rows["car"] == {
        "threshold": 0.6,
        "calibrated": True,
        "f1_global": pytest.approx(20 / 27),
        "f1_calibrated": pytest.approx(10 / 11),
        "precision_calibrated": pytest.approx(10 / 11),
        "recall_calibrated": pytest.approx(10 / 11),
    }
    assert rows["person"]["calibrated"] is False
    assert rows["person"]["threshold"] == 0.3
    assert evaluation_to_summary(evaluate(b, [c]))["class_thresholds"] is None


def test_a_full_coco_candidate_carries_its_model_version() -> None:
    gt, _ = to_coco(f1_scene())
    ours = {**gt, "info": {"model": "builtin:x", "model_version": "x-1.2"}}
    ours["annotations"] = [{**a, "score": 0.9} for a in gt["annotations"]]

    assert load(gt, ours)[1].model_version == "x-1.2"
    assert load(gt, gt)[0].model_version is None
