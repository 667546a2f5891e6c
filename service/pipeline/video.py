"""Video frame sampling with PyAV: exact (by presentation time) or key frames only.

Exact mode returns, for each target time, the frame displayed at that time, bit-identical to
decoding every frame. It gets there with less work: one demux pass (no decoding) indexes every
packet's pts and the key frames; then, for each wanted frame, it seeks to the key frame before it
only when that key frame lies beyond the current decode position, and decodes forward from there.
Frames between targets that no target needs are never decoded, and only kept frames are converted
to RGB. Key-frame mode decodes only the wanted key frames, each on its own.

Memory does not grow with the video: the index is a few int64 arrays (8 bytes per frame), and at
most one decoded frame is held.

Only plain files in known video containers are opened: FFmpeg would otherwise demux anything it
can probe (text through its tty demuxer, HLS playlists that make it read the files they list).

With ``decoder`` nvdec (or auto, where torchcodec and CUDA are present), exact sampling decodes
with torchcodec on the GPU instead (``models.video_decode``). Opening, indexing, limits and the
frame plan stay PyAV's, so the same frames are chosen and carry the same index and timestamp;
only the pixels come from NVDEC (equal to PyAV's within colour-conversion rounding).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import av.error
import numpy as np
from av.container import InputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from numpy.typing import NDArray

from models.errors import ModelError
from models.types import RGBImage
from models.video_decode import VideoDecodeError
from models.video_decode import VideoDecoder as GpuVideoDecoder
from service.errors import ErrorCode, PartialMediaError, PreannotateError, from_model_error
from service.pipeline.decoders import GPU_DEVICE, log_once, use_gpu_decoder
from service.pipeline.frames import Frame, FrameInfo, MediaKind, SlotMeta
from service.pipeline.options import DecoderChoice, MediaLimits, SamplingMode, SamplingOptions, usable_cpus
from service.pipeline.sampling import check_start, frames_past_end, select_frames
from service.pipeline.segments import decode_in_parallel, split_at_keyframes
from service.pipeline.yuv import frame_to_rgb

__all__ = ["VideoIndex", "VideoReader", "build_index", "find_truncation", "frame_to_rgb"]

log = logging.getLogger(__name__)

_MAX_CORRUPT_PACKETS = 100
# Segment-parallel decoding (``segments``): segments of at least this many frames, each worker at most
# this many (detector-size) frames ahead of the reader, at most this many workers.
_MIN_SEGMENT_FRAMES = 30
_SEGMENT_QUEUE_FRAMES = 64
_MAX_DECODE_WORKERS = 4

# FFmpeg demuxers we let open input (one name of each is enough: FFmpeg matches any of a demuxer's
# names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"): MP4/MOV/3GP, Matroska/WebM, AVI, MPEG-TS, MPEG-PS, FLV,
# ASF/WMV, Ogg. Everything else is refused before it parses a byte.
_VIDEO_DEMUXERS = ("mov", "mp4", "matroska", "webm", "avi", "mpegts", "mpeg", "flv", "asf", "ogg")
_OPEN_OPTIONS = {
    "format_whitelist": ",".join(_VIDEO_DEMUXERS),
    # Plain files only: no URLs, no concat:/subfile: tricks in a file name, no nested network reads.
    "protocol_whitelist": "file",
}

# Containers whose header declares the video's length (a duration, a frame count). The others
# derive it from the packets themselves, or guess it from the bit rate: neither tells a cut file
# from a short one, so a stream that ends early is found only in these.
_DECLARES_LENGTH = frozenset({"mov", "mp4", "matroska", "webm", "avi", "asf"})

# Containers that store no presentation times: libavformat numbers the packets in decode order, so
# with B-frames the decoded frames (in display order) carry shuffled pts.
_PTS_IN_DECODE_ORDER = frozenset({"avi"})


@dataclass(frozen=True, slots=True)
class VideoIndex:
    """Every frame's pts in display order, and the key frames', from one demux pass.

    Attributes:
        pts: (n,) int64 sorted presentation timestamps, in ``time_base`` units.
        keyframe_pts: (k,) int64 sorted pts of the key frames.
        keyframe_dts: (k,) int64 decode timestamps of the same key frames (their pts when unknown).
        time_base: seconds per pts unit.
        end_pts: where the last frame stops being shown (its pts plus its duration, when the
            container gives one), in ``time_base`` units.
    """

    pts: NDArray[np.int64]
    keyframe_pts: NDArray[np.int64]
    keyframe_dts: NDArray[np.int64]
    time_base: Fraction
    end_pts: int = 0

    def times_s(self, pts: NDArray[np.int64]) -> NDArray[np.float64]:
        """Seconds from the first frame."""
        return np.asarray((pts - self.pts[0]) * float(self.time_base), np.float64)

    def frame_index(self, pts: int) -> int:
        """Display-order index of the frame with this pts."""
        return int(np.searchsorted(self.pts, pts, "left"))

    def played_at_times(self, pts: NDArray[np.int64]) -> list[float]:
        """For each frame (by pts), a time in stream seconds inside its display interval [pts, next pts).

        The middle of the interval: asking at the pts itself would depend on two decoders rounding
        pts * time_base alike, the middle is half a frame from either edge. The last frame gets half
        the interval before it (``models.video_decode`` serves a time past the stream's end, as
        torchcodec sees it, as the last frame).
        """
        if len(self.pts) == 0:
            return []
        position = np.searchsorted(self.pts, pts, "left")
        last_step = int(self.pts[-1] - self.pts[-2]) if len(self.pts) > 1 else 0
        following = np.append(self.pts[1:], self.pts[-1] + last_step)
        nxt = following[np.minimum(position, len(self.pts) - 1)]
        middle = (pts.astype(np.float64) + nxt.astype(np.float64)) / 2
        return [float(t) for t in middle * float(self.time_base)]


@dataclass(slots=True)
class SamplingStats:
    """Work done, for benchmarks and logs: decoded frames per sampled frame is the key number."""

    decoded_frames: int = 0
    sampled_frames: int = 0
    seeks: int = 0
    corrupt_packets: int = 0


@dataclass(frozen=True, slots=True)
class Truncation:
    """A video stream that ends before the length its container declares: a partial upload, a cut copy.

    Attributes:
        end_s: where the stream's frames end, seconds from its first frame.
        declared_end_s: where its container says they end, same clock.
        missing_frames: about how many frames are gone: the missing time over the frame interval.
        frame_interval_s: the stream's frame interval, which spaces the missing frames.
    """

    end_s: float
    declared_end_s: float
    missing_frames: int
    frame_interval_s: float


def find_truncation(container: InputContainer, stream: VideoStream, index: VideoIndex) -> Truncation | None:
    """The stream's shortfall against its declared length, or None (intact, or nothing declared).

    A gap of up to one and a half frame intervals is rounding, not loss. A length the container
    declares for all its streams (Matroska's) counts only if no other stream reaches it either:
    a video shorter than its audio is no truncated file.
    """
    if not set(container.format.name.split(",")) & _DECLARES_LENGTH or len(index.pts) < 2:
        return None
    first_pts, time_base = int(index.pts[0]), index.time_base
    end_s = float((max(index.end_pts, int(index.pts[-1])) - first_pts) * time_base)
    rate = stream.average_rate
    interval_s = 1 / float(rate) if rate else float(index.times_s(index.pts)[-1]) / (len(index.pts) - 1)
    declared = _declared_end_s(container, stream, interval_s)
    if declared is None:
        return None
    declared_end_s, own = declared[0] - float(first_pts * time_base), declared[1]
    tolerance_s = 1.5 * interval_s
    if declared_end_s - end_s <= tolerance_s:
        return None
    if not own and _another_stream_reaches(container, stream, declared[0] - tolerance_s):
        return None
    # Counted by time, not as the declared frame count less the indexed one: a cut between a
    # reference frame and the B-frames shown before it leaves holes before the end, not after.
    missing = max(1, round((declared_end_s - end_s) / interval_s))
    return Truncation(end_s, declared_end_s, missing, interval_s)


def _declared_end_s(container: InputContainer, stream: VideoStream, interval_s: float) -> tuple[float, bool] | None:
    """Where the container says the video ends (stream seconds), and whether it said so for this stream alone.

    The stream's own duration, else its frame count (AVI's header has one), else the container's duration.
    """
    time_base = Fraction(stream.time_base) if stream.time_base else None
    start = stream.start_time or 0
    if stream.duration and time_base is not None:
        return float((start + stream.duration) * time_base), True
    if stream.frames and time_base is not None:
        return float(start * time_base) + stream.frames * interval_s, True
    if container.duration:
        return ((container.start_time or 0) + container.duration) / av.time_base, False
    return None


def _another_stream_reaches(container: InputContainer, video: VideoStream, time_s: float) -> bool:
    """Whether a stream other than ``video`` has a packet lasting until ``time_s`` (stream seconds)."""
    others = [s for s in container.streams if s.index != video.index]
    if not others:
        return False
    container.seek(0)
    for packet in container.demux(*others):
        end = None if packet.pts is None else packet.pts + (packet.duration or 0)
        if end is not None and packet.time_base is not None and float(end * packet.time_base) >= time_s:
            return True
    return False


def build_index(container: InputContainer, stream: VideoStream) -> VideoIndex:
    """Demux (without decoding) every packet of ``stream`` and index pts and key frames."""
    pts: list[int] = []
    end_pts = end_before_last = 0
    keyframes: dict[int, int] = {}
    no_pts = 0
    last_corrupt = False
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the flush packet at the end
        ts = packet.pts
        if ts is None:
            no_pts += 1
            continue
        pts.append(ts)
        end_before_last, end_pts = end_pts, max(end_pts, ts + (packet.duration or 0))
        last_corrupt = packet.is_corrupt
        if packet.is_keyframe:
            keyframes.setdefault(ts, ts if packet.dts is None else min(ts, packet.dts))
    if last_corrupt and len(pts) > 1:
        # A file cut mid-packet (a partial upload): the demuxer hands over the stump, flagged
        # corrupt. It is no frame of the video: leave it out of the plan and the frame count.
        keyframes.pop(pts.pop(), None)
        end_pts = end_before_last
    if no_pts:
        log.warning("%d packets without pts were not indexed", no_pts)
    if stream.time_base is None:
        raise ValueError("stream has no time base")
    keyframe_pts = sorted(keyframes)
    return VideoIndex(
        pts=np.unique(np.asarray(pts, np.int64)),
        keyframe_pts=np.asarray(keyframe_pts, np.int64),
        keyframe_dts=np.asarray([keyframes[ts] for ts in keyframe_pts], np.int64),
        time_base=Fraction(stream.time_base),
        end_pts=end_pts,
    )


class _Converted(NamedTuple):
    """A frame a segment worker converted already: its pixels and the source's display size."""

    image: RGBImage
    width_px: int
    height_px: int


