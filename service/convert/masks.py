"""Masks (``models.masks.Masks``) as the shapes formats write: polygon rings on pixel corners, full-frame COCO RLE.

Polygons trace pixel *corners*, not pixel centres: a ring around one pixel is its unit square, so rasterising
the rings again (pycocotools' ``frPyObjects``, any scanline fill) gives back exactly the mask's pixels. The
mask is traced at twice its resolution, where every run of pixels starts on an even and ends on an odd
coordinate, so ``(c + 1) // 2`` maps each traced point to the corner it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from pycocotools import mask as mask_utils  # type: ignore[import-untyped, unused-ignore]  # no stubs

from models.masks import Masks


@dataclass(frozen=True, slots=True)
class Polygon:
    """One connected part of a mask: its outer boundary and the boundaries of its holes.

    Attributes:
        outer_xy: (k, 2) float64 corners in frame pixels, k >= 3, the first point not repeated at the end.
        holes_xy: each hole's boundary alike (its pixels are outside the mask). An island inside a hole is a
            polygon of its own, so filling every ring even-odd gives the mask back too.
    """

    outer_xy: NDArray[np.float64]
    holes_xy: tuple[NDArray[np.float64], ...] = ()

    def rings(self) -> list[NDArray[np.float64]]:
        """The outer ring then the holes: Darwin's ``paths`` order, Encord's ``polygons`` ring order."""
        return [self.outer_xy, *self.holes_xy]


def mask_to_polygons(masks: Masks, i: int) -> list[Polygon]:
    """Row ``i``'s mask as polygons, one per connected part, largest first, in frame pixels; [] for an empty mask."""
    crop = masks.crop(i)
    if crop.size == 0:
        return []
    up = cv2.resize(crop.astype(np.uint8), (crop.shape[1] * 2, crop.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    origin = masks.origin_xy[i].astype(np.float64)
    rings = [
        _without_repeats((np.asarray(c, np.int32).reshape(-1, 2) + 1) // 2).astype(np.float64) + origin
        for c in contours
    ]
    parents = [int(h[3]) for h in hierarchy[0]]
    polygons: list[Polygon] = []
    for k, ring in enumerate(rings):
        if parents[k] >= 0 or len(ring) < 3:  # holes join their outer ring below; < 3 cannot come from pixels
            continue
        holes = tuple(rings[j] for j, p in enumerate(parents) if p == k and len(rings[j]) >= 3)
        polygons.append(Polygon(ring, holes))
    polygons.sort(key=lambda p: -_area(p.outer_xy))
    return polygons


def _area(ring: NDArray[np.float64]) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def mask_to_coco_rle(masks: Masks, i: int, height_px: int, width_px: int) -> dict[str, object]:
    """Row ``i``'s mask as a COCO RLE on the whole (height_px, width_px) frame: ``{"size": [h, w], "counts": str}``,
    the very counts pycocotools' ``encode`` gives for the full-frame mask.

    Built from the crop's own runs (column-major, as COCO counts run), never a frame-sized array: the work follows
    the mask's size, not the frame's, which adds up over an hour of video with masks on every frame.
    """
    counts = _frame_run_lengths(*_crop_in_frame(masks, i, height_px, width_px), height_px, width_px)
    compressed = mask_utils.frPyObjects(
        {"counts": counts, "size": [int(height_px), int(width_px)]}, height_px, width_px
    )
    return {"size": [int(height_px), int(width_px)], "counts": compressed["counts"].decode("ascii")}


def _crop_in_frame(masks: Masks, i: int, height_px: int, width_px: int) -> tuple[NDArray[np.bool_], int, int]:
    """Row ``i``'s crop cut to the frame, and its top-left corner."""
    crop = masks.crop(i)
    if crop.size == 0:
        return crop, 0, 0
    x, y = (int(v) for v in masks.origin_xy[i])
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + crop.shape[1], width_px), min(y + crop.shape[0], height_px)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.bool_), 0, 0
    return crop[y0 - y : y1 - y, x0 - x : x1 - x], x0, y0


def _frame_run_lengths(crop: NDArray[np.bool_], x: int, y: int, height_px: int, width_px: int) -> list[int]:
    """Uncompressed COCO counts (zeros first, column-major) of a frame holding ``crop`` at ``x``, ``y``."""
    h, w = crop.shape
    padded = np.zeros((w, h + 2), np.int8)  # each crop column with a background pixel above and below
    padded[:, 1:-1] = crop.T
    cols, rows = np.nonzero(np.diff(padded, axis=1))  # run starts and ends, in column-major order
    edges = (x + cols).astype(np.int64) * height_px + y + rows
    if len(edges):  # a run ending at the bottom of a column and one starting at the top of the next are one run
        touching = edges[1:] == edges[:-1]
        keep = np.ones(len(edges), np.bool_)
        keep[1:] &= ~touching
        keep[:-1] &= ~touching
        edges = edges[keep]
    counts = np.diff(np.concatenate([[0], edges, [height_px * width_px]])).tolist()
    if len(counts) > 1 and counts[-1] == 0:  # a mask reaching the last pixel ends on its run (as encode writes)
        counts.pop()
    return [int(c) for c in counts]


def _without_repeats(points: NDArray[np.int32]) -> NDArray[np.int32]:
    """Drop points equal to the one before (corner mapping can merge neighbours of the doubled trace)."""
    if len(points) < 2:
        return points
    keep = np.ones(len(points), np.bool_)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    if len(points) > 1 and np.array_equal(points[0], points[-1]):
        keep[-1] = False
    return points[keep]
