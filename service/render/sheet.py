"""A contact sheet: an item's frames as one JPEG grid, each tile captioned (frame, time)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from models.types import RGBImage

SHEET_BACKGROUND = (24, 24, 24)
CAPTION_COLOR = (235, 235, 235)


def pick_evenly(count: int, most: int) -> list[int]:
    """Up to ``most`` indices into ``count`` things, spread evenly, first and last included."""
    if count <= most:
        return list(range(count))
    if most == 1:
        return [0]
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def contact_sheet(
    tiles: Sequence[RGBImage],
    *,
    captions: Sequence[str] | None = None,
    tile_width_px: int = 320,
    columns: int | None = None,
    gap_px: int = 4,
) -> RGBImage:
    """The tiles, scaled to one width (aspect kept, letterboxed to the tallest), in rows of ``columns``
    (default: a near-square grid), a caption under each."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} tiles")
    cols = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    scaled = [_fit_width(tile, tile_width_px) for tile in tiles]
    tile_h = max(tile.shape[0] for tile in scaled)
    caption_h = 0 if captions is None else 18
    cell_w, cell_h = tile_width_px + gap_px, tile_h + caption_h + gap_px
    sheet = np.empty((rows * cell_h + gap_px, cols * cell_w + gap_px, 3), np.uint8)
    sheet[:] = SHEET_BACKGROUND
    for n, tile in enumerate(scaled):
        x, y = gap_px + (n % cols) * cell_w, gap_px + (n // cols) * cell_h
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
        if captions is not None:
            baseline = (x + 2, y + tile_h + caption_h - 5)
            cv2.putText(sheet, captions[n], baseline, cv2.FONT_HERSHEY_SIMPLEX, 0.45, CAPTION_COLOR, 1, cv2.LINE_AA)
    return sheet


def _fit_width(image: RGBImage, width_px: int) -> RGBImage:
    height_px = max(1, round(image.shape[0] * width_px / image.shape[1]))
    interpolation = cv2.INTER_AREA if image.shape[1] > width_px else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width_px, height_px), interpolation=interpolation), np.uint8)
