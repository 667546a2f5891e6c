"""Video tracks are scored on every frame the editor shows them, not on keyframes only (hand-computed answers)."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import ErrorCode, PreannotateError
from service.evaluate.evaluation import evaluate, evaluation_to_summary
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.load_label_studio import sequence_to_frames
from service.evaluate.tracks import MAX_FILLED_FRAMES, FrameBudget, fill_between, lerp
from service.evaluate.types import Dataset, FormatError
from tests.unit.service.evaluate.fixtures import Box, darwin_video, ls_video_task

CAR = (0, 0, 100, 100)


def load(doc: Any, role: str = BENCHMARK) -> Dataset:
    return documents_to_datasets([("f.json", doc)], name="x", role=role)[0]


def boxes(dataset: Dataset) -> dict[int, list[tuple[float, ...]]]:
    """Frame -> box corners of the one unit's shapes."""
    (unit,) = dataset.units
    return {f: [tuple(s.xyxy) for s in shapes] for f, shapes in sorted(unit.frames.items())}


def moved(box: Box, dx: float) -> Box:
    return (box[0] + dx, box[1], box[2] + dx, box[3])


# --- the generic filler ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interpolate", "expected"),
    [
        (True, {1: 0.0, 2: 2.0, 3: 4.0, 4: 6.0, 5: 8.0, 6: 8.0, 7: 8.0}),  # linear, then the last knot held
        (False, {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 8.0, 6: 8.0, 7: 8.0}),  # the previous knot held
    ],
)
def test_fill_between(interpolate: bool, expected: dict[int, float]) -> None:
    knots = {1: 0.0, 5: 8.0}
    between = (lambda a, b, t: lerp(a, b, t)) if interpolate else None
    # Frame 0 comes before the first knot: the track has not started there.
    assert fill_between(knots, range(8), between) == expected


def test_the_frame_budget_is_spent_before_anything_is_built() -> None:
    budget = FrameBudget()
    budget.spend(MAX_FILLED_FRAMES)
    with pytest.raises(FormatError, match="more than"):
        budget.spend(1)


# --- Darwin: ranges (end exclusive), interpolated or held -------------------------------------------------


@pytest.mark.parametrize(
    ("keyframes", "ranges", "interpolated", "expected"),
    [
        ("static", [[0, 10]], True, {f: [CAR] for f in range(10)}),
        (
            "moving",
            [[0, 5]],
            True,
            {0: [CAR], 1: [moved(CAR, 10)], 2: [moved(CAR, 20)], 3: [moved(CAR, 30)], 4: [moved(CAR, 40)]},
        ),
        ("moving", [[0, 5]], False, {0: [CAR], 1: [CAR], 2: [CAR], 3: [CAR], 4: [moved(CAR, 40)]}),
        ("moving", [[0, 5]], None, {0: [CAR], 1: [CAR], 2: [CAR], 3: [CAR], 4: [moved(CAR, 40)]}),  # V7 held
        # Two ranges: hidden in between; past the last keyframe the box is held to the range's end.
        ("moving", [[0, 2], [4, 7]], True, {0: [CAR], 1: [moved(CAR, 10)], **{f: [moved(CAR, 40)] for f in (4, 5, 6)}}),
        ("moving", [], True, {0: [CAR], 4: [moved(CAR, 40)]}),  # no ranges: the keyframes as exported
    ],
)
def test_darwin_tracks_cover_their_ranges(
    keyframes: str, ranges: list[list[int]], interpolated: bool | None, expected: dict[int, list[Box]]
) -> None:
    frames = {0: CAR, 5: CAR} if keyframes == "static" else {0: CAR, 4: moved(CAR, 40)}
    doc = darwin_video(
        "v.mp4", {f: [("t", "car", b)] for f, b in frames.items()}, ranges=ranges, interpolated=interpolated
    )
    assert boxes(load(doc)) == expected


def test_darwin_segments_are_ranges_and_the_held_frames_keep_the_keyframes_score() -> None:
    doc = darwin_video("v.mp4", {0: [("t", "car", CAR)]}, ranges=[[0, 3]])
    ann = doc["annotations"][0]
    ann["segments"] = ann.pop("ranges")
    ann["frames"]["0"]["inference"] = {"confidence": 0.7, "model": {"id": "m", "name": "m", "type": "external"}}
    (unit,) = load(doc).units
    assert {f: [s.score for s in shapes] for f, shapes in unit.frames.items()} == {0: [0.7], 1: [0.7], 2: [0.7]}
    assert unit.object_order == ["t"]


def test_darwin_video_tags_cover_their_ranges() -> None:
    doc = darwin_video("v.mp4", {})
    doc["annotations"] = [
        {
            "id": "g",
            "name": "glare",
            "slot_names": ["0"],
            "frames": {"2": {"tag": {}, "keyframe": True}},
            "ranges": [[2, 5]],
        }
    ]
    assert load(doc).units[0].tags == {(2, "glare", "true"), (3, "glare", "true"), (4, "glare", "true")}


