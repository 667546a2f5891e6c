"""The torchcodec adapter: chunking, index derivation, availability, and frames played at times.

torchcodec is optional and absent from CI: the adapter runs against ``tests.fakes.torchcodec``
(PyAV underneath, torchcodec's contract on top). The test against the real torchcodec on the CPU
skips where it does not load; tests/gpu/test_nvdec_decode.py covers CUDA.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.baselines import decode_all_sampler
from models.errors import DeviceUnavailableError, MissingDependencyError
from models.video_decode import (
    MAX_CHUNK_FRAMES,
    VideoDecodeError,
    VideoDecoder,
    check_decoder,
    chunked,
    decoder_available,
    frames_per_chunk,
    index_from_pts,
)
from service.pipeline.options import SamplingOptions
from tests.fakes import torchcodec as fake_torchcodec
from tests.fakes.torchcodec import FakeTorchcodec


@pytest.fixture(autouse=True)
def _fresh_probe() -> Iterator[None]:
    fake_torchcodec.reset_probe()
    yield
    fake_torchcodec.reset_probe()


# --- parts that need no decoder ---


@pytest.mark.parametrize(
    ("size", "expected"),
    [((320, 240), MAX_CHUNK_FRAMES), ((1920, 1080), 10), ((3840, 2160), 2), ((16384, 16384), 1), ((0, 0), 16)],
)
def test_chunks_are_bounded_in_bytes_and_frames(size: tuple[int, int], expected: int) -> None:
    assert frames_per_chunk(*size) == expected
    assert frames_per_chunk(*size) * size[0] * size[1] * 3 <= max(64 * 1024**2, size[0] * size[1] * 3)


def test_chunked_keeps_order_and_bounds() -> None:
    times = [0.5, 0.1, 0.9, 0.3, 0.7]
    assert [list(c) for c in chunked(times, 2)] == [[0.5, 0.1], [0.9, 0.3], [0.7]]
    assert list(chunked([], 3)) == []
    with pytest.raises(ValueError, match="chunk size"):
        list(chunked(times, 0))


def test_index_from_pts_is_exact_at_a_constant_rate() -> None:
    # 30 fps starting at 1.4 s (an MPEG-TS start time): pts seconds carry double rounding.
    pts = [1.4 + i / 30 for i in range(300)]
    assert [index_from_pts(t, begin_s=1.4, average_fps=30.0, num_frames=300) for t in pts] == list(range(300))


def test_index_from_pts_clamps_and_survives_an_unknown_rate() -> None:
    assert index_from_pts(-5.0, begin_s=0.0, average_fps=30.0, num_frames=10) == 0
    assert index_from_pts(99.0, begin_s=0.0, average_fps=30.0, num_frames=10) == 9
    assert index_from_pts(1.0, begin_s=0.0, average_fps=0.0, num_frames=10) == 0
    assert index_from_pts(1.0, begin_s=0.0, average_fps=float("nan"), num_frames=10) == 0
    with pytest.raises(ValueError, match="num_frames"):
        index_from_pts(0.0, begin_s=0.0, average_fps=30.0, num_frames=0)


# --- availability ---


def test_missing_torchcodec_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torchcodec.uninstall_real(monkeypatch)
    with pytest.raises(MissingDependencyError, match="pip install torchcodec"):
        check_decoder("cuda")
    assert not decoder_available("cpu")


def test_torchcodec_without_ffmpeg_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(ffmpeg=False))
    with pytest.raises(MissingDependencyError, match="FFmpeg"):
        check_decoder("cpu")


def test_no_cuda_is_device_unavailable_but_cpu_works(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(cuda=False))
    with pytest.raises(DeviceUnavailableError, match="CUDA"):
        check_decoder("cuda:0")
    assert decoder_available("cpu")
    assert not decoder_available("cuda")


def test_unknown_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torchcodec.install(monkeypatch)
    with pytest.raises(ValueError, match="device"):
        check_decoder("mps")


def test_a_raising_import_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A torchcodec wheel built for another torch (or CUDA) raises OSError on import, as on this CI box."""
    package = tmp_path / "torchcodec"
    package.mkdir()
    (package / "__init__.py").write_text("raise OSError('Could not load this library: libtorchcodec_image.so')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torchcodec", raising=False)
    with pytest.raises(MissingDependencyError, match=r"does not load \(OSError"):
        check_decoder("cpu")


