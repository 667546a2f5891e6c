"""A mask as Label Studio's brush RLE: the exact inverse of ``service.evaluate.geometry.ls_brush_rle_to_mask``.

The format is thi-ng's rle-pack over the RGBA bytes of the image, row by row (label_studio.md; what LS's brush
tool saves). This writes what label-studio-converter's ``brush.mask2rle(mask * 255)`` writes, bit for bit: every
pixel is four equal bytes (255 inside the mask, 0 outside), 8-bit words, run-length field sizes 3, 4, 8, 16, and
every run a repeat run. It works per run of pixels, not per byte, so a frame costs what its mask's outline costs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

_WORD_BITS = 8
_RLE_SIZES = (3, 4, 8, 16)
"""The run-length field sizes (bits) the converter writes; a run picks the first that holds its length - 1."""
_MAX_RUN = 1 << _RLE_SIZES[-1]
"""Values one repeat run can hold (a longer one is split)."""
_INSIDE = 255
"""Every RGBA byte of a mask pixel: LS's editor paints the region where alpha is not 0."""


def mask_to_ls_brush_rle(mask: NDArray[np.bool_]) -> list[int]:
    """An (H, W) boolean mask as a brush region's ``rle`` (bytes 0..255) on that H x W image."""
    flat = np.asarray(mask, np.bool_).ravel()
    fields: list[str] = [f"{flat.size * 4:032b}", f"{_WORD_BITS - 1:05b}", *(f"{s - 1:04b}" for s in _RLE_SIZES)]
    if flat.size:
        starts = np.flatnonzero(np.diff(flat.view(np.uint8), prepend=np.uint8(2)))
        lengths = np.diff(np.append(starts, flat.size)) * 4  # four RGBA bytes per pixel
        for values, inside in zip(lengths.tolist(), flat[starts].tolist(), strict=True):
            fields += _repeat_runs(values, _INSIDE if inside else 0)
    bits = "".join(fields)
    bits += "0" * (8 - len(bits) % 8)  # the converter pads with 1 to 8 zero bits (a whole byte when aligned)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


def _repeat_runs(values: int, byte: int) -> list[str]:
    """``values`` copies of ``byte`` as repeat runs: flag 1, the size choice, length - 1, then the word."""
    out: list[str] = []
    while values > _MAX_RUN:  # as the converter splits: full runs first, the rest last
        out.append(f"111{_MAX_RUN - 1:016b}{byte:08b}")
        values -= _MAX_RUN
    choice = next(k for k, size in enumerate(_RLE_SIZES) if values - 1 < 1 << size)
    out.append(f"1{choice:02b}{values - 1:0{_RLE_SIZES[choice]}b}{byte:08b}")
    return out