class _Sampled(NamedTuple):
    """One planned frame: ``pts`` and ``frame`` are what was decoded for it (None: nothing).

    ``frame`` is a PyAV frame, or RGB pixels already (the GPU decoder's, a segment worker's).
    """

    wanted_pts: int
    pts: int | None
    frame: VideoFrame | RGBImage | _Converted | None


@dataclass(slots=True)
class _Decoder:
    """Forward decoding of a packet stream, with at most one frame of push-back."""

    stats: SamplingStats
    _frames: Generator[VideoFrame] | None = None
    _pending: VideoFrame | None = None
    position_pts: int | None = None

    def start(self, packets: Iterable[Packet[VideoStream]]) -> None:
        """Decode ``packets`` from here on (the first must be a key frame's, or the stream's start)."""
        if self._frames is not None:
            self._frames.close()
        self._frames = self._decode(packets)
        self._pending = None
        self.position_pts = None

    def _decode(self, packets: Iterable[Packet[VideoStream]]) -> Generator[VideoFrame]:
        for packet in packets:
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                self.stats.corrupt_packets += 1
                if self.stats.corrupt_packets > _MAX_CORRUPT_PACKETS:
                    raise
                continue
            for frame in frames:
                if isinstance(frame, VideoFrame) and frame.pts is not None:
                    yield frame

    def next(self) -> VideoFrame | None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        assert self._frames is not None, "start() first"
        frame = next(self._frames, None)
        if frame is not None:
            self.stats.decoded_frames += 1
            self.position_pts = frame.pts
        return frame

    def push_back(self, frame: VideoFrame) -> None:
        self._pending = frame

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()


