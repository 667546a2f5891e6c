"""Optional video decoding through torchcodec: NVDEC on ``device="cuda"``, FFmpeg on ``"cpu"``.

torchcodec (and torch under it) is optional: nothing is imported until availability is checked or
a decoder is opened, so ``--decoder auto`` costs nothing where it is not installed.

Frames come back as host (H, W, 3) uint8 RGB arrays, upright (torchcodec applies the display
rotation), so the rest of the pipeline is unchanged. That forgoes NVDEC's best case, frames that
stay on the GPU, but takes the decoding off the CPU cores; the copy back is one per chunk.

Selection is torchcodec's "played at" rule in exact seek mode: the frame whose display interval
[pts, next pts) holds the time, i.e. the last frame with pts <= t, as the PyAV exact sampler keeps.
torchcodec refuses times outside [first pts, end of the last frame); here a time before the first
frame gets the first frame and one at or past the end the last frame, as in the PyAV sampler.

Pixels differ from FFmpeg's CPU conversion in the low bits (NVDEC converts YUV to RGB in its own
kernels; torchcodec: "hardware decoding is intrinsically a bit inaccurate"): compare with a
tolerance, and detections, not pixels.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models.errors import DeviceUnavailableError, MissingDependencyError, ModelError
from models.types import RGBImage

if TYPE_CHECKING:
    from numpy.typing import NDArray

SeekMode = Literal["exact", "approximate"]

# A chunk is one torchcodec call: its frames sit on the device and then on the host together.
# 64 MiB is 10 1080p frames or 2 4K ones; the frame cap keeps small videos from asking for
# hundreds at once, which would only delay the first frame.
MAX_CHUNK_BYTES = 64 * 1024**2
MAX_CHUNK_FRAMES = 16


class VideoDecodeError(Exception):
    """torchcodec could not open the video or decode a frame of it."""


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """One decoded frame in host memory.

    Attributes:
        image: (H, W, 3) uint8 RGB, upright.
        pts_s: presentation time in stream seconds (pts * time base, not from the first frame).
        index: display-order index. torchcodec reports none for frames asked for by time, so
            those are derived from ``pts_s`` and the stream's average rate (``index_from_pts``):
            exact at a constant frame rate, an estimate otherwise. Frames asked for by index
            (before the first frame, past the last) carry that index.
    """

    image: RGBImage
    pts_s: float
    index: int


def frames_per_chunk(
    width: int, height: int, *, max_bytes: int = MAX_CHUNK_BYTES, max_frames: int = MAX_CHUNK_FRAMES
) -> int:
    """How many (height, width, 3) uint8 frames one call may return: at least 1, whatever the size."""
    frame_bytes = max(1, width) * max(1, height) * 3
    return max(1, min(max_frames, max_bytes // frame_bytes))


def chunked(times_s: Sequence[float], size: int) -> Iterator[Sequence[float]]:
    """``times_s`` in consecutive slices of at most ``size``, in order."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(times_s), size):
        yield times_s[start : start + size]


