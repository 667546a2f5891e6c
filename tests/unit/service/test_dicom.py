"""DICOM reader: pixel pipeline (rescale, window, MONOCHROME1, colour), frame timing and sampling, limits,
errors and streaming. Files are written at test time by ``tests.media_dicom``."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import convert_color_space
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import JPEGBaseline8Bit, JPEGLosslessSV1

from service.errors import ErrorCode, PreannotateError
from service.pipeline import dicom
from service.pipeline.dicom import DicomReader
from service.pipeline.frames import Frame, MediaKind
from service.pipeline.options import MediaLimits, SamplingOptions
from tests import media_dicom

LIMITS = MediaLimits()
EVERY_FRAME = SamplingOptions(fps=0)


def read_all(path: Path, sampling: SamplingOptions = EVERY_FRAME, limits: MediaLimits = LIMITS) -> list[Frame]:
    reader = DicomReader("study", "0", path, sampling, limits)
    try:
        return list(reader)
    finally:
        reader.close()


def first_row(path: Path) -> list[int]:
    (frame,) = read_all(path)
    image = frame.image
    assert image.dtype == np.uint8
    assert image.ndim == 3
    assert image.shape[2] == 3
    np.testing.assert_array_equal(image[..., 0], image[..., 2])  # grey stacked to RGB
    return [int(v) for v in image[0, :, 0]]


# Hand-computed with the DICOM LINEAR window (PS3.3 C.11.2.1.2.1) onto 0..255:
#   x <= c - 0.5 - (w - 1) / 2 -> 0;  x > c - 0.5 + (w - 1) / 2 -> 255;
#   else ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.  With w = 256 that is x - c + 128.
WINDOW_CASES: list[tuple[str, Callable[[Path], Path], list[int]]] = [
    (
        "16-bit, center 1000 width 256",
        lambda p: media_dicom.mono16_windowed(p, [0, 872, 900, 1000, 1127, 1128, 65535], center=1000, width=256),
        [0, 0, 28, 128, 255, 255, 255],
    ),
    (
        "several windows: the first applies",
        lambda p: media_dicom.mono16_windowed(p, [900, 1000], center=[1000, 40], width=[256, 400]),
        [28, 128],
    ),
    (
        "MONOCHROME1 is inverted after windowing",
        lambda p: media_dicom.mono1_windowed(p, [0, 872, 900, 1000, 1127, 1128, 65535], center=1000, width=256),
        [255, 255, 227, 127, 0, 0, 0],
    ),
    (
        # HU = 2 * stored - 1024: [0, -24, -1224, 176, 96] -> HU + 128, clipped
        "signed with rescale, window in HU",
        lambda p: media_dicom.signed_rescaled(
            p, [512, 500, -100, 600, 560], slope=2, intercept=-1024, center=0, width=256
        ),
        [128, 104, 0, 255, 224],
    ),
    (
        # no window: min..max (1000..2020) -> 0..255, i.e. (x - 1000) / 4
        "16-bit without a window",
        lambda p: media_dicom.write_dicom(p, np.array([[1000, 1400, 2020]], np.uint16)),
        [0, 100, 255],
    ),
    (
        "8-bit without a window displays as stored",
        lambda p: media_dicom.write_dicom(p, np.array([[3, 100, 200]], np.uint8)),
        [3, 100, 200],
    ),
    (
        "1-bit (segmentation-like) is stretched",
        lambda p: media_dicom.write_dicom(p, np.array([[0, 1, 1, 0, 1, 0, 0, 1]], np.uint8), bits_stored=1),
        [0, 255, 255, 0, 255, 0, 0, 255],
    ),
    (
        # entries map 100..103 (below -> first, above -> last); declared 16-bit, used 0..4000 -> 0..255
        "VOI LUT Sequence, normalised by the LUT's own range",
        lambda p: media_dicom.voi_lut(p, [50, 100, 101, 102, 103, 500], first_mapped=100, lut=[0, 1000, 2000, 4000]),
        [0, 0, 64, 128, 255, 255],
    ),
    (
        "an unusable window (width 0) falls back to min..max",
        lambda p: media_dicom.mono16_windowed(p, [1000, 1400, 2020], center=1000, width=0),
        [0, 100, 255],
    ),
]


@pytest.mark.parametrize(("case", "build", "expected"), WINDOW_CASES, ids=[c[0] for c in WINDOW_CASES])
def test_grey_pipeline(tmp_path: Path, case: str, build: Callable[[Path], Path], expected: list[int]) -> None:
    assert first_row(build(tmp_path / "a.dcm")) == expected


def test_per_frame_functional_group_windows(tmp_path: Path) -> None:
    # given two frames with identical pixels and their own windows (as enhanced CT/MR store them)
    path = media_dicom.per_frame_windows(tmp_path / "a.dcm", [900, 1000], [(1000, 256), (900, 256)])
    # when
    frames = read_all(path)
    # then each frame uses its own window
    assert [[int(v) for v in f.image[0, :, 0]] for f in frames] == [[28, 128], [128, 228]]


def test_rgb_passes_through(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    (frame,) = read_all(media_dicom.rgb(tmp_path / "a.dcm", rgb))
    np.testing.assert_array_equal(frame.image, rgb)
    assert (frame.info.width, frame.info.height) == (7, 5)


def test_ybr_full_is_converted_to_rgb(tmp_path: Path) -> None:
    # pydicom's iter_pixels converts YBR_FULL to RGB by default: check it, as the pipeline relies on it
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    (frame,) = read_all(media_dicom.write_dicom(tmp_path / "a.dcm", ybr, photometric="YBR_FULL"))
    assert np.abs(frame.image.astype(int) - rgb).max() <= 2


def test_palette_colour(tmp_path: Path) -> None:
    colours = [(0, 0, 0), (255, 0, 0), (10, 200, 30)]
    path = media_dicom.palette(tmp_path / "a.dcm", np.array([[0, 1, 2, 1]], np.uint8), colours)
    (frame,) = read_all(path)
    assert frame.image[0].tolist() == [list(colours[i]) for i in (0, 1, 2, 1)]


def test_16_bit_rgb_is_scaled_by_bits_stored(tmp_path: Path) -> None:
    rgb16 = np.zeros((1, 3, 3), np.uint16)
    rgb16[0, :, 0] = [0, 2048, 4095]  # 12 bits stored
    (frame,) = read_all(media_dicom.write_dicom(tmp_path / "a.dcm", rgb16, photometric="RGB", bits_stored=12))
    assert frame.image[0, :, 0].tolist() == [0, 128, 255]


def test_jpeg_baseline_decodes(tmp_path: Path) -> None:
    if not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG Baseline decoder (pydicom uses Pillow)")
    pixels = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))
    (frame,) = read_all(media_dicom.jpeg_baseline(tmp_path / "a.dcm", pixels))
    assert np.abs(frame.image[..., 0].astype(int) - pixels).max() <= 4


# --- timing and sampling -----------------------------------------------------------------------------------

# 10 frames at 25 fps (40 ms). At 10 fps the targets 0, .1, .2, .3 s show frames 0, 2 (.08 s), 5 (.2 s), 7 (.28 s).
CLOCKS: list[dict[str, Any]] = [
    {"FrameTime": 40.0},
    {"FrameTimeVector": [0.0] + [40.0] * 9},
    {"CineRate": 25},
    {"RecommendedDisplayFrameRate": 25},
]


@pytest.mark.parametrize("clock", CLOCKS, ids=[next(iter(c)) for c in CLOCKS])
@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        (SamplingOptions(fps=10), [0, 2, 5, 7]),
        (SamplingOptions(fps=0), list(range(10))),
        (SamplingOptions(fps=10, max_frames=2), [0, 2]),
        (SamplingOptions(fps=10, start_s=0.1, end_s=0.2), [2, 5]),
        (SamplingOptions(fps=1), [0]),
    ],
)
def test_timed_multiframe_is_sampled_like_video(
    tmp_path: Path, clock: dict[str, Any], sampling: SamplingOptions, expected: list[int]
) -> None:
    # given
    path = media_dicom.multiframe(tmp_path / "cine.dcm", 10, **clock)
    # when
    reader = DicomReader("echo", "0", path, sampling, LIMITS)
    frames = list(reader)
    # then
    assert reader.meta.media is MediaKind.DICOM
    assert reader.meta.fps == pytest.approx(25.0)
    assert reader.meta.duration_s == pytest.approx(0.4)
    assert (reader.meta.frame_count, reader.meta.planned_frames) == (10, len(expected))
    assert [f.info.frame_index for f in frames] == expected
    assert [f.info.timestamp_s for f in frames] == pytest.approx([0.04 * i for i in expected])
    assert [int(f.image[0, 0, 0]) for f in frames] == [10 * i for i in expected]  # the right pixels
    assert all(f.info.media is MediaKind.DICOM and f.info.source == str(path) for f in frames)


def test_frame_time_vector_irregular(tmp_path: Path) -> None:
    # increments 0, 100, 10, 10 ms -> times 0, .1, .11, .12; at 10 fps targets 0, .1 -> frames 0, 1
    path = media_dicom.multiframe(tmp_path / "a.dcm", 4, FrameTimeVector=[0, 100, 10, 10])
    frames = read_all(path, SamplingOptions(fps=10))
    assert [(f.info.frame_index, f.info.timestamp_s) for f in frames] == [(0, 0.0), (1, pytest.approx(0.1))]


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        (SamplingOptions(fps=1), [0, 1, 2, 3, 4]),  # no clock: fps does not apply
        (SamplingOptions(fps=1, start_s=3.0), [0, 1, 2, 3, 4]),
        (SamplingOptions(max_frames=3), [0, 1, 2]),
    ],
)
def test_untimed_multiframe_keeps_every_slice(tmp_path: Path, sampling: SamplingOptions, expected: list[int]) -> None:
    # given a stack of slices (no Frame Time, Cine Rate, ...)
    path = media_dicom.multiframe(tmp_path / "volume.dcm", 5)
    # when
    reader = DicomReader("ct", "0", path, sampling, LIMITS)
    frames = list(reader)
    # then
    assert (reader.meta.fps, reader.meta.duration_s) == (None, None)
    assert (reader.meta.frame_count, reader.meta.planned_frames) == (5, len(expected))
    assert [f.info.frame_index for f in frames] == expected
    assert [f.info.timestamp_s for f in frames] == [None] * len(expected)
    assert [int(f.image[0, 0, 0]) for f in frames] == [10 * i for i in expected]


def test_single_frame_meta(tmp_path: Path) -> None:
    path = media_dicom.mono16_windowed(tmp_path / "a.dcm", [1, 2, 3], center=2, width=10)
    reader = DicomReader("x", "s", path, SamplingOptions(fps=5), LIMITS)
    assert reader.meta.source_files == (str(path),)
    assert (reader.meta.width, reader.meta.height, reader.meta.fps) == (3, 1, None)
    assert (reader.meta.frame_count, reader.meta.planned_frames) == (1, 1)
    (frame,) = list(reader)
    assert (frame.info.frame_index, frame.info.timestamp_s) == (0, None)


# --- limits and errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "sampling", "limit", "code"),
    [
        ({}, SamplingOptions(), 4, ErrorCode.TOO_MANY_FRAMES),
        ({}, SamplingOptions(max_frames=4), 4, None),
        ({"FrameTime": 40.0}, SamplingOptions(fps=0), 4, ErrorCode.TOO_MANY_FRAMES),
        ({"FrameTime": 40.0}, SamplingOptions(fps=10), 4, None),  # 3 planned of 6
    ],
)
def test_too_many_frames(
    tmp_path: Path, clock: dict[str, Any], sampling: SamplingOptions, limit: int, code: ErrorCode | None
) -> None:
    path = media_dicom.multiframe(tmp_path / "a.dcm", 6, **clock)
    if code is None:
        assert len(read_all(path, sampling, MediaLimits(max_frames=limit))) <= limit
        return
    with pytest.raises(PreannotateError) as exc:
        DicomReader("i", "0", path, sampling, MediaLimits(max_frames=limit))
    assert exc.value.code is code
    assert "--max-frames" in exc.value.message


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (MediaLimits(max_file_bytes=100), ErrorCode.FILE_TOO_LARGE),
        (MediaLimits(max_pixels=4 * 6 - 1), ErrorCode.DIMENSIONS_TOO_LARGE),
        (MediaLimits(max_pixels=4 * 6), None),
    ],
)
def test_size_limits(tmp_path: Path, limits: MediaLimits, code: ErrorCode | None) -> None:
    path = media_dicom.multiframe(tmp_path / "a.dcm", 2)
    if code is None:
        DicomReader("i", "0", path, EVERY_FRAME, limits)
        return
    with pytest.raises(PreannotateError) as exc:
        DicomReader("i", "0", path, EVERY_FRAME, limits)
    assert exc.value.code is code
    assert str(path) in exc.value.message


def cut(keep: Callable[[bytes], int]) -> Callable[[Path], Path]:
    """A 3-frame file cut to ``keep(data)`` bytes."""

    def build(path: Path) -> Path:
        data = media_dicom.multiframe(path, 3).read_bytes()
        path.write_bytes(data[: keep(data)])
        return path

    return build


def before_pixel_data(data: bytes) -> int:
    return data.index(b"\xe0\x7f\x10\x00")  # the (7FE0,0010) tag, little endian


def png(path: Path) -> Path:
    Image.new("RGB", (4, 4)).save(path, format="PNG")
    return path


def write(content: bytes) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        path.write_bytes(content)
        return path

    return build


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (write(b"just some text\n"), ErrorCode.UNSUPPORTED_MEDIA),
        (png, ErrorCode.UNSUPPORTED_MEDIA),
        (media_dicom.no_pixels, ErrorCode.UNSUPPORTED_MEDIA),
        (cut(lambda data: len(data) - 30), ErrorCode.CORRUPT_MEDIA),
        (cut(before_pixel_data), ErrorCode.CORRUPT_MEDIA),
        (cut(lambda data: 200), ErrorCode.CORRUPT_MEDIA),
    ],
    ids=["text", "png", "no pixel data", "cut in pixel data", "cut before pixel data", "cut in file meta"],
)
def test_bad_files_fail_on_open(tmp_path: Path, build: Callable[[Path], Path], code: ErrorCode) -> None:
    path = build(tmp_path / "a.dcm")
    with pytest.raises(PreannotateError) as exc:
        DicomReader("i", "0", path, EVERY_FRAME, LIMITS)
    assert exc.value.code is code
    assert str(path) in exc.value.message


def test_missing_decoder_is_unsupported_encoding(tmp_path: Path) -> None:
    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    path = media_dicom.compressed_dummy(tmp_path / "a.dcm", JPEGLosslessSV1)
    with pytest.raises(PreannotateError) as exc:
        DicomReader("i", "0", path, EVERY_FRAME, LIMITS)
    assert exc.value.code is ErrorCode.UNSUPPORTED_ENCODING
    assert "JPEG Lossless" in exc.value.message
    assert "pylibjpeg" in exc.value.message
    assert str(path) in exc.value.message


def test_undecodable_compressed_frame_is_corrupt(tmp_path: Path) -> None:
    # given JPEG Baseline (a decoder is installed) holding bytes that are not a JPEG stream
    if not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG Baseline decoder")
    path = media_dicom.compressed_dummy(tmp_path / "a.dcm", JPEGBaseline8Bit)
    reader = DicomReader("i", "0", path, EVERY_FRAME, LIMITS)  # the header is fine
    # when / then decoding fails, naming the file
    with pytest.raises(PreannotateError) as exc:
        list(reader)
    assert exc.value.code is ErrorCode.CORRUPT_MEDIA
    assert str(path) in exc.value.message


# --- streaming ---------------------------------------------------------------------------------------------


def test_frames_are_decoded_lazily_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a spy around pydicom's iter_pixels
    path = media_dicom.multiframe(tmp_path / "a.dcm", 6, FrameTime=40.0)
    calls: list[Any] = []
    pulled: list[int] = []

    def spy(src: Any, **kwargs: Any) -> Iterator[Any]:
        calls.append((src, kwargs.get("indices")))
        for arr in iter_pixels(src, **kwargs):
            pulled.append(1)
            yield arr

    monkeypatch.setattr(dicom, "iter_pixels", spy)
    # when the reader is opened, nothing is decoded
    reader = DicomReader("i", "0", path, SamplingOptions(fps=12.5), LIMITS)
    assert pulled == []
    # then the first frame arrives after exactly one decoded frame, read from the path (not a loaded
    # dataset) for only the planned indices
    frames = iter(reader)
    assert next(frames).info.frame_index == 0
    assert len(pulled) == 1
    assert calls == [(path, [0, 2, 4])]
    assert next(frames).info.frame_index == 2
    assert len(pulled) == 2
    reader.close()


def test_memory_stays_near_one_frame(tmp_path: Path) -> None:
    # given 240 frames of 256x256 16-bit (31.5 MB of pixels; one frame's pipeline peaks near 2.5 MB)
    pixels = np.random.default_rng(0).integers(0, 4096, (240, 256, 256), dtype=np.uint16)
    path = media_dicom.write_dicom(tmp_path / "big.dcm", pixels, bits_stored=12)
    pixels_bytes = pixels.nbytes
    del pixels
    reader = DicomReader("i", "0", path, EVERY_FRAME, LIMITS)
    # when
    tracemalloc.start()
    try:
        count = sum(1 for _ in reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # then all frames went through while the peak stayed a fraction of the pixel data
    assert count == 240
    assert peak < pixels_bytes // 6
