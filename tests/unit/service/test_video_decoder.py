"""``decoder`` pyav | nvdec | auto: the GPU path picks the PyAV sampler's frames, and falls back or fails as told.

torchcodec and CUDA are absent from CI: the GPU path runs against ``tests.fakes.torchcodec``
(PyAV underneath), which checks the wiring (times asked, pts mapped back, index and timestamp,
chunks, fallbacks, errors) but not NVDEC itself. tests/gpu/test_nvdec_decode.py does that.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from models.video_decode import decoder_available
from service import cli
from service.commands.common import sampling_from_args
from service.config import Settings
from service.errors import ErrorCode, PartialMediaError, PreannotateError
from service.pipeline.options import DecoderChoice, MediaLimits, SamplingMode, SamplingOptions
from service.pipeline.video import VideoReader
from tests.fakes import torchcodec as fake_torchcodec
from tests.fakes.torchcodec import FakeTorchcodec
from tests.media import read_video

CASES = [
    SamplingOptions(fps=1),
    SamplingOptions(fps=2.5),
    SamplingOptions(fps=0),
    SamplingOptions(fps=100),
    SamplingOptions(fps=3, start_s=1.23, end_s=2.5),
    SamplingOptions(fps=2, max_frames=3),
]


@pytest.fixture(autouse=True)
def _fresh_probe() -> Iterator[None]:
    fake_torchcodec.reset_probe()
    yield
    fake_torchcodec.reset_probe()


def _with(options: SamplingOptions, decoder: DecoderChoice) -> SamplingOptions:
    return SamplingOptions(
        fps=options.fps,
        mode=options.mode,
        start_s=options.start_s,
        end_s=options.end_s,
        max_frames=options.max_frames,
        decoder=decoder,
    )


@pytest.mark.parametrize(
    "clip", ["bframes", "long_gop", "vfr", "vfr_mp4", "rotated", "rotated_270", "vp9", "hevc", "ts_bframes", "mpeg2"]
)
@pytest.mark.parametrize("options", CASES, ids=repr)
def test_gpu_path_returns_the_pyav_samplers_frames(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], clip: str, options: SamplingOptions
) -> None:
    fake = fake_torchcodec.install(monkeypatch)
    pyav_reader, expected = read_video(clips[clip], options)
    gpu_reader, got = read_video(clips[clip], _with(options, DecoderChoice.NVDEC))

    assert pyav_reader.decoder == "pyav"
    assert gpu_reader.decoder == "nvdec"
    assert [(i, t) for i, t, _ in got] == [(i, t) for i, t, _ in expected]
    for (_, _, a), (_, _, b) in zip(got, expected, strict=True):
        assert np.array_equal(a, b)  # the fake decodes with PyAV: only NVDEC itself may differ
    assert gpu_reader.meta == pyav_reader.meta
    assert max(fake.calls, default=0) <= 16


def test_last_frame_is_found_when_the_stream_ends_at_its_pts(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]
) -> None:
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(last_frame_duration=False))
    options = SamplingOptions(fps=0, start_s=5.9)
    _, expected = read_video(clips["bframes"], options)
    _, got = read_video(clips["bframes"], _with(options, DecoderChoice.NVDEC))
    assert [i for i, _, _ in got] == [i for i, _, _ in expected] == [177, 178, 179]


def test_auto_without_torchcodec_decodes_with_pyav_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    fake_torchcodec.uninstall_real(monkeypatch)
    options = SamplingOptions(fps=1, decoder=DecoderChoice.AUTO)
    with caplog.at_level(logging.INFO, logger="service.pipeline"):
        readers = [read_video(clips["bframes"], options)[0] for _ in range(2)]
    assert [r.decoder for r in readers] == ["pyav", "pyav"]
    said = [r.getMessage() for r in caplog.records if "torchcodec" in r.getMessage()]
    assert len(said) == 1
    assert "decoding videos with PyAV" in said[0]


def test_auto_without_cuda_decodes_with_pyav(monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]) -> None:
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(cuda=False))
    reader, frames = read_video(clips["bframes"], SamplingOptions(fps=1, decoder=DecoderChoice.AUTO))
    assert reader.decoder == "pyav"
    assert len(frames) == 6


def test_auto_with_torchcodec_and_cuda_decodes_on_the_gpu(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]
) -> None:
    fake = fake_torchcodec.install(monkeypatch)
    reader, _ = read_video(clips["bframes"], SamplingOptions(fps=1, decoder=DecoderChoice.AUTO))
    assert reader.decoder == "nvdec"
    assert fake.devices == ["cuda"]


@pytest.mark.parametrize(
    ("fake", "code"),
    [(None, ErrorCode.MISSING_DEPENDENCY), (FakeTorchcodec(cuda=False), ErrorCode.DEVICE_UNAVAILABLE)],
    ids=["no-torchcodec", "no-cuda"],
)
def test_nvdec_where_it_cannot_run_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], fake: FakeTorchcodec | None, code: ErrorCode
) -> None:
    if fake is None:
        fake_torchcodec.uninstall_real(monkeypatch)
    else:
        fake_torchcodec.install(monkeypatch, fake)
    with pytest.raises(PreannotateError) as caught:
        VideoReader("item", "0", clips["bframes"], SamplingOptions(decoder=DecoderChoice.NVDEC), MediaLimits())
    assert caught.value.code is code
    assert "decoder nvdec" in str(caught.value)


def test_key_frame_sampling_and_avi_with_b_frames_stay_with_pyav(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]
) -> None:
    fake = fake_torchcodec.install(monkeypatch)
    keyframes = SamplingOptions(fps=1, mode=SamplingMode.KEYFRAMES, decoder=DecoderChoice.NVDEC)
    assert read_video(clips["bframes"], keyframes)[0].decoder == "pyav"
    avi, frames = read_video(clips["avi_bframes"], SamplingOptions(fps=1, decoder=DecoderChoice.NVDEC))
    assert avi.decoder == "pyav"
    assert len(frames) == 3
    assert fake.devices == []


def test_a_file_torchcodec_cannot_open(monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]) -> None:
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(open_error="Unsupported codec"))
    reader, frames = read_video(clips["bframes"], SamplingOptions(fps=1, decoder=DecoderChoice.AUTO))
    assert reader.decoder == "pyav"
    assert len(frames) == 6
    with pytest.raises(PreannotateError, match="Unsupported codec") as caught:
        VideoReader("item", "0", clips["bframes"], SamplingOptions(decoder=DecoderChoice.NVDEC), MediaLimits())
    assert caught.value.code is ErrorCode.UNSUPPORTED_MEDIA


def test_decoders_that_disagree_on_the_frame_size_are_not_mixed(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]
) -> None:
    """E.g. one applies the display rotation and the other not: PyAV's size is the one meta promised."""
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(size_override=(240, 320)))
    assert read_video(clips["bframes"], SamplingOptions(fps=1, decoder=DecoderChoice.AUTO))[0].decoder == "pyav"
    with pytest.raises(PreannotateError, match="240x320") as caught:
        VideoReader("item", "0", clips["bframes"], SamplingOptions(decoder=DecoderChoice.NVDEC), MediaLimits())
    assert caught.value.code is ErrorCode.UNSUPPORTED_MEDIA


