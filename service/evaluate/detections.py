"""Loaded labels back as model detections, to draw them: a unit's shapes on one frame -> ``Detections`` in the
pixels of the decoded frame (boxes, masks from polygons or RLEs, class index, score, track number)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from models.masks import Masks
from models.types import Detections
from service.evaluate.geometry import mask_utils, shape_to_rle
from service.evaluate.types import Dataset, Shape, Unit

UNSCORED = 1.0
"""The score drawn on a shape that has none (a human label)."""
MAX_TRACK = 2**62
"""Integer track ids drawn as they are must fit the int64 ``Detections.tracker_id``."""


def class_names_of(dataset: Dataset) -> list[str]:
    """The dataset's classes in its own order: a COCO file's categories (the order ``run`` writes the model's
    classes in, so colours match a run's previews), then every other label by first appearance."""
    names = dict.fromkeys(dataset.coco_categories.values())
    for unit in dataset.units:
        for shapes in unit.frames.values():
            names.update(dict.fromkeys(s.label for s in shapes))
    return list(names)


def track_numbers(unit: Unit) -> dict[str, int]:
    """Track id -> the number drawn (``#n``) for the unit's tracked shapes (``Shape.track_id``: COCO's
    ``track_id``, a Darwin / Label Studio / Encord video object's id); untracked shapes have none. Integer ids
    (``run``'s) are drawn as they are; other ids are numbered from 1 in order of first appearance."""
    order = dict.fromkeys(
        shape.track_id for frame in sorted(unit.frames) for shape in unit.frames[frame] if shape.track_id is not None
    )
    if order and all(track.isascii() and track.isdecimal() and int(track) < MAX_TRACK for track in order):
        return {track: int(track) for track in order}
    return {track: n for n, track in enumerate(order, start=1)}


def frame_shapes(unit: Unit, frame: int, width_px: int, height_px: int) -> list[Shape]:
    """The unit's shapes on ``frame`` in pixels of a decoded ``width_px`` x ``height_px`` frame: percent (Label
    Studio video, a file without the frame's size) and another pixel size are scaled to it."""
    shapes = unit.frames.get(frame, [])
    if not unit.pixel_size_known:
        sx, sy = width_px / 100.0, height_px / 100.0
    elif unit.width and unit.height:
        sx, sy = width_px / unit.width, height_px / unit.height
    else:
        return list(shapes)
    if (sx, sy) == (1.0, 1.0):
        return list(shapes)
    return [_scaled(s, sx, sy) for s in shapes]


def _scaled(shape: Shape, sx: float, sy: float) -> Shape:
    x1, y1, x2, y2 = shape.xyxy
    rings = tuple(tuple(v * (sx if i % 2 == 0 else sy) for i, v in enumerate(r)) for r in shape.polygons)
    # an RLE is pixels of the labelled frame's size: it is kept, and drawn only where that size is the frame's
    return dataclasses.replace(shape, xyxy=(x1 * sx, y1 * sy, x2 * sx, y2 * sy), polygons=rings)


def shapes_to_detections(
    shapes: Sequence[Shape],
    *,
    class_ids: Mapping[str, int],
    tracks: Mapping[str, int],
    width_px: int,
    height_px: int,
) -> Detections:
    """One frame's shapes (in pixels of a ``width_px`` x ``height_px`` frame, see ``in_frame_pixels``) as
    Detections: class index from ``class_ids``, score (``UNSCORED`` when none), track number of the shape's
    ``track_id`` from ``tracks`` (-1 for a shape in none; None when no shape is tracked), a full-frame mask per
    polygon or RLE shape."""
    xyxy = np.array([s.xyxy for s in shapes], np.float32).reshape(-1, 4)
    confidence = np.array([UNSCORED if s.score is None else s.score for s in shapes], np.float32)
    class_id = np.array([class_ids[s.label] for s in shapes], np.int64)
    tracker_id = None
    if any(s.track_id in tracks for s in shapes):
        tracker_id = np.array([-1 if s.track_id is None else tracks.get(s.track_id, -1) for s in shapes], np.int64)
    masks = None
    if any(s.has_mask for s in shapes):  # one full-frame mask at a time: 4K frames of many shapes stay small
        masks = Masks.concat([_mask(s, width_px, height_px) for s in shapes])
    return Detections(xyxy, confidence, class_id, tracker_id, masks=masks)


def _mask(shape: Shape, width_px: int, height_px: int) -> Masks:
    rle = shape_to_rle(shape, height_px, width_px) if shape.has_mask else None
    if rle is None:
        return Masks.empty(1)
    full = np.asarray(mask_utils().decode(rle), np.bool_)
    return Masks.from_full(full[None])
