"""Frames to RGB through OpenCV: swscale's within a few levels, scaled only down, upright; other formats: swscale."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from av.video.frame import VideoFrame

from service.pipeline.options import SamplingOptions
from service.pipeline.yuv import fit_size, frame_to_rgb
from tests.media import read_video

BT709 = 1


def _smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A natural-looking image (smooth colour fields): chroma subsampling loses little of it."""
    small = np.random.default_rng(seed).integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), np.uint8)
    return np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), np.uint8)


def _yuv_frame(height: int = 360, width: int = 640, fmt: str = "yuv420p", colorspace: int | None = None) -> VideoFrame:
    frame = VideoFrame.from_ndarray(_smooth_rgb(height, width), format="rgb24").reformat(format=fmt)
    if colorspace is not None:
        frame.colorspace = colorspace
    return frame


def _swscale(frame: VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    return rgb if size is None else cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape
    assert a.dtype == b.dtype == np.uint8
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.mark.parametrize(
    ("width", "height", "fit", "expected"),
    [
        (1280, 720, 640, (640, 360)),
        (720, 1280, 640, (360, 640)),
        (1920, 1080, 640, (640, 360)),
        (640, 480, 640, (640, 480)),  # fits already
        (320, 240, 640, (320, 240)),  # never scaled up
        (1280, 720, None, (1280, 720)),
        (1001, 3, 100, (100, 1)),  # at least a pixel
    ],
)
def test_fit_size(width: int, height: int, fit: int | None, expected: tuple[int, int]) -> None:
    assert fit_size(width, height, fit) == expected


def test_full_size_bt601_is_swscale_within_rounding() -> None:
    frame = _yuv_frame()
    diff = _diff(frame_to_rgb(frame), _swscale(frame))
    assert diff.max() <= 3
    assert diff.mean() < 1.5


@pytest.mark.parametrize("colorspace", [None, BT709])
def test_scaled_is_swscale_then_resize_within_rounding(colorspace: int | None) -> None:
    frame = _yuv_frame(720, 1280, colorspace=colorspace)
    ours = frame_to_rgb(frame, 640)
    assert ours.shape == (360, 640, 3)
    diff = _diff(ours, _swscale(frame, (640, 360)))
    assert np.percentile(diff, 99) <= 3
    assert diff.mean() < 1.5


def test_bt709_full_size_is_swscale_exactly() -> None:
    """OpenCV has no BT.709 conversion at full size: swscale does it, honouring the tag."""
    frame = _yuv_frame(colorspace=BT709)
    assert np.array_equal(frame_to_rgb(frame), _swscale(frame))


@pytest.mark.parametrize(
    ("fmt", "height", "width"),
    [("yuvj420p", 360, 640), ("yuv444p", 360, 640), ("yuv422p", 360, 640), ("yuv420p", 361, 641), ("rgb24", 360, 640)],
)
def test_other_frames_go_through_swscale(fmt: str, height: int, width: int) -> None:
    frame = _yuv_frame(height, width, fmt=fmt)
    assert np.array_equal(frame_to_rgb(frame), _swscale(frame))
    size = fit_size(width, height, 320)
    assert np.array_equal(frame_to_rgb(frame, 320), _swscale(frame, size))


def test_reader_scales_for_the_detector_and_keeps_the_source_size(clips: dict[str, Path]) -> None:
    _, full = read_video(clips["bframes"], SamplingOptions(fps=2))
    reader, scaled = read_video(clips["bframes"], SamplingOptions(fps=2, detector_size_px=160))
    assert [i for i, _, _ in scaled] == [i for i, _, _ in full]
    height, width = full[0][2].shape[:2]
    fit_w, fit_h = fit_size(width, height, 160)
    for (_, _, big), (_, _, small) in zip(full, scaled, strict=True):
        assert small.shape == (fit_h, fit_w, 3)
        resized = cv2.resize(big, (fit_w, fit_h), interpolation=cv2.INTER_LINEAR)
        assert _diff(small, resized).mean() < 2
    assert (reader.meta.width, reader.meta.height) == (width, height)


def test_reader_scaled_frames_are_upright(clips: dict[str, Path]) -> None:
    _, frames = read_video(clips["rotated"], SamplingOptions(fps=1, detector_size_px=100))
    with av.open(str(clips["rotated"])) as container:
        stream = container.streams.video[0]
        coded_w, coded_h = stream.codec_context.width, stream.codec_context.height
    fit_w, fit_h = fit_size(coded_w, coded_h, 100)
    assert all(image.shape == (fit_w, fit_h, 3) for _, _, image in frames)  # turned a quarter


def test_every_frame_sampling_never_seeks_past_the_start(clips: dict[str, Path]) -> None:
    """Each key frame follows the decode position directly: decoding on beats flushing the frame threads."""
    reader, frames = read_video(clips["long_gop"], SamplingOptions(fps=0))
    assert reader.stats.seeks == 1
    assert reader.stats.decoded_frames == len(frames)
