"""evaluate(): whole datasets, hand-computed answers (video frames, multi-slot items, empty frames, gates)."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import ErrorCode, PreannotateError
from service.evaluate.evaluation import Evaluation, Thresholds, evaluate, evaluation_to_summary
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.metrics import Counts
from tests.unit.service.evaluate.fixtures import darwin_box, darwin_item, darwin_video

CAR0, PERSON0 = (0, 0, 100, 100), (200, 0, 300, 100)
CAR5, PERSON5 = (0, 200, 100, 300), (200, 200, 300, 300)


def run(bench: Any, *cands: tuple[str, Any], thresholds: Thresholds | None = None) -> Evaluation:
    b = documents_to_datasets([("bench", bench)], name="benchmark", role=BENCHMARK)[0]
    cs = [
        d for name, doc in cands for d in documents_to_datasets([(name, doc)], name=name, role=CANDIDATE, benchmark=b)
    ]
    return evaluate(b, cs, iou_threshold=0.5, thresholds=thresholds)


def counts(summary: dict[str, Any]) -> tuple[int, int, int]:
    return summary["tp"], summary["fp"], summary["fn"]


def test_worked_case_from_the_encord_reference() -> None:
    # encord.md 6.2: car+person on frames 0 and 5; the annotator draws the car and a duplicate on frame 0
    # (person missed) and calls the frame-5 car a person.
    gt = darwin_video(
        "clip.mp4",
        {0: [("c0", "car", CAR0), ("p0", "person", PERSON0)], 5: [("c5", "car", CAR5), ("p5", "person", PERSON5)]},
    )
    ann = darwin_video("clip.mp4", {0: [("a", "car", CAR0), ("b", "car", (0, 0, 100, 72))], 5: [("c", "person", CAR5)]})
    evaluation = run(gt, ("alice", ann))
    s = evaluation_to_summary(evaluation)
    assert counts(s) == (1, 2, 3)
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((1 / 3, 1 / 4, 2 / 7))
    assert s["confusion"]["car"] == {"car": 1, "person": 1}
    assert (s["per_class"]["person"]["fp"], s["per_class"]["person"]["fn"]) == (1, 2)
    assert s["map"] is None
    assert "no scores" in s["map_note"]
    # The seed's view of the same labels: frame 0 only, duplicates welcome: mean IoU 0.86, class score 1.0.
    rows = evaluation.candidates[0].seed_rows
    assert [r.iou_score for r in rows] == pytest.approx([1.0, 0.72])
    assert {r.class_score for r in rows} == {1.0}


def test_video_frames_are_matched_by_index() -> None:
    gt = darwin_video("v.mp4", {0: [("t", "car", CAR0)], 1: [("t", "car", CAR0)]})
    late = darwin_video("v.mp4", {1: [("t", "car", CAR0)], 2: [("t", "car", CAR0)]})  # one frame late
    s = evaluation_to_summary(run(gt, ("late", late)))
    assert counts(s) == (1, 1, 1)
    assert s["items"]["frames"] == 3


def test_multi_slot_items_are_matched_slot_by_slot() -> None:
    gt = darwin_item(
        "case", [darwin_box("mass", CAR0, slot="0"), darwin_box("mass", PERSON0, slot="1")], slots=("0", "1")
    )
    # The right boxes, but the second one on the wrong slot: an FP on slot 0 and an FN on slot 1.
    cand = darwin_item(
        "case", [darwin_box("mass", CAR0, slot="0"), darwin_box("mass", PERSON0, slot="0")], slots=("0", "1")
    )
    s = evaluation_to_summary(run(gt, ("c", cand)))
    assert counts(s) == (1, 1, 1)
    # Worst first: slot 1 found nothing (F1 0), slot 0 has one extra box (F1 2/3).
    assert [(w["slot"], w["fp"], w["fn"]) for w in s["worst_items"]] == [("1", 0, 1), ("0", 1, 0)]


@pytest.mark.parametrize(
    ("gt_boxes", "cand_boxes", "expected", "prf"),
    [
        ([], [], (0, 0, 0), (1.0, 1.0, 1.0)),  # an empty frame left empty is perfect
        ([], [CAR0], (0, 1, 0), (0.0, 1.0, 0.0)),  # nothing to find: nothing missed, recall 1.0
        # Nothing submitted where there was something to find: precision 0.0, not a vacuous 1.0 (which let an
        # annotator who submitted nothing pass --min-precision).
        ([CAR0], [], (0, 0, 1), (0.0, 0.0, 0.0)),
    ],
)
def test_empty_frames(
    gt_boxes: list[Any], cand_boxes: list[Any], expected: tuple[int, int, int], prf: tuple[float, ...]
) -> None:
    gt = darwin_item("a.jpg", [darwin_box("car", b) for b in gt_boxes])
    cand = darwin_item("a.jpg", [darwin_box("car", b) for b in cand_boxes])
    s = evaluation_to_summary(run(gt, ("c", cand)))
    assert counts(s) == expected
    assert (s["precision"], s["recall"], s["f1"]) == prf
    assert s["items"]["frames"] == 1


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "prf"),
    [
        (0, 0, 0, (1.0, 1.0, 1.0)),
        (0, 0, 3, (0.0, 0.0, 0.0)),
        (0, 2, 0, (0.0, 1.0, 0.0)),
        (1, 1, 2, (0.5, 1 / 3, 0.4)),
    ],
)
def test_precision_recall_f1(tp: int, fp: int, fn: int, prf: tuple[float, float, float]) -> None:
    c = Counts(tp=tp, fp=fp, fn=fn)
    assert (c.precision, c.recall, c.f1) == pytest.approx(prf)


def test_submitting_nothing_fails_a_precision_gate() -> None:
    gt = darwin_item("a.jpg", [darwin_box("car", CAR0)])
    s = evaluation_to_summary(run(gt, ("idle", darwin_item("a.jpg", [])), thresholds=Thresholds(min_precision=0.5)))
    assert s["candidates"][0]["failed_checks"] == ["precision 0.0000 < 0.5000"]


def test_items_missing_from_the_candidate_are_misses_and_extra_items_are_not_scored() -> None:
    gt = [darwin_item("a.jpg", [darwin_box("car", CAR0)]), darwin_item("b.jpg", [darwin_box("car", CAR0)])]
    cand = [darwin_item("a.jpg", [darwin_box("car", CAR0)]), darwin_item("z.jpg", [darwin_box("car", CAR0)])]
    s = evaluation_to_summary(run(gt, ("c", cand)))
    assert counts(s) == (1, 0, 1)
    assert s["items"]["missing_in_candidate"] == ["b.jpg/0"]
    assert s["items"]["candidate_only_units"] == 1


def test_items_pair_by_file_name_across_folders() -> None:
    gt = darwin_item("a.jpg", [darwin_box("car", CAR0)], path="/site-1/cam-2")
    cand = darwin_item("a.jpg", [darwin_box("car", CAR0)], path="/export")
    assert counts(evaluation_to_summary(run(gt, ("c", cand)))) == (1, 0, 0)


def test_tags_are_scored_by_accuracy() -> None:
    tag = {"id": "t", "name": "needs_review", "slot_names": ["0"], "tag": {}}
    other = {"id": "u", "name": "blurry", "slot_names": ["0"], "tag": {}}
    gt = darwin_item("a.jpg", [tag])
    s = evaluation_to_summary(run(gt, ("same", darwin_item("a.jpg", [tag]))))
    assert (s["tag_accuracy"], s["tags"]) == (1.0, {"correct": 1, "total": 1})
    s = evaluation_to_summary(run(gt, ("wrong", darwin_item("a.jpg", [other]))))
    assert (s["tag_accuracy"], s["tags"]) == (0.0, {"correct": 0, "total": 2})  # one missed, one extra


def test_thresholds_decide_pass_or_fail_per_candidate() -> None:
    gt = darwin_item("a.jpg", [darwin_box("car", CAR0), darwin_box("car", PERSON0)])
    good = darwin_item("a.jpg", [darwin_box("car", CAR0), darwin_box("car", PERSON0)])
    half = darwin_item("a.jpg", [darwin_box("car", CAR0)])
    evaluation = run(gt, ("good", good), ("half", half), thresholds=Thresholds(min_f1=0.8, min_map50=0.5))
    s = evaluation_to_summary(evaluation)
    by_name = {c["candidate"]: c for c in s["candidates"]}
    # Human labels carry no score: a mAP gate cannot pass on them, and says why.
    assert by_name["good"]["failed_checks"] == [
        "map50 unavailable (the candidate carries no scores (human labels): no mAP, use precision/recall/F1)"
    ]
    assert by_name["half"]["failed_checks"][0] == "f1 0.6667 < 0.8000"
    assert s["all_passed"] is False


def test_scored_candidates_get_map() -> None:
    gt = darwin_item("a.jpg", [darwin_box("car", CAR0), darwin_box("car", PERSON0)])
    cand = darwin_item(
        "a.jpg", [darwin_box("car", CAR0, confidence=0.9), darwin_box("car", (500, 0, 600, 100), confidence=0.95)]
    )
    s = evaluation_to_summary(run(gt, ("m", cand), thresholds=Thresholds(min_map50=0.5)))
    # Ranked: FP (0.95) then TP (0.9): precision 0.5 at recall 0.5, then nothing: AP50 = 0.5 * 51/101.
    assert s["map50"] == pytest.approx(0.5 * 51 / 101)
    assert s["passed"] is False


@pytest.mark.parametrize(("kwargs", "flag"), [({"min_f1": 1.5}, "--min-f1"), ({"min_recall": -0.1}, "--min-recall")])
def test_thresholds_must_be_fractions(kwargs: dict[str, float], flag: str) -> None:
    with pytest.raises(PreannotateError) as exc:
        Thresholds(**kwargs)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    assert flag in exc.value.message


def test_duplicate_candidate_names_are_made_unique() -> None:
    gt = darwin_item("a.jpg", [darwin_box("car", CAR0)])
    s = evaluation_to_summary(run(gt, ("x", gt), ("x", gt)))
    assert [c["candidate"] for c in s["candidates"]] == ["x", "x#2"]


def test_attributes_are_scored_on_matched_pairs() -> None:
    from tests.unit.service.evaluate.fixtures import CAR, encord_box, encord_row

    def row(answer: str) -> dict[str, Any]:
        r = encord_row(
            data_hash="d", title="a.jpg", label_hash="l", objects=[encord_box("A", CAR, (0.1, 0.1, 0.5, 0.5))]
        )
        occluded = {"name": "Occluded", "featureHash": "occ", "answers": [{"name": answer, "featureHash": answer}]}
        r["object_answers"] = {"A": {"objectHash": "A", "classifications": [occluded]}}
        return r

    s = evaluation_to_summary(run([row("Yes")], ("same", [row("Yes")]), ("other", [row("No")])))
    by_name = {c["candidate"]: c for c in s["candidates"]}
    assert by_name["same"]["attribute_accuracy"] == 1.0
    assert by_name["other"]["attribute_accuracy"] == 0.0
