"""Masks as Darwin JSON 2.0 shapes: ``polygon`` paths, and the ``raster_layer`` that holds ``mask`` pixels (pure).

V7 keeps a slot's mask pixels in one raster layer (one per frame on video): ``dense_rle`` runs of
``[value, count, ...]`` over the pixels row by row, each ``mask`` annotation owning one value. A pixel holds one
value, so where masks overlap the more confident one keeps the pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from service.convert.darwin_types import DarwinPoint, DarwinPolygon, DarwinRasterLayer
from service.convert.masks import mask_to_polygons
from service.pipeline.tracks import TrackBox


def has_mask(box: TrackBox) -> bool:
    """Whether the box carries a mask with any pixel."""
    return box.mask is not None and bool(box.mask.has_mask()[0])


def box_polygon(box: TrackBox) -> DarwinPolygon:
    """The polygon of the box's mask: each part's outer ring then its holes (even-odd fill gives the mask back);
    the box's own rectangle where it has no mask (a frame of a masked track the segmenter left empty)."""
    if box.mask is not None and has_mask(box):
        rings = [ring for polygon in mask_to_polygons(box.mask, 0) for ring in polygon.rings()]
        return {"paths": [[_point(float(x), float(y)) for x, y in ring] for ring in rings]}
    x1, y1, x2, y2 = box.xyxy
    return {"paths": [[_point(x1, y1), _point(x2, y1), _point(x2, y2), _point(x1, y2)]]}


def shape_xyxy(box: TrackBox) -> tuple[float, float, float, float]:
    """The corners of what ``box_polygon`` draws: the mask's tight box, else the box."""
    if box.mask is not None and has_mask(box):
        x1, y1, x2, y2 = (float(v) for v in box.mask.xyxy()[0])
        return x1, y1, x2, y2
    return box.xyxy


def _point(x: float, y: float) -> DarwinPoint:
    return {"x": round(x, 2), "y": round(y, 2)}


@dataclass
class RasterLayers:
    """The ``mask`` annotations of one slot, frame by frame, painted into raster layers once all are known.

    Attributes:
        width_px, height_px: the slot's size.
        values: each mask annotation's value, numbered 1, 2, ... in order of appearance (the same on every frame).
    """

    width_px: int
    height_px: int
    values: dict[str, int] = field(default_factory=dict)
    _painted: dict[int, list[tuple[str, TrackBox]]] = field(default_factory=dict)

    def add(self, frame_index: int, annotation_id: str, box: TrackBox) -> None:
        self.values.setdefault(annotation_id, len(self.values) + 1)
        self._painted.setdefault(frame_index, []).append((annotation_id, box))

    def frames(self) -> list[int]:
        return sorted(self._painted)

    def layer(self, frame_index: int) -> DarwinRasterLayer:
        """The frame's raster layer: the least confident masks painted first, so the most confident keep the
        pixels where they overlap; a box without a mask is painted as its rectangle. Memory: one frame of the
        smallest unsigned type that holds every value (a byte per pixel up to 255 masks), each mask painted from its
        crop; the caller keeps only the runs of each frame."""
        labels = np.zeros((self.height_px, self.width_px), np.min_scalar_type(len(self.values)))
        entries = sorted(self._painted.get(frame_index, []), key=lambda e: e[1].confidence)
        for annotation_id, box in entries:
            self._paint(labels, box, self.values[annotation_id])
        return {
            "dense_rle": dense_rle(labels),
            "mask_annotation_ids_mapping": {a: self.values[a] for a, _ in entries},
            "total_pixels": self.width_px * self.height_px,
        }

    def _paint(self, labels: NDArray[np.unsignedinteger], box: TrackBox, value: int) -> None:
        """``value`` onto the box's mask pixels (its crop, placed at its origin), else onto its rectangle."""
        if box.mask is None or not has_mask(box):
            x1, y1, x2, y2 = (round(v) for v in box.xyxy)
            labels[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = value
            return
        crop = box.mask.crop(0)
        x, y = (int(v) for v in box.mask.origin_xy[0])
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + crop.shape[1], self.width_px), min(y + crop.shape[0], self.height_px)
        if x1 > x0 and y1 > y0:
            window = labels[y0:y1, x0:x1]
            window[crop[y0 - y : y1 - y, x0 - x : x1 - x]] = value


def dense_rle(labels: NDArray[np.integer]) -> list[int]:
    """A (height, width) array of values as Darwin's ``dense_rle``: ``[value, count, ...]`` row by row."""
    flat = labels.ravel()
    if flat.size == 0:
        return []
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    counts = np.diff(np.concatenate((starts, [flat.size])))
    return np.column_stack((flat[starts], counts)).ravel().astype(int).tolist()
