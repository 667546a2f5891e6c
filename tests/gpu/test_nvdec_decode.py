"""NVDEC through torchcodec picks the PyAV sampler's frames. Skipped without torchcodec and a CUDA device.

Pixels are compared with a tolerance: NVDEC's YUV -> RGB conversion (and chroma upsampling) is
not FFmpeg's swscale, so low bits differ, and a few pixels at sharp colour edges differ more.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.video_decode import VideoDecoder, decoder_available
from service.pipeline.options import DecoderChoice, SamplingOptions
from tests.fakes import torchcodec as fake_torchcodec
from tests.media import read_video

pytestmark = pytest.mark.skipif(not decoder_available("cuda"), reason="torchcodec with a CUDA device is not here")


@pytest.fixture(autouse=True)
def _fresh_probe() -> Iterator[None]:
    yield
    fake_torchcodec.reset_probe()


@pytest.mark.parametrize("clip", ["bframes", "long_gop", "vfr_mp4", "rotated", "rotated_270", "hevc", "ts_bframes"])
@pytest.mark.parametrize("fps", [0.0, 1.0, 7.0])
def test_nvdec_returns_the_pyav_samplers_frames(clips: dict[str, Path], clip: str, fps: float) -> None:
    _, expected = read_video(clips[clip], SamplingOptions(fps=fps))
    reader, got = read_video(clips[clip], SamplingOptions(fps=fps, decoder=DecoderChoice.NVDEC))

    assert reader.decoder == "nvdec"
    assert [(i, t) for i, t, _ in got] == [(i, t) for i, t, _ in expected]
    for (_, _, a), (_, _, b) in zip(got, expected, strict=True):
        assert a.shape == b.shape
        diff = np.abs(a.astype(np.int16) - b)
        assert diff.mean() < 3.0
        assert (diff > 24).mean() < 0.02


def test_nvdec_decodes_h264_on_the_gpu(clips: dict[str, Path]) -> None:
    decoder = VideoDecoder(clips["bframes"], device="cuda")
    frames = list(decoder.frames_played_at([0.51, 1.51]))
    assert [f.index for f in frames] == [15, 45]
    assert not decoder.cpu_fallback
