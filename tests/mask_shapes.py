"""Hand-drawn masks for format tests: a disk, a ring (one hole), two parts; and items carrying them."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from models.masks import Masks
from service.pipeline.frames import FrameResult
from tests.builders import make_detections, make_result

H, W = 90, 120


def disk(cx: float, cy: float, r: float, h: int = H, w: int = W) -> NDArray[np.bool_]:
    yy, xx = np.mgrid[:h, :w]
    return np.asarray((xx - cx) ** 2 + (yy - cy) ** 2 < r**2, np.bool_)


def ring(cx: float, cy: float, r_out: float, r_in: float, h: int = H, w: int = W) -> NDArray[np.bool_]:
    return disk(cx, cy, r_out, h, w) & ~disk(cx, cy, r_in, h, w)


def two_parts(h: int = H, w: int = W) -> NDArray[np.bool_]:
    """A large disk and a smaller square apart from it."""
    mask = disk(30, 40, 18, h, w)
    mask[60:75, 90:110] = True
    return mask


def shapes() -> dict[str, NDArray[np.bool_]]:
    return {"disk": disk(60, 45, 25), "ring": ring(60, 45, 30, 12), "two parts": two_parts()}


def box_of(mask: NDArray[np.bool_]) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def masked_result(masks: list[NDArray[np.bool_] | None], classes: list[int], **info: object) -> FrameResult:
    """One frame whose rows are the masks (None: a row with its box only, of a fixed box), classes as given."""
    h, w = int(info.pop("height", H)), int(info.pop("width", W))  # type: ignore[call-overload]
    boxes = [box_of(m) if m is not None else [5.0, 5.0, 25.0, 20.0] for m in masks]
    full = np.stack([m if m is not None else np.zeros((h, w), np.bool_) for m in masks])
    dets = make_detections(boxes, [0.9 - 0.1 * i for i in range(len(masks))], classes)
    return make_result(dets.with_masks(Masks.from_full(full)), width=w, height=h, **info)