def test_decoding_failure_keeps_the_frames_before_it(monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]) -> None:
    fake_torchcodec.install(monkeypatch, FakeTorchcodec(decode_error_after=16))
    reader = VideoReader(
        "item", "0", clips["bframes"], SamplingOptions(fps=0, decoder=DecoderChoice.NVDEC), MediaLimits()
    )
    got: list[int] = []
    try:
        with pytest.raises(PartialMediaError, match="decoding failed after 16 of 180"):
            got.extend(f.info.frame_index for f in reader)
    finally:
        reader.close()
    assert got == list(range(16))


def test_frames_torchcodec_places_elsewhere_count_as_lost(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path]
) -> None:
    """If the two demuxers disagree on a frame's pts, the slot says so instead of mislabelling it."""
    fake_torchcodec.install(monkeypatch)
    reader = VideoReader(
        "item", "0", clips["bframes"], SamplingOptions(fps=1, decoder=DecoderChoice.NVDEC), MediaLimits()
    )
    # Shift what torchcodec is asked by a whole frame: it returns the neighbours.
    times = reader._index.played_at_times
    monkeypatch.setattr(type(reader._index), "played_at_times", lambda self, pts: [t + 1 / 30 for t in times(pts)])
    try:
        # Each is delivered as the frame it is (its own index), and counted as standing in for the planned one.
        lost = r"0 of 6 sampled frames could not be decoded \(6 decoded, 6 of them standing in"
        with pytest.raises(PartialMediaError, match=lost):
            list(reader)
    finally:
        reader.close()


