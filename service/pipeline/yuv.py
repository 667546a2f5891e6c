"""Decoded video frames to RGB pixels, through OpenCV where that is faster than swscale, optionally scaled down.

PyAV's ``to_ndarray(format="rgb24")`` (swscale) costs more than decoding the frame on a 2-core machine, and
scaling inside swscale is slower still. For 8-bit 4:2:0 frames in limited range with a BT.601 or BT.709
matrix (almost every H.264/HEVC file), the planes are read without a copy and converted by OpenCV:
full size with ``cvtColor`` (BT.601, as swscale does for untagged frames), scaled by resizing the
planes first and converting only the small image. Anything else (10-bit, 4:2:2/4:4:4, full range,
BT.2020, odd sizes) goes through swscale, which honours the frame's colour tags. Both paths agree
within a few levels per channel (rounding and chroma siting); tests bound the difference.
"""

from __future__ import annotations

import functools
from typing import Final

import cv2
import numpy as np
from av.video.frame import VideoFrame
from numpy.typing import NDArray

from models.types import RGBImage

# AVColorSpace values, as PyAV reports ``frame.colorspace``. Unspecified is BT.601 to swscale too.
_BT709: Final = 1
_BT601: Final = frozenset({2, 5, 6})  # unspecified, BT470BG, SMPTE170M
# AVColorRange: unspecified (limited, for yuv420p) or MPEG (limited).
_LIMITED: Final = frozenset({0, 1})
# (Kr, Kb) of each matrix: R = Y' + 2(1-Kr) Cr, B = Y' + 2(1-Kb) Cb, G from the luma equation.
_KR_KB: Final = {601: (0.299, 0.114), 709: (0.2126, 0.0722)}


def fit_size(width_px: int, height_px: int, fit_px: int | None) -> tuple[int, int]:
    """(width, height) scaled down so the longest side is at most ``fit_px`` (aspect kept; never up).

    Rounded as ``models.ops.boxes.letterbox`` rounds, so a detector that letterboxes to a ``fit_px``
    square finds the frame already at its size and does not resize it again.
    """
    if fit_px is None or max(width_px, height_px) <= fit_px:
        return width_px, height_px
    scale = min(fit_px / height_px, fit_px / width_px)
    return max(1, round(width_px * scale)), max(1, round(height_px * scale))


def frame_to_rgb(frame: VideoFrame, fit_px: int | None = None) -> RGBImage:
    """One decoded frame as (H, W, 3) uint8 RGB, upright (display rotation applied).

    With ``fit_px``, scaled down so its longest side is at most ``fit_px`` (for a detector that would
    scale it anyway): bilinear, as the detectors' own resize.
    """
    width, height = fit_size(frame.width, frame.height, fit_px)
    matrix = _fast_matrix(frame)
    if matrix is None:
        rgb = np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)
        if (width, height) != (frame.width, frame.height):
            rgb = np.asarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR), np.uint8)
    elif (width, height) == (frame.width, frame.height):
        rgb = _full_size(frame) if matrix == 601 else np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)
    else:
        rgb = _scaled(frame, width, height, matrix)
    turns = (frame.rotation // 90) % 4  # counter-clockwise degrees, as players apply them
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _fast_matrix(frame: VideoFrame) -> int | None:
    """601 or 709 when OpenCV can convert the frame as swscale would; None: leave it to swscale."""
    if frame.format.name != "yuv420p" or frame.width % 2 or frame.height % 2 or frame.color_range not in _LIMITED:
        return None
    if frame.colorspace == _BT709:
        return 709
    return 601 if frame.colorspace in _BT601 else None


def _plane(frame: VideoFrame, index: int, width_px: int, height_px: int) -> NDArray[np.uint8]:
    """A plane's pixels as a (height, width) view of the frame's buffer (rows padded to line_size)."""
    plane = frame.planes[index]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
    return rows[:height_px, :width_px]


def _full_size(frame: VideoFrame) -> RGBImage:
    """BT.601 limited range at full size: one OpenCV call on the I420 buffer."""
    i420 = np.asarray(frame.to_ndarray(format="yuv420p"), np.uint8)  # (H * 3/2, W), planes packed
    return np.asarray(cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420), np.uint8)


def _scaled(frame: VideoFrame, width_px: int, height_px: int, matrix: int) -> RGBImage:
    """Resize Y, Cb and Cr to the output size (chroma is half size already), then convert the small image."""
    size = (width_px, height_px)
    luma = cv2.resize(_plane(frame, 0, frame.width, frame.height), size, interpolation=cv2.INTER_LINEAR)
    half_w, half_h = frame.width // 2, frame.height // 2
    cb = cv2.resize(_plane(frame, 1, half_w, half_h), size, interpolation=cv2.INTER_LINEAR)
    cr = cv2.resize(_plane(frame, 2, half_w, half_h), size, interpolation=cv2.INTER_LINEAR)
    ycbcr = cv2.merge([luma, cb, cr])
    return np.asarray(cv2.transform(ycbcr, _ycbcr_to_rgb(matrix)), np.uint8)


@functools.cache
def _ycbcr_to_rgb(matrix: int) -> NDArray[np.float32]:
    """The 3x4 affine map from limited-range Y'CbCr (16-235, 16-240) to full-range RGB."""
    kr, kb = _KR_KB[matrix]
    kg = 1 - kr - kb
    y, c = 255 / 219, 255 / 224
    m = np.array(
        [
            [y, 0.0, c * 2 * (1 - kr)],
            [y, -c * 2 * (1 - kb) * kb / kg, -c * 2 * (1 - kr) * kr / kg],
            [y, c * 2 * (1 - kb), 0.0],
        ],
        np.float64,
    )
    offset = -m @ np.array([16.0, 128.0, 128.0])
    return np.hstack([m, offset[:, None]]).astype(np.float32)
