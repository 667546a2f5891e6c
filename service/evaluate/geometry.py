"""IoU of boxes and of masks (polygons and RLE rasterised with pycocotools), and shape conversions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.errors import ErrorCode, PreannotateError
from service.evaluate.types import BoxXYXY, CocoRle, EncodedRle, FormatError, Shape

MAX_RASTER_PIXELS = 250_000_000
"""Largest frame (width x height) polygons and masks are rasterised on; inputs refuse bigger ones."""

_UNKNOWN_SIZE_CANVAS = 1000
"""Canvas side (cells) for rasterising shapes whose frame has no known pixel size (percent coordinates)."""


def mask_utils() -> Any:
    """``pycocotools.mask``, or a MISSING_DEPENDENCY error naming the extra to install."""
    try:
        from pycocotools import mask  # type: ignore[import-untyped, unused-ignore]  # no stubs
    except ImportError:
        raise PreannotateError(
            ErrorCode.MISSING_DEPENDENCY, "evaluation needs pycocotools: pip install 'preannotate[eval]'"
        ) from None
    return mask


def boxes_to_array(shapes: Sequence[Shape]) -> NDArray[np.float64]:
    """(n, 4) float64 xyxy of the shapes (float64: IoU near the threshold must not flip on rounding)."""
    return np.asarray([s.xyxy for s in shapes], np.float64).reshape(-1, 4)


def canvas_size(shapes: Sequence[Shape], width: int | None, height: int | None) -> tuple[int, int, float]:
    """The raster (height, width) and the coordinate scale to draw shapes on.

    The frame's own size when known; otherwise a fixed canvas scaled to the shapes' extent, so percent
    coordinates (0..100) are not rasterised at 1-unit resolution.
    """
    if width and height:
        return height, width, 1.0
    extent = max([1.0, *(max(s.xyxy[2], s.xyxy[3]) for s in shapes)])
    scale = _UNKNOWN_SIZE_CANVAS / extent
    side = math.ceil(extent * scale) + 1
    return side, side, scale


def shape_to_rle(shape: Shape, height: int, width: int, scale: float = 1.0) -> EncodedRle | None:
    """A COCO RLE of the shape's mask on an (height, width) canvas, or None when it has no usable mask."""
    mu = mask_utils()
    if shape.rle is not None:
        size = list(shape.rle.get("size", []))
        if size != [height, width]:
            return None  # a mask drawn on another canvas cannot be compared pixel for pixel
        counts = shape.rle["counts"]
        if isinstance(counts, list):
            return _encoded(mu.frPyObjects(shape.rle, height, width))
        return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    # Clamp to just outside the canvas: pycocotools walks every (upsampled) pixel of the outline and overflows
    # on coordinates far outside it; the part inside the frame is what is compared anyway.
    rings = [
        [min(max(v * scale, -1.0), (width if i % 2 == 0 else height) + 1.0) for i, v in enumerate(ring)]
        for ring in shape.polygons
        if len(ring) >= 6
    ]
    if not rings:
        return None
    parts = mu.frPyObjects(rings, height, width)
    if shape.even_odd and len(parts) > 1:  # holes are rings inside rings: each ring flips the pixels it covers
        return _encoded(mu.encode(_even_odd_fill(mu, parts, height, width)))
    return _encoded(mu.merge(parts))


def _even_odd_fill(mu: Any, parts: Sequence[Any], height: int, width: int) -> NDArray[np.uint8]:
    """The rings' RLEs filled even-odd, decoded one ring at a time: two frames of memory, whatever the ring count.

    Raises:
        FormatError: the frame is larger than ``MAX_RASTER_PIXELS``.
    """
    if height * width > MAX_RASTER_PIXELS:
        raise FormatError(f"a {width}x{height} polygon frame is too large")
    filled = np.zeros((height, width), np.uint8, order="F")
    for part in parts:
        filled ^= mu.decode(part)
    return filled


def _encoded(rle: Any) -> EncodedRle:
    """pycocotools' own RLE object (untyped) as the typed pair it holds."""
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}


def coco_counts_to_runs(counts: str) -> list[int]:
    """The run lengths (0s, 1s, 0s, ...) of a compressed COCO RLE string, decoded as pycocotools' ``rleFrString``."""
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise FormatError("truncated RLE counts")
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]  # runs after the second are stored as differences
        if not 0 <= x < 2**32:
            raise FormatError("RLE counts hold a run out of range")
        runs.append(x)
    return runs


