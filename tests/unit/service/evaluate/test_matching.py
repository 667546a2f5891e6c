"""match_frame: one-to-one per frame, hand-computed tables."""

from __future__ import annotations

import numpy as np
import pytest

from service.evaluate.matching import assign, match_frame, shapes_to_iou_matrix
from service.evaluate.types import NO_CLASS, Shape, ShapeKind


def box(label: str, xyxy: tuple[float, float, float, float], *, crowd: bool = False, oid: str = "") -> Shape:
    return Shape(object_id=oid or f"{label}{xyxy}", label=label, xyxy=xyxy, class_key=label, crowd=crowd)


def polygon(label: str, points: list[tuple[float, float]]) -> Shape:
    ring = tuple(v for p in points for v in p)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return Shape(label, label, (min(xs), min(ys), max(xs), max(ys)), ShapeKind.POLYGON, polygons=(ring,))


CAR = box("car", (0, 0, 100, 100))
PERSON = box("person", (200, 0, 300, 100))


@pytest.mark.parametrize(
    ("name", "gt", "dt", "tp", "fp", "fn", "confusion"),
    [
        ("perfect", [CAR], [box("car", (0, 0, 100, 100))], 1, 0, 0, {("car", "car")}),
        # Two boxes on one car: one TP and one FP (the seed would score two perfect rows).
        ("duplicate", [CAR], [box("car", (0, 0, 100, 100)), box("car", (0, 0, 100, 90))], 1, 1, 0, None),
        # A car nobody drew is an FN (the seed never sees it).
        ("missed", [CAR, PERSON], [box("car", (0, 0, 100, 100))], 1, 0, 1, {("car", "car"), ("person", NO_CLASS)}),
        # Right place, wrong class: FP + FN per class, and a confusion entry car -> person.
        ("class swap", [CAR], [box("person", (0, 0, 100, 100))], 0, 1, 1, {("car", "person")}),
        ("empty frame", [], [], 0, 0, 0, set()),
        ("nothing to find", [], [CAR], 0, 1, 0, {(NO_CLASS, "car")}),
        ("nothing found", [CAR], [], 0, 0, 1, {("car", NO_CLASS)}),
        # IoU exactly 0.5 matches (COCO's >=); 100x100 vs 100x50 inside it.
        ("at threshold", [CAR], [box("car", (0, 0, 100, 50))], 1, 0, 0, None),
        ("below threshold", [CAR], [box("car", (0, 0, 100, 49))], 0, 1, 1, None),
    ],
)
def test_match_frame_table(
    name: str,
    gt: list[Shape],
    dt: list[Shape],
    tp: int,
    fp: int,
    fn: int,
    confusion: set[tuple[str, str]] | None,
) -> None:
    m = match_frame(gt, dt, iou_threshold=0.5)
    assert (len(m.matches), len(m.extra), len(m.missed)) == (tp, fp, fn), name
    if confusion is not None:
        assert set(m.confusion) == confusion, name


def test_duplicate_keeps_the_better_box_as_the_tp() -> None:
    m = match_frame([CAR], [box("car", (0, 0, 100, 90)), box("car", (0, 0, 100, 100))], iou_threshold=0.5)
    assert m.matches == [(0, 1, 1.0)]
    assert m.extra == [0]


def test_assignment_prefers_more_matches_over_one_better_match() -> None:
    # Greedy takes A-X (0.9) and strands B; one-to-one at most pairs takes A-Y and B-X.
    ious = np.array([[0.9, 0.6], [0.6, 0.0]])
    valid = ious >= 0.5
    assert sorted(assign(valid, ious, np.ones_like(valid))) == [(0, 1), (1, 0)]


def test_class_agnostic_pass_prefers_same_class_pairs_for_the_confusion() -> None:
    car, person = box("car", (0, 0, 100, 100)), box("person", (10, 0, 110, 100))
    m = match_frame([car, person], [box("person", (5, 0, 105, 100)), box("car", (5, 0, 105, 100))], iou_threshold=0.5)
    assert sorted(m.confusion) == [("car", "car"), ("person", "person")]


def test_detections_in_a_crowd_region_are_ignored() -> None:
    crowd = box("person", (0, 0, 400, 400), crowd=True)
    m = match_frame([crowd], [box("person", (10, 10, 50, 50)), box("car", (10, 10, 50, 50))], iou_threshold=0.5)
    assert (m.matches, m.missed, m.ignored, m.extra) == ([], [], [0], [1])


def test_polygons_are_scored_by_mask_iou_and_boxes_against_polygons_by_box_iou() -> None:
    triangle = polygon("lesion", [(0, 0), (100, 0), (0, 100)])
    square = polygon("lesion", [(0, 0), (100, 0), (100, 100), (0, 100)])
    ious = shapes_to_iou_matrix([triangle], [square, box("lesion", (0, 0, 100, 100))], width=200, height=200)
    assert ious[0, 0] == pytest.approx(0.5, abs=0.02)  # half the square, up to rasterisation
    assert ious[0, 1] == 1.0  # a box-only candidate is compared with the polygon's box


def test_encord_bitmasks_are_row_major_and_scored_by_mask_iou() -> None:
    from pycocotools import mask as mu

    from service.evaluate.geometry import encord_rle_to_coco_rle

    mask = np.zeros((40, 60), np.uint8)  # (height, width)
    mask[5:20, 10:50] = 1
    # Encord's rleString is COCO's string encoding of the row-major pixels, i.e. of the transposed mask.
    encord = mu.encode(np.asfortranarray(mask.T))["counts"].decode("ascii")
    rle = encord_rle_to_coco_rle(encord, 60, 40)
    assert rle["size"] == [40, 60]
    expected = mu.encode(np.asfortranarray(mask))
    assert rle["counts"] == expected["counts"].decode()
    half = mask.copy()
    half[5:20, 30:50] = 0
    half_rle = mu.encode(np.asfortranarray(half))
    gt = Shape("g", "x", (10, 5, 50, 20), ShapeKind.MASK, rle=rle)
    dt = Shape("d", "x", (10, 5, 30, 20), ShapeKind.MASK, rle={"size": [40, 60], "counts": half_rle["counts"].decode()})
    assert shapes_to_iou_matrix([gt], [dt], width=60, height=40)[0, 0] == pytest.approx(0.5)


@pytest.mark.parametrize("counts", ["", "0", "PPYo0", "zzzzzz"])
def test_rle_whose_runs_do_not_cover_the_mask_is_refused(counts: str) -> None:
    from service.evaluate.geometry import check_rle
    from service.evaluate.types import FormatError

    with pytest.raises(FormatError):
        check_rle({"size": [4, 4], "counts": counts})
