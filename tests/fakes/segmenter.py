"""A deterministic box-prompted segmenter for the flow's tests: the ellipse inscribed in each box.

The flow is under test, not SAM: the mask each box gets is known exactly, so where it lands (which frame, which
pixels after a scaled decode) can be checked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from numpy.typing import NDArray

from models.base import Segmenter, SegmenterInfo
from models.errors import DeviceOutOfMemoryError
from models.masks import Masks
from models.types import RGBImage


def ellipse_in(box_xyxy: Sequence[float], height_px: int, width_px: int) -> NDArray[np.bool_]:
    """The (height_px, width_px) mask of the ellipse inscribed in ``box_xyxy`` (pixel centres inside it)."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1e-6), max((y1 - y0) / 2, 1e-6)
    yy, xx = np.mgrid[:height_px, :width_px] + 0.5
    return np.asarray(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0, np.bool_)


class EllipseSegmenter(Segmenter):
    """Masks each box with its inscribed ellipse; records every ``segment`` call's frame count and every frame it
    saw (their sizes), and runs out of memory on calls of more than ``oom_above`` frames."""

    def __init__(
        self,
        *,
        input_size_px: int | None = 1024,
        batch_size: int = 64,
        oom_above: int | None = None,
    ) -> None:
        self.info = SegmenterInfo(
            spec="fake:ellipse",
            name="ellipse",
            version="e1",
            runtime="numpy",
            device="cpu",
            batch_size=batch_size,
            input_size_px=input_size_px,
        )
        self.oom_above = oom_above
        self.calls: list[int] = []  # frames per segment() call
        self.seen: list[tuple[int, int, int]] = []  # (height, width, boxes) per frame the model ran on
        self.threads: set[str] = set()

    def segment(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        self.calls.append(len(images))
        self.threads.add(threading.current_thread().name)
        if self.oom_above is not None and len(images) > self.oom_above:
            raise DeviceOutOfMemoryError(f"cuda out of memory segmenting {len(images)} frames")
        return super().segment(images, boxes_xyxy)

    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        out = []
        for image, boxes in zip(images, boxes_xyxy, strict=True):
            height_px, width_px = image.shape[:2]
            self.seen.append((height_px, width_px, len(boxes)))
            out.append(Masks.from_full(np.stack([ellipse_in(box, height_px, width_px) for box in boxes])))
        return out


class GatedSegmenter(EllipseSegmenter):
    """``EllipseSegmenter`` whose every call holds the model until ``release`` is set (``entered`` says one
    does): a job's long batch, for what waits behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise TimeoutError("GatedSegmenter was never released")
        return super()._segment_batch(images, boxes_xyxy)


class BrokenSegmenter(EllipseSegmenter):
    """Fails as torch does on a bad input: a plain RuntimeError, not one of ours."""

    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        raise RuntimeError(
            "The size of tensor a (64) must match the size of tensor b (32) at non-singleton dimension 3"
        )


@contextmanager
def a_job_holding(gated: GatedSegmenter, shared: Segmenter | None) -> Iterator[None]:
    """A job's batch in ``shared`` (the server's ``SharedSegmenter`` around ``gated``) until the block ends, or
    5 s pass (what a server that waits without a deadline needs to answer at all)."""
    assert shared is not None
    frame, boxes = np.zeros((8, 8, 3), np.uint8), np.array([[1, 1, 6, 6]], np.float32)
    job = threading.Thread(target=shared.segment, args=([frame], [boxes]), daemon=True)
    job.start()
    assert gated.entered.wait(5)
    timer = threading.Timer(5.0, gated.release.set)
    timer.start()
    try:
        yield
    finally:
        gated.release.set()
        timer.cancel()
        job.join(5)