class VideoReader:
    """A SlotReader over one video file (mp4, mov, mkv, webm, avi, ts, mpg, flv, wmv, ogg).

    Opening indexes the file (one demux pass, no decoding), decodes the first key frame to learn
    the display size and rotation, checks the limits and plans the frames. Iterating decodes; a
    slot whose planned frames did not all decode ends with CORRUPT_MEDIA after the frames that did.
    """

    def __init__(self, item: str, slot: str, path: Path, sampling: SamplingOptions, limits: MediaLimits) -> None:
        self._path = path
        self._sampling = sampling
        self._limits = limits
        self._parallel = False
        self.stats = SamplingStats()
        self._seek_by_dts = False
        self._gpu: GpuVideoDecoder | None = None
        self._container = _open(path, limits)
        try:
            self._stream = self._container.streams.video[0]
            if _decodes_every_frame(sampling, self._stream):
                # Frame threads as well as slice threads (most H.264/HEVC files have no slices), but only
                # for a straight run: a seek flushes them, which made sparse sampling slower.
                self._stream.thread_type = "AUTO"
            if self._stream.codec_context is None:  # PyAV has no decoder for it (an SVG, say)
                raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{path}: no decoder for its video codec")
            try:
                self._index = build_index(self._container, self._stream)
                if len(self._index.pts) == 0 or len(self._index.keyframe_pts) == 0:
                    raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: no decodable video frames")
                width, height = self._probe_display_size()
            except (av.error.FFmpegError, ValueError) as exc:
                raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: cannot be read as video ({exc})") from exc
            # Display order is output order there, not pts order: see _iter_in_output_order.
            self._pts_in_decode_order = (
                self._container.format.name in _PTS_IN_DECODE_ORDER and self._stream.codec_context.has_b_frames
            )
            self.meta = self._plan(item, slot, width, height, limits)
            if use_gpu_decoder(sampling):
                if self._pts_in_decode_order:  # torchcodec would take the decode-order numbers for pts too
                    log.info("%s: AVI with B-frames stores no presentation times; decoding with PyAV", path)
                else:
                    self._gpu = self._open_gpu(width, height)
            # Every frame, scaled for a detector (small frames: a worker may run a segment ahead).
            self._parallel = (
                self._gpu is None
                and not self._pts_in_decode_order
                and sampling.detector_size_px is not None
                and _decodes_every_frame(sampling, self._stream)
                and _decode_workers() > 1
            )
        except BaseException:
            self._container.close()
            raise

    @property
    def decoder(self) -> str:
        """The decoder that iterating uses: ``nvdec`` (torchcodec on CUDA) or ``pyav``."""
        return "pyav" if self._gpu is None else "nvdec"

    def _open_gpu(self, width: int, height: int) -> GpuVideoDecoder | None:
        """torchcodec on CUDA for this file; None (PyAV) in auto mode when it cannot read it."""
        nvdec = self._sampling.decoder == DecoderChoice.NVDEC
        try:
            decoder = GpuVideoDecoder(self._path, device=GPU_DEVICE)
        except ModelError as exc:
            if nvdec:
                raise PreannotateError(from_model_error(exc).code, f"{self._path}: decoder nvdec: {exc}") from None
            log_once("decoding videos with PyAV: %s", exc)
            return None
        except VideoDecodeError as exc:
            if nvdec:
                raise PreannotateError(
                    ErrorCode.UNSUPPORTED_MEDIA, f"{self._path}: decoder nvdec: {exc} (--decoder pyav or auto reads it)"
                ) from None
            log.info("%s: decoding with PyAV: %s", self._path, exc)
            return None
        # Both honour the display rotation; if they disagree on the upright size, PyAV's is the one
        # the slot promised (meta), and NVDEC frames would not match it.
        if (decoder.width, decoder.height) != (width, height):
            decoder.close()
            message = f"the GPU decoder sees {decoder.width}x{decoder.height} frames, PyAV {width}x{height}"
            if nvdec:
                raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{self._path}: decoder nvdec: {message}")
            log.info("%s: decoding with PyAV: %s", self._path, message)
            return None
        if decoder.cpu_fallback:
            log.info("%s: NVDEC cannot decode this stream; torchcodec decodes it on the CPU", self._path)
        return decoder

    def _probe_display_size(self) -> tuple[int, int]:
        """Decode the first key frame alone (it also proves the stream decodes)."""
        first = self._decode_keyframe(int(self._index.keyframe_pts[0]))
        if first is None:
            raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{self._path}: the first key frame does not decode")
        self.stats = SamplingStats()  # probing is not sampling work
        rotated = (first.rotation // 90) % 2 == 1
        return (first.height, first.width) if rotated else (first.width, first.height)

    def _plan(self, item: str, slot: str, width: int, height: int, limits: MediaLimits) -> SlotMeta:
        index = self._index
        times = index.times_s(index.pts)
        duration_s = float(times[-1])
        if width * height > limits.max_pixels:
            raise PreannotateError(
                ErrorCode.DIMENSIONS_TOO_LARGE,
                f"{self._path}: {width}x{height} frames exceed the limit of {limits.max_pixels} pixels",
            )
        if duration_s > limits.max_duration_s:
            raise PreannotateError(
                ErrorCode.VIDEO_TOO_LONG,
                f"{self._path}: {duration_s:.0f} s is longer than the limit of {limits.max_duration_s:.0f} s",
            )
        check_start(times, self._sampling, str(self._path))
        if self._sampling.mode is SamplingMode.KEYFRAMES:
            chosen = select_frames(index.times_s(index.keyframe_pts), self._sampling)
            self._wanted = index.keyframe_pts[chosen]
        else:
            self._wanted = index.pts[select_frames(times, self._sampling)]
        limits.check_frames(len(self._wanted), str(self._path))
        # The plan covers the frames the file has; a cut file promised more, and says so at the end.
        self.truncation = find_truncation(self._container, self._stream, index)
        self.expected_frames = len(self._wanted) + self._frames_past_end()
        if self._sampling.max_frames is not None:
            self.expected_frames = min(self.expected_frames, max(len(self._wanted), self._sampling.max_frames))
        rate = self._stream.average_rate
        return SlotMeta(
            item=item,
            slot=slot,
            media=MediaKind.VIDEO,
            source_files=(str(self._path),),
            width=width,
            height=height,
            fps=float(rate) if rate else None,
            frame_count=len(index.pts),
            planned_frames=len(self._wanted),
            duration_s=duration_s,
        )

    def _frames_past_end(self) -> int:
        """How many more frames the plan would hold had the stream gone on to its declared length."""
        cut = self.truncation
        if cut is None:
            return 0
        index = self._index
        if self._sampling.mode is not SamplingMode.KEYFRAMES:
            return frames_past_end(
                float(index.times_s(index.pts)[-1]), cut.frame_interval_s, cut.missing_frames, self._sampling
            )
        # Key frames: the missing part's, spaced as those seen were.
        key_times = index.times_s(index.keyframe_pts)
        step_s = (
            float(key_times[-1] - key_times[0]) / (len(key_times) - 1) if len(key_times) > 1 else cut.declared_end_s
        )
        count = math.floor((cut.declared_end_s - cut.frame_interval_s - float(key_times[-1])) / step_s + 1e-6)
        return frames_past_end(float(key_times[-1]), step_s, count, self._sampling)

    def _shortfall(self, produced: int, stand_ins: int) -> str | None:
        """What the slot's frames lack, in one line that adds up; None when nothing.

        ``produced`` frames were delivered of ``expected_frames``; ``stand_ins`` of them are not the
        planned frame but a neighbour, labelled as itself (the frame shown before one that did not
        decode, which a player shows in its place; the frame a GPU decoder returned instead).
        """
        expected = self.expected_frames
        if produced >= expected and not stand_ins:
            return None
        counts = f"{expected - produced} of {expected} sampled frames could not be decoded ({produced} decoded"
        counts += f", {stand_ins} of them standing in for a planned frame that did not decode)" if stand_ins else ")"
        cut = self.truncation
        if cut is None:
            return f"{self._path}: {counts}"
        return (
            f"{self._path}: truncated: the video ends at {cut.end_s:.2f} s, its container declares "
            f"{cut.declared_end_s:.2f} s; {counts}"
        )

    def __iter__(self) -> Iterator[Frame]:
        if self._sampling.mode is SamplingMode.KEYFRAMES:
            sampled = self._iter_keyframes()
        elif self._gpu is not None:
            sampled = self._iter_gpu(self._gpu)
        elif self._pts_in_decode_order:
            sampled = self._iter_in_output_order()
        elif self._parallel:
            sampled = self._iter_segments()
        else:
            sampled = self._iter_exact()
        stand_ins = 0
        last_pts: int | None = None
        try:
            for wanted, pts, frame in sampled:
                # A stand-in (the frame before a lost one) is kept, but never twice.
                if frame is None or pts is None or (last_pts is not None and pts <= last_pts):
                    continue
                stand_ins += pts != wanted
                last_pts = pts
                self.stats.sampled_frames += 1
                yield self._to_frame(frame, pts)
        except (av.error.FFmpegError, VideoDecodeError) as exc:
            raise PartialMediaError(
                f"{self._path}: decoding failed after {self.stats.sampled_frames} of {self.expected_frames} "
                f"sampled frames ({exc})"
            ) from exc
        # The frames that decoded were delivered; the slot still fails, so the run exits non-zero.
        shortfall = self._shortfall(self.stats.sampled_frames, stand_ins)
        if shortfall is not None:
            raise PartialMediaError(shortfall)
        if self.stats.corrupt_packets:
            raise PartialMediaError(
                f"{self._path}: {self.stats.corrupt_packets} corrupt packets; sampled frames may show decoding errors"
            )

    def _iter_exact(self) -> Iterator[_Sampled]:
        index = self._index
        decoder = _Decoder(self.stats)
        started = sequential = False
        try:
            for wanted in self._wanted.tolist():
                k = max(0, int(np.searchsorted(index.keyframe_pts, wanted, "right")) - 1)
                keyframe = int(index.keyframe_pts[k])
                position = decoder.position_pts
                # Seek only past frames no target needs: when frames lie between the decode position
                # and the wanted frame's key frame. Otherwise decoding forward is the shortest path
                # (and sampling every frame never seeks: a seek flushes the decoder's frame threads).
                far = position is not None and self._worth_seeking(position, keyframe)
                if not sequential and (not started or far):
                    packets = self._seek_keyframe(keyframe)
                    if packets is None:
                        # No seek reaches that key frame (the demuxer disagrees with our index):
                        # decode everything from the start, slow but right, and never seek again,
                        # so missing key frames cannot make sampling quadratic.
                        log.warning(
                            "%s: cannot seek to the key frame at pts %d; decoding from the start", self._path, keyframe
                        )
                        packets = self._from_start()
                        sequential = True
                    decoder.start(packets)
                    started = True
                frame = self._decode_until(decoder, wanted)
                yield _Sampled(wanted, None if frame is None else frame.pts, frame)
        finally:
            decoder.close()

    def _iter_segments(self) -> Iterator[_Sampled]:
        """Exact sampling of every frame, key-frame segments decoded and converted on parallel threads.

        Each worker is a twin of this reader (its own container, this reader's index) running
        ``_iter_exact`` over its segments' frames, so the frames are those ``_iter_exact`` yields.
        """
        segments = split_at_keyframes(self._wanted, self._index.keyframe_pts, _MIN_SEGMENT_FRAMES)
        twins: list[VideoReader] = []

        def open_worker() -> _SegmentWorker:
            twin = self._twin()
            twins.append(twin)
            return _SegmentWorker(twin)

        try:
            yield from decode_in_parallel(segments, _decode_workers(), open_worker, queue_frames=_SEGMENT_QUEUE_FRAMES)
        finally:
            for twin in twins:  # the workers are joined: their counts are final
                self.stats.decoded_frames += twin.stats.decoded_frames
                self.stats.seeks += twin.stats.seeks
                self.stats.corrupt_packets += twin.stats.corrupt_packets

    def _twin(self) -> VideoReader:
        """A reader of the same file with its own container and this one's index and plan (slice threads)."""
        twin = object.__new__(VideoReader)
        twin._path, twin._sampling, twin._limits = self._path, self._sampling, self._limits
        twin.stats = SamplingStats()
        twin._seek_by_dts = self._seek_by_dts
        twin._gpu = None
        twin._parallel = False
        twin._container = _open(self._path, self._limits)
        twin._stream = twin._container.streams.video[0]
        twin._index, twin._wanted, twin.meta = self._index, self._wanted, self.meta
        twin._pts_in_decode_order = False
        return twin

    def _worth_seeking(self, position_pts: int, keyframe_pts: int) -> bool:
        """Whether any frame lies between the decode position and the key frame (in display order)."""
        index = self._index
        return index.frame_index(keyframe_pts) - index.frame_index(position_pts) > 1

    def _iter_gpu(self, decoder: GpuVideoDecoder) -> Iterator[_Sampled]:
        """Exact sampling with torchcodec: each planned frame asked for by a time it is on screen.

        The plan (which pts) is the PyAV index's, as in ``_iter_exact``; torchcodec's pts of the frame
        it returns tells whether both agree (a frame they disagree on counts as lost). Decoded
        frames are not counted in ``stats``: torchcodec does not say how many it decoded.
        """
        time_base = self._index.time_base
        times = self._index.played_at_times(self._wanted)
        for wanted, decoded in zip(self._wanted.tolist(), decoder.frames_played_at(times), strict=True):
            # Back to integer pts: torchcodec reports pts * time_base as a double, a tiny fraction of a tick off.
            pts = round(Fraction(decoded.pts_s) / time_base) if math.isfinite(decoded.pts_s) else None
            yield _Sampled(wanted, pts, decoded.image)

    def _iter_in_output_order(self) -> Iterator[_Sampled]:
        """Exact sampling where decoded frames' pts are not display times (AVI with B-frames).

        Frames come out of the decoder in display order, so the i-th one out is the frame with
        the i-th smallest packet pts. That holds only counting from the stream's start: decode
        everything up to the last wanted frame, converting only the wanted ones.
        """
        positions = np.searchsorted(self._index.pts, self._wanted).tolist()
        decoder = _Decoder(self.stats)
        decoder.start(self._from_start())
        output = 0
        try:
            for wanted, position in zip(self._wanted.tolist(), positions, strict=True):
                found: VideoFrame | None = None
                while output <= position and (frame := decoder.next()) is not None:
                    if output == position:
                        found = frame
                    output += 1
                yield _Sampled(wanted, None if found is None else wanted, found)
        finally:
            decoder.close()

    def _decode_until(self, decoder: _Decoder, wanted: int) -> VideoFrame | None:
        """Decode forward to the frame with pts ``wanted`` (or the last one before it)."""
        previous: VideoFrame | None = None
        while (frame := decoder.next()) is not None:
            if frame.pts == wanted:
                return frame
            if frame.pts is not None and frame.pts > wanted:
                # The index promised a frame the decoder did not produce (a dropped or corrupt
                # packet): the frame on screen at that time is the one before.
                decoder.push_back(frame)
                if previous is None:
                    log.info("%s: no frame at pts %d", self._path, wanted)
                return previous
            previous = frame
        return previous

    def _iter_keyframes(self) -> Iterator[_Sampled]:
        for wanted in self._wanted.tolist():
            frame = self._decode_keyframe(wanted)
            yield _Sampled(wanted, None if frame is None else wanted, frame)

    def _decode_keyframe(self, pts: int) -> VideoFrame | None:
        """Seek to the key frame at ``pts`` and decode it on its own: no frame around it."""
        packets = self._seek_keyframe(pts)
        if packets is None:
            log.info("%s: key frame at pts %d not found", self._path, pts)
            return None
        packet = next(iter(packets))
        codec = self._stream.codec_context
        try:
            # Send the packet, then drain: the decoder's reorder delay would otherwise hold
            # the frame back until later packets arrive.
            frames = [*codec.decode(packet), *codec.decode(None)]
        except av.error.InvalidDataError:
            self.stats.corrupt_packets += 1
            frames = []
        codec.flush_buffers()
        self.stats.decoded_frames += len(frames)
        return next((f for f in frames if isinstance(f, VideoFrame)), None)

    def _seek_keyframe(self, keyframe_pts: int) -> Iterator[Packet[VideoStream]] | None:
        """The stream's packets from the key frame at ``keyframe_pts`` on, or None if no seek reaches it.

        Demuxers land on or before the key frame asked for by its pts (mov, matroska): the packets
        before it are skipped undecoded. The MPEG-TS and MPEG-PS demuxers seek by decode time and
        land past a key frame whose pts is later than its dts (B-frames): then seek again by its
        dts (and by dts from then on), then from ever earlier key frames, down to the first.
        """
        for target in self._seek_targets(keyframe_pts):
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            self.stats.seeks += 1
            packets = self._container.demux(self._stream)
            for packet in packets:
                if packet.size == 0 or packet.pts is None or not packet.is_keyframe or packet.pts < keyframe_pts:
                    continue
                if packet.pts == keyframe_pts:
                    return itertools.chain((packet,), packets)
                break  # landed past it
            if target == keyframe_pts:
                self._seek_by_dts = True
        return None

    def _seek_targets(self, keyframe_pts: int) -> list[int]:
        index = self._index
        k = int(np.searchsorted(index.keyframe_pts, keyframe_pts))
        targets = [] if self._seek_by_dts else [keyframe_pts]
        back = 0
        while True:
            targets.append(int(index.keyframe_dts[max(0, k - back)]))
            if k - back <= 0:
                break
            back = max(1, 2 * back)
        return list(dict.fromkeys(targets))

    def _from_start(self) -> Iterator[Packet[VideoStream]]:
        self._container.seek(0)  # in av.time_base units: before the first packet of every stream
        self.stats.seeks += 1
        return iter(self._container.demux(self._stream))

    def _to_frame(self, frame: VideoFrame | RGBImage | _Converted, pts: int) -> Frame:
        # The image may be smaller than the source (scaled for the detector); the info keeps the source's size.
        if isinstance(frame, VideoFrame):
            image, width, height = _convert(frame, self._sampling.detector_size_px)
        elif isinstance(frame, _Converted):
            image, width, height = frame
        else:
            image = frame
            height, width = image.shape[:2]
        return Frame(
            info=FrameInfo(
                item=self.meta.item,
                slot=self.meta.slot,
                source=str(self._path),
                media=MediaKind.VIDEO,
                frame_index=self._index.frame_index(pts),
                timestamp_s=float((pts - int(self._index.pts[0])) * self._index.time_base),
                width=width,
                height=height,
            ),
            image=image,
        )

    def close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()
        self._container.close()


class _SegmentWorker:
    """A twin reader decoding segments for ``decode_in_parallel``, converting frames on its own thread."""

    def __init__(self, twin: VideoReader) -> None:
        self._twin = twin

    def decode(self, segment: NDArray[np.int64]) -> Iterator[_Sampled]:
        self._twin._wanted = segment
        fit_px = self._twin._sampling.detector_size_px
        for wanted, pts, frame in self._twin._iter_exact():
            converted = _Converted(*_convert(frame, fit_px)) if isinstance(frame, VideoFrame) else None
            yield _Sampled(wanted, pts, converted)

    def close(self) -> None:
        self._twin.close()


def _convert(frame: VideoFrame, fit_px: int | None) -> tuple[RGBImage, int, int]:
    """The frame's pixels (scaled to fit ``fit_px``, upright) and the source's display width and height."""
    rotated = (frame.rotation // 90) % 2 == 1
    width, height = (frame.height, frame.width) if rotated else (frame.width, frame.height)
    return frame_to_rgb(frame, fit_px), width, height


def _decode_workers() -> int:
    """Decoders for segment-parallel decoding: one per usable core, at most ``_MAX_DECODE_WORKERS``."""
    return min(_MAX_DECODE_WORKERS, usable_cpus())


def _decodes_every_frame(sampling: SamplingOptions, stream: VideoStream) -> bool:
    """Whether exact sampling wants every frame (fps 0, or at least the stream's rate): decoding never seeks."""
    if sampling.mode is not SamplingMode.EXACT:
        return False
    rate = stream.average_rate
    return sampling.fps == 0 or (rate is not None and rate > 0 and sampling.fps >= float(rate))


def _open(path: Path, limits: MediaLimits) -> InputContainer:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{path}: no such file") from None
    if size > limits.max_file_bytes:
        raise PreannotateError(
            ErrorCode.FILE_TOO_LARGE, f"{path}: {size} bytes is more than the limit of {limits.max_file_bytes}"
        )
    try:
        # "file:" so that a name like "concat:a|b" is a file name, not a protocol.
        container = av.open(f"file:{path}", mode="r", container_options=_OPEN_OPTIONS)
    except av.error.ArgumentError:
        # EINVAL: FFmpeg recognised the file, as a format not on the list (text, a playlist, an image).
        raise PreannotateError(
            ErrorCode.UNSUPPORTED_MEDIA,
            f"{path}: not a supported video container (MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV, WMV, Ogg)",
        ) from None
    except av.error.FFmpegError as exc:
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: cannot be read as video ({exc})") from None
    if not set(container.format.name.split(",")) & set(_VIDEO_DEMUXERS):  # the whitelist's own check, again
        container.close()
        raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{path}: {container.format.name} is not a video container")
    if not container.streams.video:
        container.close()
        raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{path}: has no video stream")
    return container