def index_from_pts(pts_s: float, *, begin_s: float, average_fps: float, num_frames: int) -> int:
    """Display-order index of the frame at ``pts_s``, from the average frame rate, within [0, num_frames).

    Exact at a constant frame rate (the distance to the first frame is a whole number of frame
    intervals); at a variable one it is the frame a constant rate would put there.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not (math.isfinite(average_fps) and average_fps > 0 and math.isfinite(pts_s)):
        return 0
    return min(num_frames - 1, max(0, round((pts_s - begin_s) * average_fps)))


def _is_cuda(device: str) -> bool:
    return device == "cuda" or device.startswith("cuda:")


def _check_device_name(device: str) -> None:
    if device != "cpu" and not _is_cuda(device):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


@functools.cache
def _unavailable(cuda: bool) -> tuple[type[ModelError], str] | None:
    """Why torchcodec cannot decode here (on CUDA when ``cuda``), or None; probed once per process.

    The reason is cached, not an exception: raising one instance again and again would grow its traceback.
    """
    if importlib.util.find_spec("torchcodec") is None:  # no import: where it is absent this is free
        return MissingDependencyError, "the GPU decoder needs torchcodec (pip install torchcodec)"
    try:
        import torch
        import torchcodec
    except Exception as exc:  # a wheel built for another torch or CUDA fails here, with OSError or RuntimeError
        return MissingDependencyError, f"torchcodec is installed but does not load ({type(exc).__name__}: {exc})"
    # torchcodec imports without FFmpeg (its image decoders need none) and says so here.
    if getattr(torchcodec, "ffmpeg_major_version", -1) is None:
        return MissingDependencyError, "torchcodec finds no FFmpeg libraries (it does not bundle them: install FFmpeg)"
    if cuda and not torch.cuda.is_available():
        return DeviceUnavailableError, "the GPU decoder needs a CUDA device; torch sees none"
    return None


def check_decoder(device: str = "cuda") -> None:
    """Raise MissingDependencyError (torchcodec or FFmpeg missing) or DeviceUnavailableError (no CUDA).

    A torchcodec built without CUDA passes this check and fails when a decoder is opened
    (VideoDecodeError): only opening one tells.
    """
    _check_device_name(device)
    reason = _unavailable(_is_cuda(device))
    if reason is not None:
        error, message = reason
        raise error(message)


def decoder_available(device: str = "cuda") -> bool:
    """Whether ``check_decoder(device)`` passes."""
    try:
        check_decoder(device)
    except ModelError:
        return False
    return True


class VideoDecoder:
    """One video opened with torchcodec; frames played at given times, in bounded chunks.

    Args:
        path: a local video file.
        device: ``"cuda"`` (or ``"cuda:N"``) decodes with NVDEC, ``"cpu"`` with FFmpeg.
        seek_mode: ``"exact"`` scans the file's packets once on opening (no decoding) so that
            every frame is found by its pts; ``"approximate"`` trusts the header's frame rate.
        max_chunk_bytes: host memory one chunk of frames may take.
        max_chunk_frames: frames one chunk may hold.

    Raises:
        MissingDependencyError, DeviceUnavailableError: as ``check_decoder``.
        VideoDecodeError: torchcodec cannot open the file (or has no CUDA support).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cuda",
        seek_mode: SeekMode = "exact",
        max_chunk_bytes: int = MAX_CHUNK_BYTES,
        max_chunk_frames: int = MAX_CHUNK_FRAMES,
    ) -> None:
        check_decoder(device)
        from torchcodec.decoders import VideoDecoder as TorchcodecDecoder

        self.path = str(path)
        self.device = device
        try:
            # NHWC: the layout FFmpeg and NVDEC produce, and the one numpy wants; NCHW would be a
            # strided view that costs a copy on the host.
            self._decoder: Any = TorchcodecDecoder(
                self.path, device=device, seek_mode=seek_mode, dimension_order="NHWC"
            )
        except (RuntimeError, ValueError) as exc:
            raise VideoDecodeError(f"torchcodec cannot open it on {device}: {exc}") from exc
        meta = self._decoder.metadata
        self.num_frames = len(self._decoder)
        if self.num_frames < 1:
            raise VideoDecodeError("torchcodec finds no frames")
        self.width = int(meta.width or 0)
        self.height = int(meta.height or 0)
        self.average_fps = float(meta.average_fps or 0.0)
        self.begin_s = float(meta.begin_stream_seconds or 0.0)
        end = meta.end_stream_seconds
        self.end_s = math.inf if end is None else float(end)
        self._chunk_frames = frames_per_chunk(
            self.width, self.height, max_bytes=max_chunk_bytes, max_frames=max_chunk_frames
        )

    @property
    def cpu_fallback(self) -> bool:
        """Whether torchcodec decodes on the CPU although CUDA was asked for (a codec NVDEC lacks).

        Known only after the first frame with some backends; False where torchcodec cannot tell.
        """
        if not _is_cuda(self.device):
            return False
        return bool(getattr(self._decoder, "cpu_fallback", False))

    def frames_played_at(self, times_s: Sequence[float]) -> Iterator[DecodedFrame]:
        """The frame played at each time (stream seconds), in the order asked, chunk by chunk.

        At most one chunk is decoded ahead of the frame being yielded. Frames of a chunk share
        one host buffer, freed when the last of them is dropped.
        """
        for chunk in chunked(times_s, self._chunk_frames):
            yield from self._decode_chunk(chunk)

    def _decode_chunk(self, times_s: Sequence[float]) -> list[DecodedFrame]:
        by_time: list[int] = []  # positions in times_s asked for by time
        by_index: dict[int, int] = {}  # position -> frame index (before the first frame, past the last)
        for position, t in enumerate(times_s):
            if not math.isfinite(t):
                raise ValueError(f"times must be finite, got {t}")
            if t < self.begin_s:
                by_index[position] = 0
            elif t >= self.end_s:
                by_index[position] = self.num_frames - 1
            else:
                by_time.append(position)
        frames: dict[int, DecodedFrame] = {}
        try:
            if by_time:
                batch = self._decoder.get_frames_played_at([float(times_s[p]) for p in by_time])
                images, pts = _to_host(batch)
                for p, image, pts_s in zip(by_time, images, pts, strict=True):
                    index = index_from_pts(
                        pts_s, begin_s=self.begin_s, average_fps=self.average_fps, num_frames=self.num_frames
                    )
                    frames[p] = DecodedFrame(image, pts_s, index)
            if by_index:
                wanted = sorted(set(by_index.values()))
                batch = self._decoder.get_frames_at(wanted)
                images, pts = _to_host(batch)
                found = {i: DecodedFrame(image, pts_s, i) for i, image, pts_s in zip(wanted, images, pts, strict=True)}
                frames.update((p, found[i]) for p, i in by_index.items())
        except (RuntimeError, ValueError, IndexError) as exc:  # torchcodec's errors for undecodable data
            raise VideoDecodeError(f"decoding failed: {exc}") from exc
        return [frames[p] for p in range(len(times_s))]

    def close(self) -> None:
        """Drop the decoder: torchcodec frees it (and returns NVDEC sessions to its cache) when unreferenced."""
        self._decoder = None


def _to_host(batch: Any) -> tuple[list[RGBImage], list[float]]:
    """A torchcodec FrameBatch (N, H, W, 3 uint8 on any device) as host frames and pts seconds."""
    data: NDArray[np.uint8] = np.asarray(batch.data.cpu().numpy(), np.uint8)  # one device-to-host copy
    if data.ndim != 4 or data.shape[-1] != 3:
        raise VideoDecodeError(f"expected (N, H, W, 3) frames, got shape {data.shape}")
    pts = [float(t) for t in batch.pts_seconds.tolist()]
    # Slices of a C-contiguous (N, H, W, 3) array are contiguous already; a rotated batch may not be.
    return [np.ascontiguousarray(frame) for frame in data], pts