def check_rle(rle: CocoRle) -> None:
    """Refuse an RLE whose runs do not cover exactly height x width pixels: pycocotools trusts them and would
    read or write past its buffers."""
    size = rle.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise FormatError("RLE size must be [height, width] positive integers")
    if size[0] * size[1] > MAX_RASTER_PIXELS:
        raise FormatError(f"a {size[1]}x{size[0]} mask is too large")
    counts = rle.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts):
            raise FormatError("RLE counts must be non-negative integers")
        total = sum(counts)
    elif isinstance(counts, str):
        total = sum(coco_counts_to_runs(counts))
    else:
        raise FormatError("RLE counts must be a list or a string")
    if total != size[0] * size[1]:
        raise FormatError(f"RLE runs cover {total} pixels, not {size[0]} x {size[1]}")


def mask_iou_matrix(gt: Sequence[EncodedRle], dt: Sequence[EncodedRle]) -> NDArray[np.float64]:
    """IoU of every benchmark mask with every candidate mask: (len(gt), len(dt))."""
    if not gt or not dt:
        return np.zeros((len(gt), len(dt)), np.float64)
    # pycocotools takes (detections, ground truths, crowd flags) and returns (n_dt, n_gt).
    ious = mask_utils().iou(list(dt), list(gt), [0] * len(gt))
    return np.asarray(ious, np.float64).reshape(len(dt), len(gt)).T


def polygon_to_xyxy(rings: Sequence[Sequence[float]]) -> BoxXYXY:
    """The box enclosing flat ``x, y, x, y, ...`` rings."""
    xs = [v for ring in rings for v in ring[0::2]]
    ys = [v for ring in rings for v in ring[1::2]]
    if not xs:
        return (0.0, 0.0, 0.0, 0.0)
    return (min(xs), min(ys), max(xs), max(ys))


def rotated_box_to_polygon(
    x: float, y: float, w: float, h: float, angle_deg: float, *, about_centre: bool
) -> tuple[float, ...]:
    """Corners of a ``w`` x ``h`` box with top-left (x, y) rotated by ``angle_deg`` (clockwise on screen, y down).

    Args:
        x: top-left x of the unrotated box.
        y: top-left y of the unrotated box.
        w: width.
        h: height.
        angle_deg: rotation in degrees.
        about_centre: rotate about the box centre (Encord) or about the top-left corner (Label Studio).

    Returns:
        A flat ring ``x0, y0, ..., x3, y3`` in the input's units.
    """
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    cx, cy = (x + w / 2, y + h / 2) if about_centre else (x, y)
    ring: list[float] = []
    for px, py in ((x, y), (x + w, y), (x + w, y + h), (x, y + h)):
        dx, dy = px - cx, py - cy
        ring += [cx + dx * cos - dy * sin, cy + dx * sin + dy * cos]
    return tuple(ring)


def encord_rle_to_coco_rle(rle_string: str, width: int, height: int) -> CocoRle:
    """An Encord bitmask (row-major RLE string) as a COCO RLE (column-major), as the Encord SDK's exporter does."""
    check_rle({"counts": rle_string, "size": [width, height]})
    # Encord's runs walk the pixels row by row (C order); COCO's walk them column by column (Fortran order).
    runs = coco_counts_to_runs(rle_string)
    values = np.arange(len(runs), dtype=np.uint8) % 2  # runs alternate 0s and 1s, starting with 0s
    mask = np.repeat(values, runs).reshape(height, width)
    encoded = mask_utils().encode(np.asfortranarray(mask))
    return {"size": [height, width], "counts": encoded["counts"].decode("ascii")}


def mask_to_coco_rle(mask: NDArray[np.bool_]) -> tuple[CocoRle, BoxXYXY] | None:
    """A (height, width) boolean mask as a COCO RLE (string counts) and its enclosing box; None when empty
    (an object with no pixels can match nothing)."""
    if not mask.any():
        return None
    encoded = mask_utils().encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils().toBbox(encoded))
    rle: CocoRle = {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encoded["counts"].decode("ascii")}
    return rle, (x, y, x + w, y + h)


