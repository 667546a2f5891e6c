"""Detections drawn with supervision: a class keeps its colour, labels grow with the frame, masks stay inside."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from models.masks import Masks
from models.types import Detections
from service.render.annotate import detection_labels, draw_detections
from tests.builders import make_detections

NAMES = ["person", "car"]


def blank(height: int, width: int, value: int = 0) -> NDArray[np.uint8]:
    return np.full((height, width, 3), value, np.uint8)


def edge_colour(image: NDArray[np.uint8], x: int, y1: int, y2: int) -> tuple[int, ...]:
    """The colour on a box's left edge, half way down."""
    return tuple(int(v) for v in image[(y1 + y2) // 2, x])


def test_a_class_keeps_its_colour_across_calls_and_frames_and_classes_differ() -> None:
    box = [[40, 60, 120, 150]]
    first = draw_detections(blank(240, 320), make_detections(box, [0.9], [0]), NAMES)
    other_frame = draw_detections(blank(240, 320, 90), make_detections(box, [0.3], [0]), NAMES)
    car = draw_detections(blank(240, 320), make_detections(box, [0.9], [1]), NAMES)
    assert edge_colour(first, 40, 60, 150) == edge_colour(other_frame, 40, 60, 150) != (0, 0, 0)
    assert edge_colour(car, 40, 60, 150) != edge_colour(first, 40, 60, 150)


def _label_height_px(size: tuple[int, int]) -> int:
    """Rows of the label's filled background above a box in the middle of a black frame."""
    height, width = size
    x1, y1, x2, y2 = width // 3, height // 2, 2 * width // 3, 3 * height // 4
    drawn = draw_detections(blank(height, width), make_detections([[x1, y1, x2, y2]], [0.9], [0]), NAMES)
    colour = drawn[(y1 + y2) // 2, x1]
    above = np.all(drawn[: y1 - 1, x1:x2] == colour, axis=2)
    rows = np.flatnonzero(above.any(axis=1))
    return int(rows.max() - rows.min() + 1) if len(rows) else 0


def test_labels_are_larger_on_a_4k_frame_than_on_a_thumbnail() -> None:
    small, large = _label_height_px((240, 320)), _label_height_px((2160, 3840))
    assert small > 0
    assert large > 3 * small


def test_a_mask_is_drawn_only_inside_its_mask() -> None:
    height, width = 200, 200
    mask = np.zeros((height, width), np.bool_)
    yy, xx = np.mgrid[:height, :width]
    mask[(yy - 120) ** 2 + (xx - 100) ** 2 < 30**2] = True
    dets = make_detections([[40, 60, 160, 180]], [0.9], [0])
    dets = Detections(dets.xyxy, dets.confidence, dets.class_id, masks=Masks.from_full(mask[None]))
    image = blank(height, width, 128)
    drawn = draw_detections(image, dets, NAMES)
    changed = np.any(drawn != image, axis=2)
    assert changed[mask].mean() > 0.99  # tinted all over the mask
    inside_box = np.zeros_like(mask)
    inside_box[70:170, 50:150] = True  # inside the box, clear of its edges and its label
    assert not changed[inside_box & ~mask].any()


def test_labels_name_class_score_and_track() -> None:
    dets = make_detections([[0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]], [0.87, 0.5, 0.25], [0, 1, 7])
    dets = Detections(dets.xyxy, dets.confidence, dets.class_id, np.array([3, -1, 4], np.int64))
    assert detection_labels(dets, NAMES) == ["person 0.87 #3", "car 0.50", "7 0.25 #4"]


def test_source_wh_scales_boxes_onto_a_thumbnail() -> None:
    thumb = draw_detections(
        blank(120, 160), make_detections([[80, 120, 240, 300]], [0.9], [0]), NAMES, source_wh=(320, 240)
    )
    assert edge_colour(thumb, 40, 60, 119) != (0, 0, 0)  # x1 80 of 320 -> 40 of 160
    assert not np.any(thumb[:, :38])
