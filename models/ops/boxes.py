"""Box geometry: the one place for each conversion, for IoU, and for letterbox/NMS."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from models.types import RGBImage

LETTERBOX_PAD_VALUE = 114  # Ultralytics' grey; exports are trained with it


def xyxy_to_xywh(xyxy: NDArray[np.float32]) -> NDArray[np.float32]:
    """(n, 4) corners -> (n, 4) top-left x, y, width, height (same units)."""
    out = xyxy.copy()
    out[:, 2:] -= xyxy[:, :2]
    return out.astype(np.float32, copy=False)


def cxcywh_to_xyxy(cxcywh: NDArray[np.float32]) -> NDArray[np.float32]:
    """(n, 4) centre x, y, width, height -> (n, 4) corners (same units)."""
    half = cxcywh[:, 2:] / 2
    return np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1).astype(np.float32, copy=False)


def clip_xyxy(xyxy: NDArray[np.float32], width_px: int, height_px: int) -> NDArray[np.float32]:
    """Clip (n, 4) pixel corners to the image."""
    out = xyxy.copy()
    np.clip(out[:, 0::2], 0, width_px, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height_px, out=out[:, 1::2])
    return out


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the network input: ``net = src * scale + pad``, per axis.

    The scales are the exact resize ratios (rounded new size / source size), so mapping back is the
    inverse of what ``cv2.resize`` did (and what Ultralytics' ``scale_boxes`` does).
    """

    scale_x: float
    scale_y: float
    pad_x_px: float
    pad_y_px: float

    def to_source(self, xyxy: NDArray[np.float32]) -> NDArray[np.float32]:
        """Map (n, 4) network-input pixel corners back to source-frame pixels."""
        out = xyxy.copy()
        out[:, 0::2] = (out[:, 0::2] - self.pad_x_px) / self.scale_x
        out[:, 1::2] = (out[:, 1::2] - self.pad_y_px) / self.scale_y
        return out


@dataclass(frozen=True, slots=True)
class LetterboxPlan:
    """Where a frame goes in the network input: resized to ``resized_w x resized_h`` px, its top-left
    corner at (``left_px``, ``top_px``) of a ``width_px x height_px`` canvas padded with grey."""

    resized_w: int
    resized_h: int
    top_px: int
    left_px: int
    height_px: int
    width_px: int
    letterbox: Letterbox


def plan_letterbox(
    src_h: int, src_w: int, height_px: int, width_px: int, *, stride_px: int | None = None
) -> LetterboxPlan:
    """The geometry ``letterbox`` applies to a ``src_w x src_h`` frame (see there)."""
    scale = min(height_px / src_h, width_px / src_w)
    new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    if stride_px is not None:
        height_px = new_h + (height_px - new_h) % stride_px
        width_px = new_w + (width_px - new_w) % stride_px
    pad_x, pad_y = (width_px - new_w) / 2, (height_px - new_h) / 2
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    mapping = Letterbox(scale_x=new_w / src_w, scale_y=new_h / src_h, pad_x_px=float(left), pad_y_px=float(top))
    return LetterboxPlan(new_w, new_h, top, left, height_px, width_px, mapping)


def resize_for(image: RGBImage, plan: LetterboxPlan) -> RGBImage:
    """The frame resized as the plan says (bilinear, like Ultralytics), unpadded; itself when the size fits."""
    if image.shape[:2] == (plan.resized_h, plan.resized_w):
        return image
    return np.asarray(cv2.resize(image, (plan.resized_w, plan.resized_h), interpolation=cv2.INTER_LINEAR), np.uint8)