def dense_rle_to_labels(dense_rle: object, width: int, height: int) -> NDArray[np.int64]:
    """A Darwin ``raster_layer.dense_rle`` as a (height, width) array of mask values (0: no mask).

    ``dense_rle`` is ``[value, count, value, count, ...]`` over the pixels row by row (darwin-py's
    ``rle_decode`` followed by ``reshape(height, width)``).
    """
    if not (
        isinstance(dense_rle, list)
        and len(dense_rle) % 2 == 0
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in dense_rle)
    ):
        raise FormatError("raster_layer.dense_rle must be [value, count, ...] non-negative integers")
    if width * height > MAX_RASTER_PIXELS:
        raise FormatError(f"a {width}x{height} raster layer is too large")
    values, counts = np.asarray(dense_rle[0::2], np.int64), np.asarray(dense_rle[1::2], np.int64)
    if int(counts.sum()) != width * height:
        raise FormatError(f"raster_layer runs cover {int(counts.sum())} pixels, not {width} x {height}")
    return np.repeat(values, counts).reshape(height, width)


class _BitReader:
    """Big-endian bits of a byte string, read a field at a time (label-studio-converter's ``InputStream``)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.total = data, 0, len(data) * 8

    def read(self, n: int) -> int:
        end = self.pos + n
        if end > self.total:
            raise FormatError("brush RLE is truncated")
        first, last = self.pos >> 3, (end + 7) >> 3
        chunk = int.from_bytes(self.data[first:last], "big")
        self.pos = end
        return (chunk >> ((last << 3) - end)) & ((1 << n) - 1)

    def read_words(self, count: int, size: int) -> NDArray[np.uint64]:
        """``count`` consecutive ``size``-bit words at once (a literal run can hold 65536 of them)."""
        end = self.pos + count * size
        if end > self.total:
            raise FormatError("brush RLE is truncated")
        first = self.pos >> 3
        bits = np.unpackbits(np.frombuffer(self.data[first : (end + 7) >> 3], np.uint8))
        offset = self.pos - (first << 3)
        words = bits[offset : offset + count * size].reshape(count, size).astype(np.uint64)
        self.pos = end
        return words @ (np.uint64(1) << np.arange(size - 1, -1, -1, dtype=np.uint64))


def ls_brush_rle_to_mask(rle: object, width: int, height: int) -> NDArray[np.bool_]:
    """A Label Studio brush region's ``rle`` as a (height, width) mask: the pixels whose alpha is not 0.

    The format is thi-ng's rle-pack over the RGBA bytes of the canvas, row by row, as label-studio-converter's
    ``brush.decode_rle`` reads it (``ls_rle_to_coco_rle`` then keeps alpha > 0). Big-endian bits: 32 for the
    number of values, 5 for the word size - 1, four times 4 for the run-length field sizes - 1; then runs of a
    repeat flag (1 bit), a size choice (2 bits) and a length - 1 in that many bits, followed by one word to
    repeat or that many literal words. A run past the end is cut there, as both reference decoders do.
    """
    try:
        if not isinstance(rle, list):  # bytes() would take a number (that many zeros) too
            raise TypeError
        data = bytes(rle)
    except (TypeError, ValueError):
        raise FormatError("brush rle must be a list of bytes (0..255)") from None
    if width * height > MAX_RASTER_PIXELS:
        raise FormatError(f"a {width}x{height} brush mask is too large")
    reader = _BitReader(data)
    num = reader.read(32)
    if num != width * height * 4:
        raise FormatError(f"brush rle holds {num} values, not {width} x {height} RGBA pixels")
    word = reader.read(5) + 1
    sizes = [reader.read(4) + 1 for _ in range(4)]
    # Only the alpha channel is kept: value k is pixel k // 4's alpha when k % 4 == 3, so the alpha values
    # of values [i, j) are pixels [i // 4, j // 4). Short literal runs are read word by word (a numpy call
    # per run would dominate: an encoder may write every lone value as its own run).
    alpha = np.zeros(width * height, np.bool_)
    read = reader.read
    i = 0
    while i < num:
        head = read(3)  # repeat flag, then which length field size
        j = i + 1 + read(sizes[head & 3])
        end = min(j, num)
        if head & 4:
            if read(word) and end // 4 > i // 4:
                alpha[i // 4 : end // 4] = True
        elif j - i <= 16:
            for k in range(i, j):
                if read(word) and k % 4 == 3 and k < num:
                    alpha[k // 4] = True
        else:
            span = end // 4 - i // 4
            alpha[i // 4 : i // 4 + span] = reader.read_words(j - i, word)[(3 - i) % 4 :: 4][:span] > 0
        i = j
    return alpha.reshape(height, width)
