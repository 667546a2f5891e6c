"""Draw one frame's detections with supervision's annotators: boxes, masks, and a label per box (class, score,
track id), colour by class, line and text sized to the frame so labels read on a thumbnail and on a 4K frame."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import supervision as sv

from models.types import Detections, RGBImage

MASK_OPACITY = 0.45


@lru_cache(maxsize=64)
def _annotators(width_px: int, height_px: int) -> tuple[sv.BoxAnnotator, sv.MaskAnnotator, sv.LabelAnnotator]:
    resolution = (width_px, height_px)
    thickness = sv.calculate_optimal_line_thickness(resolution)
    text_scale = sv.calculate_optimal_text_scale(resolution)
    # ColorLookup.CLASS: a class keeps its colour on every frame, item and run of the same model (its index)
    return (
        sv.BoxAnnotator(thickness=thickness, color_lookup=sv.ColorLookup.CLASS),
        sv.MaskAnnotator(opacity=MASK_OPACITY, color_lookup=sv.ColorLookup.CLASS),
        sv.LabelAnnotator(
            text_scale=text_scale,
            text_thickness=max(1, thickness // 2),
            text_padding=max(2, round(6 * text_scale)),
            color_lookup=sv.ColorLookup.CLASS,
            smart_position=True,  # labels of neighbouring boxes pushed apart instead of over each other
        ),
    )


def detection_labels(detections: Detections, class_names: Sequence[str]) -> list[str]:
    """``person 0.87 #3``: class name (the index when the model has no name for it), score, track id if tracked."""
    labels = []
    for row, (class_id, score) in enumerate(
        zip(detections.class_id.tolist(), detections.confidence.tolist(), strict=True)
    ):
        name = class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)
        label = f"{name} {score:.2f}"
        if detections.tracker_id is not None and detections.tracker_id[row] >= 0:
            label += f" #{int(detections.tracker_id[row])}"
        labels.append(label)
    return labels


def scale_to_image(detections: Detections, image: RGBImage, source_wh: tuple[int, int]) -> Detections:
    """Detections in a source frame's pixels, mapped onto ``image`` (the frame scaled, e.g. a preview thumbnail)."""
    height_px, width_px = image.shape[:2]
    if (width_px, height_px) == source_wh or len(detections) == 0:
        return detections
    sx, sy = width_px / source_wh[0], height_px / source_wh[1]
    xyxy = (detections.xyxy * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
    masks = None if detections.masks is None else detections.masks.scaled(sx, sy, height_px, width_px)
    return Detections(xyxy, detections.confidence, detections.class_id, detections.tracker_id, masks=masks)


def draw_detections(
    image: RGBImage,
    detections: Detections,
    class_names: Sequence[str],
    *,
    source_wh: tuple[int, int] | None = None,
) -> RGBImage:
    """A copy of ``image`` with the detections drawn on it.

    Args:
        image: (H, W, 3) uint8 RGB.
        detections: boxes (and masks) in the pixels of the source frame, ``source_wh`` (width, height); None:
            ``image`` is that frame at full size.
        class_names: the model's classes, indexed by ``class_id``.
    """
    if source_wh is not None:
        detections = scale_to_image(detections, image, source_wh)
    height_px, width_px = image.shape[:2]
    if len(detections) == 0:
        return np.array(image, np.uint8)
    # supervision draws on numpy images in OpenCV's BGR order (its palette is RGB): draw on a BGR copy
    canvas = np.ascontiguousarray(image[:, :, ::-1])
    masks = None
    if detections.masks is not None and bool(detections.masks.has_mask().any()):
        masks = np.stack([detections.masks.full(i, height_px, width_px) for i in range(len(detections))])
    drawn = sv.Detections(
        xyxy=detections.xyxy.astype(np.float32),
        mask=masks,
        confidence=detections.confidence,
        class_id=detections.class_id.astype(int),
        tracker_id=None if detections.tracker_id is None else detections.tracker_id.astype(int),
    )
    boxes, mask_annotator, labels = _annotators(width_px, height_px)
    if masks is not None:
        canvas = mask_annotator.annotate(canvas, drawn)
    canvas = boxes.annotate(canvas, drawn)
    canvas = labels.annotate(canvas, drawn, labels=detection_labels(detections, class_names))
    return np.ascontiguousarray(np.asarray(canvas, np.uint8)[:, :, ::-1])