def test_played_at_times_lie_inside_each_frames_display_interval(clips: dict[str, Path]) -> None:
    reader = VideoReader("item", "0", clips["vfr_mp4"], SamplingOptions(fps=0), MediaLimits())
    reader.close()
    index = reader._index
    times = np.asarray(index.played_at_times(index.pts))
    seconds = index.pts * float(index.time_base)
    assert np.all(times > seconds)
    assert np.all(times[:-1] < seconds[1:])
    assert index.played_at_times(index.pts[:0]) == []


# --- options and the command line ---


def test_sampling_options_take_the_decoder_by_name() -> None:
    assert SamplingOptions().decoder is DecoderChoice.PYAV
    assert SamplingOptions(decoder="auto").decoder == DecoderChoice.AUTO  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decoder must be one of pyav, nvdec, auto"):
        SamplingOptions(decoder="gpu")  # type: ignore[arg-type]


def _args(*flags: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["frames", "in.mp4", "--out", "out", *flags])


def test_decoder_flag_reaches_the_sampling_options(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torchcodec.install(monkeypatch)
    settings = Settings()
    assert sampling_from_args(_args(), settings).decoder is DecoderChoice.PYAV
    assert sampling_from_args(_args("--decoder", "nvdec"), settings).decoder is DecoderChoice.NVDEC
    run = cli.build_parser().parse_args(["run", "in.mp4", "--out", "o.json", "--decoder", "auto"])
    assert sampling_from_args(run, settings).decoder is DecoderChoice.AUTO
    with pytest.raises(SystemExit):
        _args("--decoder", "gpu")


def test_decoder_setting_is_the_default_of_the_cli_jobs_and_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREANNOTATE_DECODER", "auto")
    settings = Settings()
    assert settings.sampling_options().decoder is DecoderChoice.AUTO  # sync and the ML backend
    assert sampling_from_args(_args(), settings).decoder is DecoderChoice.AUTO
    assert sampling_from_args(_args("--decoder", "pyav"), settings).decoder is DecoderChoice.PYAV  # flags win
    monkeypatch.setenv("PREANNOTATE_DECODER", "gpu")
    with pytest.raises(ValidationError):
        Settings()


def test_nvdec_flag_without_torchcodec_fails_before_opening_anything(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_torchcodec.uninstall_real(monkeypatch)
    out = tmp_path / "frames"
    rc = cli.main(["frames", str(clips["bframes"]), "--out", str(out), "--decoder", "nvdec", "-q"])
    assert rc == ErrorCode.MISSING_DEPENDENCY.exit_code
    assert "missing_dependency" in capsys.readouterr().err
    assert not out.exists()


def test_frames_with_the_default_decoder_never_loads_torch(clips: dict[str, Path], tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from service.pipeline.options import SamplingOptions, MediaLimits\n"
        "from service.pipeline.video import VideoReader\n"
        f"r = VideoReader('i', '0', Path({str(clips['bframes'])!r}), SamplingOptions(), MediaLimits())\n"
        "frames = list(r); r.close()\n"
        "print(len(frames), sorted(m for m in ('torch', 'torchcodec') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "6 []", result.stdout + result.stderr


# --- the real torchcodec, on the CPU, where it loads ---


@pytest.mark.skipif(not decoder_available("cpu"), reason="torchcodec (with FFmpeg) does not load here")
@pytest.mark.parametrize(
    "clip", ["bframes", "long_gop", "vfr", "vfr_mp4", "rotated", "rotated_270", "hevc", "ts_bframes"]
)
@pytest.mark.parametrize("options", CASES[:3], ids=repr)
def test_real_torchcodec_on_cpu_matches_pyav(
    monkeypatch: pytest.MonkeyPatch, clips: dict[str, Path], clip: str, options: SamplingOptions
) -> None:
    import service.pipeline.video

    monkeypatch.setattr(service.pipeline.video, "GPU_DEVICE", "cpu")
    monkeypatch.setattr("service.pipeline.decoders.GPU_DEVICE", "cpu")
    _, expected = read_video(clips[clip], options)
    reader, got = read_video(clips[clip], _with(options, DecoderChoice.NVDEC))
    assert reader.decoder == "nvdec"
    assert [(i, t) for i, t, _ in got] == [(i, t) for i, t, _ in expected]
    for (_, _, a), (_, _, b) in zip(got, expected, strict=True):
        # Same FFmpeg decode; the YUV -> RGB conversion may round differently (swscale flags).
        assert a.shape == b.shape
        assert np.abs(a.astype(np.int16) - b).mean() < 2.0
