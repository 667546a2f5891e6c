"""Instance masks as compact run-length crops: what ``Detections.masks`` holds.

Each row's mask is kept as the COCO run-length encoding (pycocotools' compressed counts, column-major) of the
pixels inside the mask's own tight box, plus where that box sits in the frame. A mask costs a few hundred bytes
however large the frame, so an hour of video with masks on every sampled frame stays small; pixels come back
only when a converter asks for them (``crop``, ``full``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from pycocotools import mask as mask_utils  # type: ignore[import-untyped, unused-ignore]  # no stubs

BoolMask = NDArray[np.bool_]
"""An (H, W) boolean mask."""


@dataclass(frozen=True, slots=True)
class Masks:
    """One binary mask per detection row (parallel to ``Detections.xyxy``).

    Attributes:
        origin_xy: (n, 2) int32 column, row of each crop's top-left pixel in the frame.
        size_hw: (n, 2) int32 height, width of each crop; (0, 0) for a row whose mask is empty.
        counts: each crop's COCO compressed RLE counts (ASCII bytes, column-major); b"" for an empty mask.
    """

    origin_xy: NDArray[np.int32]
    size_hw: NDArray[np.int32]
    counts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        n = len(self.counts)
        if self.origin_xy.shape != (n, 2) or self.origin_xy.dtype != np.int32:
            raise ValueError(
                f"origin_xy must be int32 of shape ({n}, 2), got {self.origin_xy.dtype} {self.origin_xy.shape}"
            )
        if self.size_hw.shape != (n, 2) or self.size_hw.dtype != np.int32:
            raise ValueError(f"size_hw must be int32 of shape ({n}, 2), got {self.size_hw.dtype} {self.size_hw.shape}")

    @classmethod
    def empty(cls, n: int = 0) -> Masks:
        """``n`` rows, none with a mask."""
        return cls(np.zeros((n, 2), np.int32), np.zeros((n, 2), np.int32), (b"",) * n)

    @classmethod
    def from_crops(cls, crops: Sequence[NDArray[np.generic]], origin_xy: NDArray[np.generic]) -> Masks:
        """Masks from per-row crops (any array where non-zero means inside) placed at ``origin_xy`` (n, 2) in the
        frame; each is trimmed to its own tight box first."""
        origins = np.asarray(origin_xy, np.int64).reshape(-1, 2)
        if len(origins) != len(crops):
            raise ValueError(f"{len(crops)} crops but {len(origins)} origins")
        rows = [
            _encode_tight(np.asarray(crop) != 0, int(x), int(y)) for crop, (x, y) in zip(crops, origins, strict=True)
        ]
        return cls._of(rows)

    @classmethod
    def from_full(cls, masks: NDArray[np.generic]) -> Masks:
        """Masks from full-frame (n, H, W) arrays (non-zero: inside)."""
        full = np.asarray(masks)
        if full.ndim != 3:
            raise ValueError(f"expected (n, H, W) masks, got shape {full.shape}")
        return cls._of([_encode_tight(m != 0, 0, 0) for m in full])

    @classmethod
    def concat(cls, parts: Sequence[Masks]) -> Masks:
        """``parts``' rows, one after another (a frame's boxes segmented in chunks)."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.origin_xy for p in parts]),
            np.concatenate([p.size_hw for p in parts]),
            tuple(c for p in parts for c in p.counts),
        )

    @classmethod
    def _of(cls, rows: Sequence[tuple[int, int, int, int, bytes]]) -> Masks:
        if not rows:
            return cls.empty()
        table = np.asarray([r[:4] for r in rows], np.int32).reshape(-1, 4)
        return cls(np.ascontiguousarray(table[:, :2]), np.ascontiguousarray(table[:, 2:]), tuple(r[4] for r in rows))

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, index: NDArray[np.bool_] | NDArray[np.intp] | slice) -> Masks:
        positions = np.arange(len(self))[index]
        return Masks(self.origin_xy[index], self.size_hw[index], tuple(self.counts[int(i)] for i in positions))

    def has_mask(self) -> NDArray[np.bool_]:
        """(n,) whether each row has any pixel."""
        return np.asarray([len(c) > 0 for c in self.counts], np.bool_).reshape(-1)

    def area_px(self) -> NDArray[np.float64]:
        """(n,) pixels inside each mask."""
        return np.asarray([float(mask_utils.area(r)) if r is not None else 0.0 for r in self._rles()], np.float64)

    def xyxy(self) -> NDArray[np.float32]:
        """(n, 4) each mask's tight box in frame pixels (zeros for an empty mask)."""
        out = np.zeros((len(self), 4), np.float32)
        out[:, :2] = self.origin_xy
        out[:, 2] = self.origin_xy[:, 0] + self.size_hw[:, 1]
        out[:, 3] = self.origin_xy[:, 1] + self.size_hw[:, 0]
        out[~self.has_mask()] = 0
        return out

    def crop(self, i: int) -> BoolMask:
        """Row ``i``'s mask inside its tight box, (h, w); (0, 0) when empty."""
        rle = self._rle(i)
        if rle is None:
            return np.zeros((0, 0), np.bool_)
        return np.asarray(mask_utils.decode(rle), np.bool_)

    def full(self, i: int, height_px: int, width_px: int) -> BoolMask:
        """Row ``i``'s mask on a (height_px, width_px) frame (pixels outside the frame are dropped)."""
        out = np.zeros((height_px, width_px), np.bool_)
        crop = self.crop(i)
        if crop.size == 0:
            return out
        x, y = (int(v) for v in self.origin_xy[i])
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + crop.shape[1], width_px), min(y + crop.shape[0], height_px)
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = crop[y0 - y : y1 - y, x0 - x : x1 - x]
        return out

    def scaled(self, sx: float, sy: float, height_px: int, width_px: int) -> Masks:
        """The masks on a frame scaled by ``sx``, ``sy`` (e.g. from the detector's frame back to the source's),
        clipped to its (height_px, width_px).

        Each crop is resampled at exactly that scale (bilinear, at the new frame's pixel centres, as resizing the
        whole frame would), into the new pixels its extent covers: resizing the crop to that rounded-out window
        would stretch each mask outward by up to a pixel per side.
        """
        crops: list[BoolMask] = []
        origins: list[tuple[int, int]] = []
        for i in range(len(self)):
            crop = self.crop(i)
            window = _scaled_window(self.origin_xy[i], crop.shape, sx, sy, height_px, width_px)
            if window is None:
                crops.append(np.zeros((0, 0), np.bool_))
                origins.append((0, 0))
                continue
            x0, y0, x1, y1 = window
            x, y = (int(v) for v in self.origin_xy[i])
            # inverse map: new pixel (c, r) of the window -> crop pixel; centres align, (X + 0.5) / s - 0.5
            to_crop = np.array(
                [[1 / sx, 0.0, (x0 + 0.5) / sx - 0.5 - x], [0.0, 1 / sy, (y0 + 0.5) / sy - 0.5 - y]], np.float64
            )
            sampled = cv2.warpAffine(
                crop.astype(np.float32),
                to_crop,
                (x1 - x0, y1 - y0),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0.0,  # the crop is tight: outside it is outside the mask
            )
            crops.append(np.asarray(sampled) >= 0.5)
            origins.append((x0, y0))
        return Masks.from_crops(crops, np.asarray(origins, np.int64).reshape(-1, 2))

    def to_json(self) -> list[list[Any]]:
        """Each row as ``[x, y, h, w, counts]`` (what the job store keeps)."""
        return [
            [int(x), int(y), int(h), int(w), c.decode("ascii")]
            for (x, y), (h, w), c in zip(self.origin_xy, self.size_hw, self.counts, strict=True)
        ]

    @classmethod
    def from_json(cls, rows: Sequence[Sequence[Any]]) -> Masks:
        """``to_json``'s rows back."""
        return cls._of([(int(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4]).encode("ascii")) for r in rows])

    def _rle(self, i: int) -> dict[str, Any] | None:
        h, w = (int(v) for v in self.size_hw[i])
        if not self.counts[i] or h == 0 or w == 0:
            return None
        return {"size": [h, w], "counts": self.counts[i]}

    def _rles(self) -> list[dict[str, Any] | None]:
        return [self._rle(i) for i in range(len(self))]