def letterbox(
    image: RGBImage, height_px: int, width_px: int, *, stride_px: int | None = None
) -> tuple[RGBImage, Letterbox]:
    """Resize keeping the aspect ratio, then pad (centred) to exactly height x width.

    With ``stride_px``, pad only up to the next multiple of the stride instead (Ultralytics'
    ``auto=True``, which its predictor uses for dynamic-shape exports): the output is then at most
    height x width, e.g. 224 x 320 for a 400 x 600 frame at 320.
    """
    plan = plan_letterbox(image.shape[0], image.shape[1], height_px, width_px, stride_px=stride_px)
    out = cv2.copyMakeBorder(
        resize_for(image, plan),
        plan.top_px,
        plan.height_px - plan.resized_h - plan.top_px,
        plan.left_px,
        plan.width_px - plan.resized_w - plan.left_px,
        cv2.BORDER_CONSTANT,
        value=(LETTERBOX_PAD_VALUE,) * 3,
    )
    return np.asarray(out, np.uint8), plan.letterbox


def box_iou_matrix(a_xyxy: NDArray[np.floating], b_xyxy: NDArray[np.floating]) -> NDArray[np.float64]:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4), corners in one unit, continuous (no +1 px).

    The one IoU matrix: the tracker's matching and evaluation's both use it. Computed in float64, so an IoU
    near a threshold does not flip on rounding.

    Returns:
        (n, m) IoU in [0, 1]; 0 where the union is empty (degenerate boxes).
    """
    a, b = _as_boxes(a_xyxy), _as_boxes(b_xyxy)
    inter = _intersections(a, b)
    union = _areas(a)[:, None] + _areas(b)[None, :] - inter
    iou: NDArray[np.float64] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def box_iof_matrix(a_xyxy: NDArray[np.floating], b_xyxy: NDArray[np.floating]) -> NDArray[np.float64]:
    """Intersection of each ``a`` box with each ``b`` box over the ``a`` box's own area (COCO's crowd rule);
    0 where an ``a`` box has no area."""
    a, b = _as_boxes(a_xyxy), _as_boxes(b_xyxy)
    inter = _intersections(a, b)
    area_a = _areas(a)[:, None]
    iof: NDArray[np.float64] = np.divide(inter, area_a, out=np.zeros_like(inter), where=area_a > 0)
    return iof


def _as_boxes(xyxy: NDArray[np.floating]) -> NDArray[np.float64]:
    return np.asarray(xyxy, np.float64).reshape(-1, 4)


def _areas(xyxy: NDArray[np.float64]) -> NDArray[np.float64]:
    area: NDArray[np.float64] = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
    return area


def _intersections(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """(n, m) intersection areas of every ``a`` box with every ``b`` box (zeros when either side is empty)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter: NDArray[np.float64] = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter


def nms_per_class(
    xyxy: NDArray[np.float32],
    confidence: NDArray[np.float32],
    class_id: NDArray[np.int64],
    *,
    iou_threshold: float,
    max_detections: int = 300,
) -> NDArray[np.intp]:
    """Indices kept by non-maximum suppression within each class, best first."""
    if len(xyxy) == 0:
        return np.zeros((0,), np.intp)
    xywh = xyxy_to_xywh(xyxy)
    # No top_k here: OpenCV applies it to the candidates *before* suppression, which drops boxes
    # that would have survived (Ultralytics suppresses first, then keeps max_det).
    keep = cv2.dnn.NMSBoxesBatched(xywh.tolist(), confidence.tolist(), class_id.tolist(), 0.0, iou_threshold)
    kept = np.asarray(keep, np.intp).reshape(-1)
    # OpenCV returns them grouped by class; order best first so truncation keeps the best.
    return kept[np.argsort(-confidence[kept], kind="stable")][:max_detections]


def scale_to_fit(height_px: int, width_px: int, max_side_px: int, multiple: int = 1) -> tuple[int, int]:
    """Size (h, w) with the longest side at most ``max_side_px`` (never upscaled), each side
    rounded to a multiple of ``multiple``."""
    scale = min(1.0, max_side_px / max(height_px, width_px))
    h = max(multiple, round(height_px * scale / multiple) * multiple)
    w = max(multiple, round(width_px * scale / multiple) * multiple)
    return h, w
