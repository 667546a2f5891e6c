"""One benchmark/candidate scene written in every evaluation format, for calibration tests.

A scene is a list of images, each with benchmark boxes ``(class, xyxy)`` and candidate boxes
``(class, xyxy, score)``; the builders below write it as COCO + COCO results, Darwin, Label Studio and Encord.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.unit.service.evaluate.fixtures import (
    Box,
    coco,
    coco_results,
    darwin_box,
    darwin_item,
    encord_box,
    encord_row,
    ls_rect,
    ls_task,
)

HERE, AWAY = (10.0, 10.0, 110.0, 110.0), (300.0, 300.0, 400.0, 400.0)  # a benchmark object's place; background


@dataclass
class Image:
    gt: list[tuple[str, Box]] = field(default_factory=list)
    dets: list[tuple[str, Box, float]] = field(default_factory=list)


def f1_scene() -> list[Image]:
    """car: 11 objects; TPs scored 0.6 .. 0.87 on ten of them, one missed, an FP at 0.95 and FPs at 0.5 .. 0.3
    below: F1 peaks at exactly 0.6 (TP 10, FP 1, FN 1: P = R = F1 = 10/11). person: 3 objects, all found at 0.9
    (too little support for the default minimum of 10)."""
    images = [Image([("car", HERE)], [("car", HERE, round(0.6 + 0.03 * i, 2))]) for i in range(10)]
    images.append(Image([("car", HERE)], [("car", AWAY, 0.95)]))
    for i in range(5):
        images[i].dets.append(("car", AWAY, round(0.5 - 0.05 * i, 2)))
    for i in range(3):
        images[i].gt.append(("person", (150.0, 150.0, 250.0, 250.0)))
        images[i].dets.append(("person", (150.0, 150.0, 250.0, 250.0), 0.9))
    return images


def ranked_scene(outcomes: list[tuple[float, bool]], *, support: int) -> list[Image]:
    """``support`` car objects, one per image; each (score, hit) outcome, in order, is a detection on the next
    unfound object (hit) or on background (miss)."""
    images = [Image([("car", HERE)]) for _ in range(support)]
    found = 0
    for n, (score, hit) in enumerate(outcomes):
        if hit:
            images[found].dets.append(("car", HERE, score))
            found += 1
        else:
            images[n % support].dets.append(("car", AWAY, score))
    return images


def _name(i: int) -> str:
    return f"img{i:03d}.png"


def to_coco(images: list[Image]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    gt = coco({_name(i): im.gt for i, im in enumerate(images)})
    return gt, coco_results(gt, {_name(i): [(c, b, s) for c, b, s in im.dets] for i, im in enumerate(images)})


def to_darwin(images: list[Image]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    gt = [
        darwin_item(_name(i), [darwin_box(c, b, id_=f"g{i}-{k}") for k, (c, b) in enumerate(im.gt)])
        for i, im in enumerate(images)
    ]
    dt = [
        darwin_item(_name(i), [darwin_box(c, b, confidence=s, id_=f"d{i}-{k}") for k, (c, b, s) in enumerate(im.dets)])
        for i, im in enumerate(images)
    ]
    return gt, dt


def to_label_studio(images: list[Image]) -> list[dict[str, Any]]:
    """One export: the annotations are the benchmark, model ``m1``'s predictions the candidate."""
    return [
        ls_task(
            i + 1,
            _name(i),
            annotations=[[ls_rect(c, b, id_=f"g{i}-{k}") for k, (c, b) in enumerate(im.gt)]],
            predictions={"m1": [ls_rect(c, b, score=s, id_=f"d{i}-{k}") for k, (c, b, s) in enumerate(im.dets)]},
        )
        for i, im in enumerate(images)
    ]


def _encord_xywh(box: Box) -> Box:
    x1, y1, x2, y2 = box
    return x1 / 1000, y1 / 500, (x2 - x1) / 1000, (y2 - y1) / 500


def to_encord(images: list[Image]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def row(i: int, objects: list[dict[str, Any]]) -> dict[str, Any]:
        return encord_row(data_hash=f"dh-{i}", title=_name(i), label_hash=f"lh-{i}", objects=objects)

    gt = [
        row(i, [encord_box(f"g{i}k{k}", (f"f-{c}", c), _encord_xywh(b)) for k, (c, b) in enumerate(im.gt)])
        for i, im in enumerate(images)
    ]
    dt = [
        row(
            i,
            [
                encord_box(f"d{i}k{k}", (f"f-{c}", c), _encord_xywh(b), confidence=s, manual=False)
                for k, (c, b, s) in enumerate(im.dets)
            ],
        )
        for i, im in enumerate(images)
    ]
    return gt, dt