def test_an_absurd_darwin_range_is_refused_not_expanded() -> None:
    doc = darwin_video("v.mp4", {0: [("t", "car", CAR)]}, ranges=[[0, 10**12]])
    with pytest.raises(PreannotateError, match="more than 1000000 frames") as exc:
        load(doc)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


# --- Label Studio: sequence keyframes, enabled, framesCount ------------------------------------------------


def kf(frame: int, x: float, enabled: bool | None = True) -> dict[str, Any]:
    key: dict[str, Any] = {"frame": frame, "rotation": 0, "x": x, "y": 10.0, "width": 20.0, "height": 25.0}
    if enabled is not None:
        key["enabled"] = enabled
    return key


@pytest.mark.parametrize(
    ("sequence", "frames_count", "expected"),
    [
        # examples/ls_create_videorectangle_prediction.json: 10 -> 20, the span ending on 20.
        ([kf(10, 5.0), kf(20, 9.0, False)], 250, {f: 5.0 + 0.4 * (f - 10) for f in range(10, 21)}),
        ([kf(10, 5.0)], 12, {10: 5.0, 11: 5.0, 12: 5.0}),  # an open span lasts to the end of the video
        ([kf(10, 5.0)], None, {10: 5.0}),  # with no known end, the keyframe only
        ([kf(1, 0.0), kf(3, 2.0, False), kf(6, 6.0, False)], 250, {1: 0.0, 2: 1.0, 3: 2.0, 6: 6.0}),  # a gap
        ([kf(1, 0.0, None), kf(3, 4.0, None)], 3, {1: 0.0, 2: 2.0, 3: 4.0}),  # enabled defaults to true
        ([kf(5, 1.0, False), kf(1, 0.0)], 250, {1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0}),  # any order
    ],
)
def test_ls_sequence_frames(
    sequence: list[dict[str, Any]], frames_count: int | None, expected: dict[int, float]
) -> None:
    value: dict[str, Any] = {"labels": ["car"], "sequence": sequence}
    if frames_count is not None:
        value["framesCount"] = frames_count
    frames = sequence_to_frames(value, FrameBudget())
    assert {f: k["x"] for f, k in frames.items()} == pytest.approx(expected)
    assert all(k["width"] == 20.0 for k in frames.values())


def test_ls_interpolated_middle_frame_in_percent_and_0_based() -> None:
    task = ls_video_task(1, "v.mp4", [kf(1, 0.0), kf(10, 9.0, False)])
    (unit,) = load([task], role=CANDIDATE).units
    assert sorted(unit.frames) == list(range(10))  # LS frames 1..10 are decoder frames 0..9
    # LS frame 6 is 5/9 of the way from frame 1 (x 0) to frame 10 (x 9): x 5, still 20 x 25 percent.
    (shape,) = unit.frames[5]
    assert shape.xyxy == pytest.approx((5.0, 10.0, 25.0, 35.0))
    assert shape.box_src == pytest.approx((5.0, 10.0, 20.0, 25.0))


# --- Scored end to end --------------------------------------------------------------------------------------


def summary(bench: Any, cand: Any) -> dict[str, Any]:
    b = load(bench)
    c = documents_to_datasets([("c.json", cand)], name="c", role=CANDIDATE, benchmark=b)[0]
    return evaluation_to_summary(evaluate(b, [c], iou_threshold=0.5))


@pytest.mark.parametrize("interpolated", [True, False])
def test_a_perfect_static_track_matches_a_benchmark_drawn_on_every_frame(interpolated: bool) -> None:
    gt = darwin_video("v.mp4", {f: [("g", "car", CAR)] for f in range(10)})
    cand = darwin_video(
        "v.mp4", {0: [("t", "car", CAR)], 5: [("t", "car", CAR)]}, ranges=[[0, 10]], interpolated=interpolated
    )
    s = summary(gt, cand)
    assert (s["tp"], s["fp"], s["fn"]) == (10, 0, 0)  # keyframes alone gave TP 2, FN 8
    assert s["items"]["frames"] == 10


def test_a_moving_ls_track_matches_a_moving_darwin_benchmark_frame_by_frame() -> None:
    # The benchmark box moves 10 px a frame on a 640x480 video; the LS track has keyframes on LS frames 1
    # and 10 only (x 0 px and 90 px, in percent), so frames 1..8 are interpolated: every one matches exactly.
    gt = darwin_video("v.mp4", {f: [("g", "car", moved(CAR, 10 * f))] for f in range(10)})
    w, h = 100 * 100 / 640, 100 * 100 / 480
    sequence = [
        {"frame": 1, "enabled": True, "rotation": 0, "x": 0.0, "y": 0.0, "width": w, "height": h},
        {"frame": 10, "enabled": False, "rotation": 0, "x": 100 * 90 / 640, "y": 0.0, "width": w, "height": h},
    ]
    s = summary(gt, [ls_video_task(1, "v.mp4", sequence)])
    assert (s["tp"], s["fp"], s["fn"]) == (10, 0, 0)
    assert s["mean_iou"] == pytest.approx(1.0)
