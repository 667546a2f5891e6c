"""A stand-in for torchcodec (and torch's CUDA check), decoding with PyAV, for machines without them.

It follows torchcodec's exact-seek-mode contract as ``models.video_decode`` relies on it:
``VideoDecoder(path, device=, seek_mode=, dimension_order="NHWC")``; ``metadata`` with the
post-rotation width and height, ``average_fps``, ``begin_stream_seconds`` (first pts) and
``end_stream_seconds`` (last pts + its duration); ``get_frames_played_at(seconds)``, the frame
whose [pts, next pts) holds each time, refusing times outside [begin, end) as torchcodec does;
``get_frames_at(indices)``; batches with ``data`` (N, H, W, 3) uint8 and ``pts_seconds``, as
tensor-likes with ``cpu()``, ``numpy()`` and ``tolist()``. pts seconds are ``pts * (num / den)``
in doubles, as torchcodec's ``ptsToSeconds`` computes them.

Every call records how many frames it returned (``calls``), to check that chunks stay bounded.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import pytest

from service.pipeline.video import frame_to_rgb


class _Tensor:
    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def cpu(self) -> _Tensor:
        return self

    def numpy(self) -> np.ndarray:
        return self._array

    def tolist(self) -> list[Any]:
        return self._array.tolist()


@dataclass
class _Batch:
    data: _Tensor
    pts_seconds: _Tensor
    duration_seconds: _Tensor


@dataclass
class FakeTorchcodec:
    """Knobs and records of one installed fake."""

    cuda: bool = True
    ffmpeg: bool = True
    open_error: str | None = None  # the RuntimeError opening raises
    decode_error_after: int | None = None  # frames returned before decoding raises RuntimeError
    last_frame_duration: bool = True  # False: the stream ends at the last pts (no duration known)
    size_override: tuple[int, int] | None = None  # metadata (width, height) that disagrees with PyAV
    cpu_fallback: bool = False
    calls: list[int] = field(default_factory=list)  # frames per get_frames_* call
    devices: list[str] = field(default_factory=list)

    def decoder_class(self) -> type:
        fake = self

        class VideoDecoder:
            def __init__(self, source: str, *, device: str, seek_mode: str, dimension_order: str) -> None:
                assert seek_mode == "exact"
                assert dimension_order == "NHWC"
                if fake.open_error is not None:
                    raise RuntimeError(fake.open_error)
                fake.devices.append(device)
                self._path = source
                with av.open(source) as container:
                    stream = container.streams.video[0]
                    assert stream.time_base is not None
                    self._tb = stream.time_base
                    self._pts = sorted({p.pts for p in container.demux(stream) if p.size and p.pts is not None})
                with av.open(source) as container:
                    rgb = frame_to_rgb(next(container.decode(container.streams.video[0])))
                seconds = [self._seconds(p) for p in self._pts]
                step = self._pts[-1] - self._pts[-2] if len(self._pts) > 1 else 1
                end = self._seconds(self._pts[-1] + step) if fake.last_frame_duration else seconds[-1]
                width, height = fake.size_override or (rgb.shape[1], rgb.shape[0])
                self.metadata = types.SimpleNamespace(
                    width=width,
                    height=height,
                    average_fps=len(seconds) / (end - seconds[0]) if end > seconds[0] else None,
                    begin_stream_seconds=seconds[0],
                    end_stream_seconds=end,
                    num_frames=len(seconds),
                )
                self._seconds_list = seconds
                self.cpu_fallback = fake.cpu_fallback
                self._returned = 0

            def _seconds(self, pts: int) -> float:
                return float(pts) * (self._tb.numerator / self._tb.denominator)

            def __len__(self) -> int:
                return len(self._pts)

            def get_frames_played_at(self, seconds: list[float]) -> _Batch:
                meta = self.metadata
                indices = []
                for t in seconds:
                    if not meta.begin_stream_seconds <= t < meta.end_stream_seconds:
                        raise IndexError(f"Invalid pts in seconds: {t}")
                    indices.append(int(np.searchsorted(self._seconds_list, t, "right")) - 1)
                return self.get_frames_at(indices)

            def get_frames_at(self, indices: list[int]) -> _Batch:
                fake.calls.append(len(indices))
                if fake.decode_error_after is not None and self._returned + len(indices) > fake.decode_error_after:
                    raise RuntimeError("Invalid data found when processing input")
                self._returned += len(indices)
                wanted = {self._pts[i] for i in indices}
                images: dict[int, np.ndarray] = {}
                with av.open(self._path) as container:
                    for frame in container.decode(container.streams.video[0]):
                        if frame.pts in wanted:
                            images[frame.pts] = frame_to_rgb(frame)
                pts = [self._pts[i] for i in indices]
                return _Batch(
                    data=_Tensor(np.stack([images[p] for p in pts])),
                    pts_seconds=_Tensor(np.array([self._seconds(p) for p in pts], np.float64)),
                    duration_seconds=_Tensor(np.zeros(len(pts))),
                )

        return VideoDecoder


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeTorchcodec | None = None) -> FakeTorchcodec:
    """Put the fake torchcodec, and a torch whose CUDA is ``fake.cuda``, in ``sys.modules``."""
    import models.video_decode

    fake = fake or FakeTorchcodec()
    package = types.ModuleType("torchcodec")
    package.__spec__ = importlib.machinery.ModuleSpec("torchcodec", None, is_package=True)
    package.__path__ = []  # type: ignore[attr-defined]
    package.ffmpeg_major_version = 8 if fake.ffmpeg else None  # type: ignore[attr-defined]
    decoders = types.ModuleType("torchcodec.decoders")
    decoders.VideoDecoder = fake.decoder_class()  # type: ignore[attr-defined]
    package.decoders = decoders  # type: ignore[attr-defined]
    torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: fake.cuda))
    monkeypatch.setitem(sys.modules, "torchcodec", package)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", decoders)
    monkeypatch.setitem(sys.modules, "torch", torch)
    models.video_decode._unavailable.cache_clear()  # tests clear it again afterwards (see reset_probe)
    return fake


def uninstall_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import torchcodec`` fail, as where it is not installed."""
    import models.video_decode

    monkeypatch.setitem(sys.modules, "torchcodec", None)
    models.video_decode._unavailable.cache_clear()


def reset_probe() -> None:
    """Forget the cached availability probe and the once-only log lines."""
    import models.video_decode
    import service.pipeline.decoders

    models.video_decode._unavailable.cache_clear()
    service.pipeline.decoders._logged.clear()
