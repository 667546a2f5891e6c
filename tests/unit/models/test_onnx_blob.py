"""The batched float blob equals letterboxing each frame and normalising it, whatever the buffer held before."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from models.detectors.onnx_base import PaddedImage, chw_blob
from models.ops.boxes import LETTERBOX_PAD_VALUE, letterbox, plan_letterbox, resize_for


def _reference(image: np.ndarray, size: int, stride: int | None = None) -> np.ndarray:
    boxed, _ = letterbox(image, size, size, stride_px=stride)
    return boxed.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)


def _placed(image: np.ndarray, size: int, stride: int | None = None) -> PaddedImage:
    plan = plan_letterbox(image.shape[0], image.shape[1], size, size, stride_px=stride)
    return PaddedImage(
        resize_for(image, plan), plan.height_px, plan.width_px, plan.top_px, plan.left_px, LETTERBOX_PAD_VALUE
    )


def test_blob_equals_letterbox_then_normalise_across_layouts() -> None:
    rng = np.random.default_rng(0)
    buffers = threading.local()
    frames = [
        rng.integers(0, 256, (360, 640, 3), np.uint8),  # wide: pads top and bottom
        rng.integers(0, 256, (640, 360, 3), np.uint8),  # tall, same row: the padding moves
        rng.integers(0, 256, (640, 640, 3), np.uint8),  # no padding
        rng.integers(0, 256, (300, 500, 3), np.uint8),  # resized and padded
    ]
    for batch in ([frames[0], frames[1]], [frames[1], frames[0]], [frames[2], frames[3], frames[0]], [frames[0]]):
        blob = chw_blob([_placed(f, 640) for f in batch], np.float32, buffers)
        expected = np.stack([_reference(f, 640) for f in batch])
        assert blob.shape == expected.shape
        assert np.array_equal(blob, expected)


def test_blob_with_stride_canvas_and_fp16() -> None:
    image = np.random.default_rng(1).integers(0, 256, (400, 600, 3), np.uint8)
    blob = chw_blob([_placed(image, 320, stride=32)], np.float16, threading.local())
    assert blob.dtype == np.float16
    assert np.array_equal(blob, _reference(image, 320, stride=32)[None].astype(np.float16))


def test_whole_image_has_no_padding() -> None:
    image = np.full((8, 6, 3), 255, np.uint8)
    blob = chw_blob([PaddedImage.whole(image)], np.float32, threading.local())
    assert blob.shape == (1, 3, 8, 6)
    assert np.all(blob == np.float32(1.0))


@pytest.mark.parametrize("size", [320, 640])
def test_plan_matches_letterbox(size: int) -> None:
    image = np.zeros((123, 457, 3), np.uint8)
    boxed, mapping = letterbox(image, size, size)
    plan = plan_letterbox(123, 457, size, size)
    assert boxed.shape[:2] == (plan.height_px, plan.width_px)
    assert mapping == plan.letterbox
