"""Image regions with a shape: ``brushlabels`` (a mask in LS's brush RLE) and ``polygonlabels`` (percent points).

A row's mask goes to a BrushLabels control exactly, pixel for pixel. A PolygonLabels region is one closed ring
without holes (LS polygons have neither holes nor parts), so it is the outer boundary of the mask's largest
connected part: holes are filled, smaller parts left out (BrushLabels keeps them). A row without a mask that
only a brush or polygon control has a label for is written as its box in that shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.masks import Masks
from service.convert.label_studio_types import LsBoxPct, LsBrushRegion, LsPolygonRegion
from service.convert.ls_brush import mask_to_ls_brush_rle
from service.convert.masks import mask_to_polygons


@dataclass(frozen=True, slots=True)
class RegionHead:
    """What every image region of one detection row carries besides its shape."""

    id: str
    from_name: str
    to_name: str
    label: str
    width_px: int
    height_px: int
    score: float


def row_mask(masks: Masks | None, row: int) -> Masks | None:
    """Row ``row``'s one-row masks when it has a mask, else None (the row is its box)."""
    if masks is None or not bool(masks.has_mask()[row]):
        return None
    return masks[np.asarray([row], np.intp)]


def brush_region(head: RegionHead, mask: Masks | None, box: LsBoxPct) -> LsBrushRegion | None:
    """A ``brushlabels`` region of the row's mask, or of its box when it has none; None when no pixel of it is
    inside the image."""
    full = mask.full(0, head.height_px, head.width_px) if mask is not None else _box_mask(head, box)
    if not full.any():
        return None
    return {
        "id": head.id,
        "from_name": head.from_name,
        "to_name": head.to_name,
        "type": "brushlabels",
        "original_width": head.width_px,
        "original_height": head.height_px,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_ls_brush_rle(full), "brushlabels": [head.label]},
        "score": head.score,
    }


def polygon_region(head: RegionHead, mask: Masks | None, box: LsBoxPct) -> LsPolygonRegion | None:
    """A ``polygonlabels`` region: the outer ring of the mask's largest part, or the box's corners."""
    points = _box_points(box) if mask is None else _largest_ring_pct(mask, head.width_px, head.height_px)
    if points is None:
        return None
    return {
        "id": head.id,
        "from_name": head.from_name,
        "to_name": head.to_name,
        "type": "polygonlabels",
        "original_width": head.width_px,
        "original_height": head.height_px,
        "image_rotation": 0,
        "value": {"points": points, "closed": True, "polygonlabels": [head.label]},
        "score": head.score,
    }


def _largest_ring_pct(mask: Masks, width_px: int, height_px: int) -> list[list[float]] | None:
    polygons = mask_to_polygons(mask, 0)  # largest part first
    if not polygons:
        return None
    ring: NDArray[np.float64] = polygons[0].outer_xy / np.asarray([width_px, height_px], np.float64) * 100.0
    return [[round(float(x), 4), round(float(y), 4)] for x, y in np.clip(ring, 0.0, 100.0)]


def _box_points(box: LsBoxPct) -> list[list[float]]:
    x0, y0 = box["x"], box["y"]
    x1, y1 = round(x0 + box["width"], 4), round(y0 + box["height"], 4)
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _box_mask(head: RegionHead, box: LsBoxPct) -> NDArray[np.bool_]:
    """The pixels whose centres the box covers."""
    out = np.zeros((head.height_px, head.width_px), np.bool_)
    x0, x1 = (round(v * head.width_px / 100.0) for v in (box["x"], box["x"] + box["width"]))
    y0, y1 = (round(v * head.height_px / 100.0) for v in (box["y"], box["y"] + box["height"]))
    out[y0:y1, x0:x1] = True
    return out
