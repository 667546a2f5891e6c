"""The report's worst errors: which false positives and misses are kept per class, in which order, with which
nearest shape of the other side."""

from __future__ import annotations

from service.evaluate.evaluation import evaluate
from service.evaluate.types import BoxXYXY, Dataset, Shape, Unit
from service.evaluate.worst import ErrorCase, ErrorKind


def _unit(item: str, shapes: list[tuple[str, BoxXYXY, float | None]], *, fps: float | None = None) -> Unit:
    unit = Unit(item=item, width=640, height=480, fps=fps)
    for n, (label, box, score) in enumerate(shapes):
        unit.add(0, Shape(object_id=f"{item}-{n}", label=label, xyxy=box, score=score))
    return unit


def _worst(gt: list[Unit], dt: list[Unit], per_class: int) -> dict[str, dict[ErrorKind, list[ErrorCase]]]:
    bench = Dataset("benchmark", "gt.json", "coco", units=gt)
    cand = Dataset("model", "dt.json", "coco_results", units=dt)
    (result,) = evaluate(bench, [cand], worst_per_class=per_class).candidates
    assert result.worst is not None
    return result.worst.worst()


def test_false_positives_highest_score_first_and_kept_per_class() -> None:
    gt = [_unit("a.jpg", [("car", (0, 0, 100, 100), None)])]
    dt = [
        _unit(
            "a.jpg",
            [
                ("car", (0, 0, 100, 100), 0.99),  # the match: no error
                ("car", (300, 300, 340, 340), 0.6),
                ("car", (400, 300, 440, 340), 0.95),
                ("car", (500, 300, 540, 340), 0.9),
                ("car", (20, 0, 120, 100), 0.7),  # a duplicate on the car: IoU 0.67 with it
                ("dog", (200, 200, 260, 260), 0.3),
            ],
        )
    ]
    worst = _worst(gt, dt, per_class=3)

    fps = worst["car"][ErrorKind.FALSE_POSITIVE]
    assert [c.shape.score for c in fps] == [0.95, 0.9, 0.7]  # 0.6 is the fourth: not kept
    assert all(c.nearest is None and c.iou == 0.0 for c in fps[:2])  # nothing near: no benchmark box drawn
    assert fps[2].nearest is not None
    assert fps[2].nearest.object_id == "a.jpg-0"
    assert abs(fps[2].iou - 80 * 100 / (120 * 100)) < 1e-6
    assert fps[2].benchmark_box == (0, 0, 100, 100)
    assert fps[2].candidate_box == (20, 0, 120, 100)
    assert [c.shape.score for c in worst["dog"][ErrorKind.FALSE_POSITIVE]] == [0.3]
    assert ErrorKind.FALSE_NEGATIVE not in worst["car"]


def test_misses_least_overlapped_first_then_largest() -> None:
    gt = [
        _unit(
            "b.jpg",
            [
                ("person", (0, 0, 100, 100), None),  # a candidate box at IoU 0.33 near it
                ("person", (200, 0, 220, 20), None),  # small, nothing near
                ("person", (300, 0, 400, 100), None),  # large, nothing near
                ("person", (0, 200, 100, 300), None),  # found
            ],
        )
    ]
    dt = [_unit("b.jpg", [("person", (50, 0, 150, 100), 0.8), ("person", (0, 200, 100, 300), 0.9)])]
    misses = _worst(gt, dt, per_class=4)["person"][ErrorKind.FALSE_NEGATIVE]

    assert [c.shape.xyxy for c in misses] == [(300, 0, 400, 100), (200, 0, 220, 20), (0, 0, 100, 100)]
    near = misses[2]
    assert near.nearest is not None
    assert near.nearest.xyxy == (50, 0, 150, 100)
    assert abs(near.iou - 1 / 3) < 1e-6
    assert near.score == 0.8  # the nearest candidate box's: what the model thought of it
    assert near.benchmark_box == (0, 0, 100, 100)
    assert near.candidate_box == (50, 0, 150, 100)
    assert misses[0].score is None
    assert misses[0].candidate_box is None
    # the FP that overlapped the miss is an error of its own, whose nearest benchmark object is that miss
    (fp,) = _worst(gt, dt, per_class=4)["person"][ErrorKind.FALSE_POSITIVE]
    assert fp.nearest is not None
    assert fp.nearest.xyxy == (0, 0, 100, 100)


def test_the_worst_survive_trimming_over_many_frames_and_items() -> None:
    # 30 items with one FP each, scores in a shuffled order: the 2 best-scored are kept, whatever the order
    scores = [(7 * n % 30) / 30 for n in range(30)]
    gt = [_unit(f"{n}.jpg", []) for n in range(30)]
    dt = [_unit(f"{n}.jpg", [("car", (10, 10, 50, 50), s)]) for n, s in enumerate(scores)]
    fps = _worst(gt, dt, per_class=2)["car"][ErrorKind.FALSE_POSITIVE]
    assert [c.shape.score for c in fps] == sorted(scores, reverse=True)[:2]
    assert fps[0].item == f"{scores.index(max(scores))}.jpg"


def test_the_frame_keeps_its_rate_and_units() -> None:
    gt = [_unit("clip.mp4", [("car", (0, 0, 10, 10), None)], fps=10.0)]
    (miss,) = _worst(gt, [_unit("clip.mp4", [])], per_class=1)["car"][ErrorKind.FALSE_NEGATIVE]
    assert (miss.item, miss.slot, miss.frame, miss.fps, miss.pixels) == ("clip.mp4", "0", 0, 10.0, True)
    assert (miss.width, miss.height) == (640, 480)  # the size its boxes are pixels of, to scale them to media


def test_the_frame_size_is_the_candidates_when_the_benchmark_gives_none() -> None:
    gt = [Unit(item="a.jpg")]
    gt[0].add(0, Shape("g", "car", (0, 0, 10, 10)))
    (miss,) = _worst(gt, [_unit("a.jpg", [])], per_class=1)["car"][ErrorKind.FALSE_NEGATIVE]
    assert (miss.width, miss.height) == (640, 480)


def test_nothing_is_collected_unless_asked() -> None:
    bench = Dataset("benchmark", "gt.json", "coco", units=[_unit("a.jpg", [("car", (0, 0, 10, 10), None)])])
    cand = Dataset("model", "dt.json", "coco_results", units=[_unit("a.jpg", [])])
    (result,) = evaluate(bench, [cand]).candidates
    assert result.worst is None
