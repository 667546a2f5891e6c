"""Pictures to files: JPEG bytes, and an H.264 MP4 of frames (PyAV), which browsers and players open."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from models.types import RGBImage

JPEG_QUALITY = 88


def rgb_to_jpeg(image: RGBImage, *, quality: int = JPEG_QUALITY) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as JPEG")
    return bytes(data.tobytes())


def fit_within(image: RGBImage, longest_px: int) -> RGBImage:
    """``image`` scaled down (aspect kept) so its longer side is at most ``longest_px``; smaller ones as they are."""
    height_px, width_px = image.shape[:2]
    scale = longest_px / max(height_px, width_px)
    if scale >= 1:
        return image
    size = (max(1, round(width_px * scale)), max(1, round(height_px * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


class Mp4Writer:
    """Frames of one size to an H.264 (yuv420p) MP4 at ``fps``; odd sizes are padded by a pixel (4:2:0 needs
    even ones). Use as a context manager; ``write`` frames in order."""

    def __init__(self, path: Path, *, fps: float, width_px: int, height_px: int) -> None:
        self.path = path
        self._size = (width_px + width_px % 2, height_px + height_px % 2)
        self._container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate, options={"crf": "23", "preset": "veryfast"})
        self._stream.width, self._stream.height = self._size
        self._stream.pix_fmt = "yuv420p"
        self.frames = 0

    def write(self, image: RGBImage) -> None:
        width_px, height_px = self._size
        if image.shape[:2] != (height_px, width_px):
            padded = np.zeros((height_px, width_px, 3), np.uint8)
            h, w = min(height_px, image.shape[0]), min(width_px, image.shape[1])
            padded[:h, :w] = image[:h, :w]
            image = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