def _scaled_window(
    origin_xy: NDArray[np.int32], crop_hw: tuple[int, ...], sx: float, sy: float, height_px: int, width_px: int
) -> tuple[int, int, int, int] | None:
    """The new frame's pixels (x0, y0, x1, y1), end-exclusive, a crop at ``origin_xy`` may cover once scaled:
    those whose centres fall inside its scaled extent, clipped to the frame; None for an empty crop or one
    scaled off the frame."""
    h, w = int(crop_hw[0]), int(crop_hw[1])
    if h == 0 or w == 0:
        return None
    x, y = int(origin_xy[0]), int(origin_xy[1])
    x0, y0 = max(0, math.floor(x * sx)), max(0, math.floor(y * sy))
    x1, y1 = min(width_px, math.ceil((x + w) * sx)), min(height_px, math.ceil((y + h) * sy))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _encode_tight(mask: BoolMask, x: int, y: int) -> tuple[int, int, int, int, bytes]:
    """(x, y, h, w, counts) of ``mask``'s tight box, placed at ``x``, ``y``; zeros and b"" when empty."""
    if mask.ndim != 2:
        raise ValueError(f"expected an (h, w) mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return 0, 0, 0, 0, b""
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    tight = np.asfortranarray(mask[r0:r1, c0:c1].astype(np.uint8))
    counts = mask_utils.encode(tight)["counts"]
    return x + c0, y + r0, r1 - r0, c1 - c0, bytes(counts)