# --- decoding, against the fake ---


def _reference(path: Path) -> list[tuple[int, float, np.ndarray]]:
    return list(decode_all_sampler(path, SamplingOptions(fps=0)))


def test_frames_played_at_follow_the_times_in_order_in_bounded_chunks(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]
) -> None:
    fake = fake_torchcodec.install(monkeypatch)
    reference = _reference(clips["bframes"])  # 30 fps, 180 frames, starts at 0
    decoder = VideoDecoder(clips["bframes"], device="cuda", max_chunk_frames=4)
    # Unsorted, repeated, on frame times and between them.
    times = [2.01, 0.0, 5.99, 1.01, 1.01, 3.5 + 1 / 60, 0.02, 4.01, 4.0 - 1e-9]
    frames = list(decoder.frames_played_at(times))

    expected = [60, 0, 179, 30, 30, 105, 0, 120, 119]
    assert [f.index for f in frames] == expected
    assert [round(f.pts_s, 6) for f in frames] == [round(reference[i][1], 6) for i in expected]
    for frame, i in zip(frames, expected, strict=True):
        assert frame.image.dtype == np.uint8
        assert frame.image.flags.c_contiguous
        assert np.array_equal(frame.image, reference[i][2])
    assert fake.calls == [4, 4, 1]  # never more than a chunk at once
    assert fake.devices == ["cuda"]


def test_times_outside_the_stream_get_the_first_and_last_frame(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]
) -> None:
    """torchcodec refuses them; the PyAV sampler's rule shows the first frame before it, the last after."""
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(last_frame_duration=False))
    decoder = VideoDecoder(clips["bframes"], device="cpu")
    last = decoder.num_frames - 1
    frames = list(decoder.frames_played_at([-1.0, 2.01, decoder.end_s, 1e9]))
    assert [f.index for f in frames] == [0, 60, last, last]
    assert frames[2].image is frames[3].image  # one decode for both


def test_open_and_decode_failures_are_video_decode_errors(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]
) -> None:
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(open_error="Unsupported codec"))
    with pytest.raises(VideoDecodeError, match="Unsupported codec"):
        VideoDecoder(clips["bframes"])

    fake_torchcodec.reset_probe()
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(decode_error_after=3))
    decoder = VideoDecoder(clips["bframes"], max_chunk_frames=2)
    frames = decoder.frames_played_at([0.0, 0.5, 1.0, 1.5])
    assert next(frames).index == 0
    assert next(frames).index == 15
    with pytest.raises(VideoDecodeError, match="decoding failed"):
        next(frames)


def test_missing_torchcodec_fails_on_opening(monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]) -> None:
    fake_torchcodec.uninstall_real(monkeypatch)
    with pytest.raises(MissingDependencyError):
        VideoDecoder(clips["bframes"], device="cpu")


# --- the real torchcodec, on the CPU, where it loads ---


@pytest.mark.skipif(not decoder_available("cpu"), reason="torchcodec (with FFmpeg) does not load here")
@pytest.mark.parametrize("clip", ["bframes", "long_gop", "vfr_mp4", "rotated", "rotated_270", "vp9", "hevc"])
def test_real_torchcodec_on_cpu_matches_decoding_every_frame(clips: dict[str, Path], clip: str) -> None:
    reference = _reference(clips[clip])
    decoder = VideoDecoder(clips[clip], device="cpu")
    # Ask in the middle of each frame's display interval: a frame's own pts is an edge, where
    # two roundings of pts * time_base may disagree.
    starts = [t for _, t, _ in reference]
    ends = [*starts[1:], 2 * starts[-1] - starts[-2]]
    frames = list(decoder.frames_played_at([decoder.begin_s + (a + b) / 2 for a, b in zip(starts, ends, strict=True)]))
    first_pts_s = decoder.begin_s

    assert [round(f.pts_s - first_pts_s, 6) for f in frames] == [round(t, 6) for _, t, _ in reference]
    if clip != "vfr_mp4":  # the index is derived from the average rate: exact at a constant one only
        assert [f.index for f in frames] == [i for i, _, _ in reference]
    for frame, (_, _, rgb) in zip(frames, reference, strict=True):
        # Same FFmpeg decode; the YUV -> RGB conversion may round differently (swscale flags).
        assert frame.image.shape == rgb.shape
        assert np.abs(frame.image.astype(np.int16) - rgb).mean() < 2.0
