"""Boxes' pixels -> small appearance descriptors the tracker tells objects apart by (pure, no weights).

Computed in the infer stage from the frame the detector just saw (no extra decode), then the pixels are dropped:
only the descriptors ride with the detections to the track stage, which drops them once the ids are filled.

A descriptor is two halves of equal weight, each unit-norm, so the cosine of two descriptors is the mean of
the halves' cosines:

- a hue x saturation histogram of the box's inner part (colour: clothes, skin, hair), and
- the box's inner part shrunk to 4 x 4 grey pixels, zero mean (layout: where it is dark or light; coarse,
  so a box a few pixels off still matches).

Both are cheap (one 16 x 16 resize per box) and survive the small shifts and rescalings between sampled frames.
How well they separate objects is measured by ``preannotate bench tracks`` (with and without them), not assumed.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from models.types import RGBImage

HUE_BINS = 8
SATURATION_BINS = 4
PATCH_PX = 4
APPEARANCE_DIM = HUE_BINS * SATURATION_BINS + PATCH_PX * PATCH_PX
"""Length of a descriptor."""
_INNER = 0.15
"""Fraction of the box's width and height trimmed from each side: the box's edge is mostly background."""
_WORK_PX = 16
"""The side a box's inner part is shrunk to before the histogram and the patch are taken."""


def crops_to_appearance(image: RGBImage, xyxy_px: NDArray[np.float32]) -> NDArray[np.float32]:
    """One unit-norm descriptor per box of ``image`` (corners in its pixels), shape (n, ``APPEARANCE_DIM``).

    A box with no pixels inside the image gets a zero row: the tracker weighs it as neither like nor unlike.
    """
    out = np.zeros((len(xyxy_px), APPEARANCE_DIM), np.float32)
    height_px, width_px = image.shape[:2]
    for row, (x1, y1, x2, y2) in enumerate(xyxy_px.tolist()):
        trim_x, trim_y = (x2 - x1) * _INNER, (y2 - y1) * _INNER
        left, right = max(0, int(x1 + trim_x)), min(width_px, int(np.ceil(x2 - trim_x)))
        top, bottom = max(0, int(y1 + trim_y)), min(height_px, int(np.ceil(y2 - trim_y)))
        if right - left < 2 or bottom - top < 2:
            continue
        small = cv2.resize(image[top:bottom, left:right], (_WORK_PX, _WORK_PX), interpolation=cv2.INTER_AREA)
        out[row] = _descriptor(np.asarray(small, np.uint8))
    return out


def _descriptor(small: RGBImage) -> NDArray[np.float32]:
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [HUE_BINS, SATURATION_BINS], [0, 180, 0, 256]).ravel()
    grey = cv2.resize(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (PATCH_PX, PATCH_PX), interpolation=cv2.INTER_AREA)
    patch = grey.astype(np.float32).ravel()
    patch -= patch.mean()
    halves = [_unit(hist.astype(np.float32)), _unit(patch)]
    return np.concatenate(halves) / np.float32(np.sqrt(2.0))


def _unit(vector: NDArray[np.float32]) -> NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    return vector / np.float32(norm) if norm > 1e-6 else np.zeros_like(vector)


def cosine_similarity(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """(len(a), len(b)) cosines of unit-norm (or zero) rows; a zero row is 0 against everything."""
    return np.asarray(a @ b.T, np.float32)
