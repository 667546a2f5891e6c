"""Masks as Encord shapes (encord.md §1.2): ``polygon`` + ``polygons`` and ``bitmask``, as encord 0.1.211 writes them.

- ``polygons``: ``[[outer, hole, ...], ...]``, one polygon per connected part (largest first), each ring flat
  ``x0, y0, x1, y1, ...`` in fractions (0..1) of the frame, on pixel corners (``convert.masks``); ``polygon``
  is the first polygon's outer ring as ``{"0": {"x", "y"}, ...}``, as the SDK's ``PolygonCoordinates`` keeps it.
- ``bitmask``: ``{top, left, height, width, rleString}`` on the whole frame; ``rleString`` is the COCO string
  encoding of the row-major runs (the SDK's ``serialise_bitmask``), the inverse of
  ``service.evaluate.geometry.encord_rle_to_coco_rle``.

A frame of an object of one of these shapes that has no mask (a track's keyframe the segmenter left empty) is
its box in that shape.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pycocotools import mask as mask_utils  # type: ignore[import-untyped, unused-ignore]  # no stubs

from models.masks import Masks
from service.convert.encord_types import EncordBitmask, EncordPoint
from service.convert.masks import mask_to_polygons

POLYGON = "polygon"
BITMASK = "bitmask"
MASK_SHAPES = (POLYGON, BITMASK)
"""Ontology shapes a row's mask can be written as."""
_DECIMALS = 6
"""Of a normalised coordinate (a millionth of the frame: well under a pixel)."""


def mask_to_encord_rle(mask: NDArray[np.bool_]) -> str:
    """An (H, W) mask as Encord's ``rleString``: runs row by row, as pycocotools walks the transposed mask."""
    encoded = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8).T))
    return str(encoded["counts"].decode("ascii"))


def bitmask_of(mask: Masks | None, xyxy: tuple[float, ...], width: int, height: int) -> EncordBitmask | None:
    """The frame-sized ``bitmask`` of a one-row mask (or of the box when None); None when it has no pixel."""
    full = mask.full(0, height, width) if mask is not None else _box_pixels(xyxy, width, height)
    if not full.any():
        return None
    return {"top": 0, "left": 0, "height": height, "width": width, "rleString": mask_to_encord_rle(full)}


def polygons_of(
    mask: Masks | None, xyxy: tuple[float, ...], width: int, height: int
) -> tuple[dict[str, EncordPoint], list[list[list[float]]]] | None:
    """(``polygon``, ``polygons``) of a one-row mask (or of the box when None); None when nothing is inside."""
    scale = np.asarray([width, height], np.float64)
    if mask is None:
        x1, y1, x2, y2 = (min(max(v, 0.0), float(s)) for v, s in zip(xyxy, (width, height) * 2, strict=True))
        if x2 <= x1 or y2 <= y1:
            return None
        parts = [[np.asarray([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)]]
    else:
        parts = [polygon.rings() for polygon in mask_to_polygons(mask, 0)]
    flat = [[_flat(np.clip(ring / scale, 0.0, 1.0)) for ring in rings] for rings in parts]
    if not flat:
        return None
    outer = flat[0][0]
    points: dict[str, EncordPoint] = {
        str(k): {"x": outer[2 * k], "y": outer[2 * k + 1]} for k in range(len(outer) // 2)
    }
    return points, flat


def _flat(ring: NDArray[np.float64]) -> list[float]:
    return [round(float(v), _DECIMALS) for v in ring.ravel()]


def _box_pixels(xyxy: tuple[float, ...], width: int, height: int) -> NDArray[np.bool_]:
    """The pixels whose centres the box covers."""
    out = np.zeros((height, width), np.bool_)
    x1, y1, x2, y2 = (max(round(v), 0) for v in xyxy)
    out[y1:y2, x1:x2] = True
    return out
