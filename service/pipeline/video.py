"""Video frame sampling with PyAV: exact (by presentation time) or key frames only.

Exact mode returns, for each target time, the frame displayed at that time, bit-identical to
decoding every frame. It gets there with less work: one demux pass (no decoding) indexes every
packet's pts and the key frames; then, for each wanted frame, it seeks to the key frame before it
only when that key frame lies beyond the current decode position, and decodes forward from there.
Frames between targets that no target needs are never decoded, and only kept frames are converted
to RGB. Key-frame mode decodes only the wanted key frames, each on its own.

Memory does not grow with the video: the index is two int64 arrays (8 bytes per frame), and at most
one decoded frame is held.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from numpy.typing import NDArray

from models.types import RGBImage
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import Frame, FrameInfo, MediaKind, SlotMeta
from service.pipeline.options import MediaLimits, SamplingMode, SamplingOptions
from service.pipeline.sampling import select_frames

log = logging.getLogger(__name__)

_MAX_CORRUPT_PACKETS = 100


@dataclass(frozen=True, slots=True)
class VideoIndex:
    """Every frame's pts in display order, and the key frames', from one demux pass.

    Attributes:
        pts: (n,) int64 sorted presentation timestamps, in ``time_base`` units.
        keyframe_pts: (k,) int64 sorted pts of the key frames.
        time_base: seconds per pts unit.
    """

    pts: NDArray[np.int64]
    keyframe_pts: NDArray[np.int64]
    time_base: Fraction

    def times_s(self, pts: NDArray[np.int64]) -> NDArray[np.float64]:
        """Seconds from the first frame."""
        return np.asarray((pts - self.pts[0]) * float(self.time_base), np.float64)

    def frame_index(self, pts: int) -> int:
        """Display-order index of the frame with this pts."""
        return int(np.searchsorted(self.pts, pts, "left"))


@dataclass(slots=True)
class SamplingStats:
    """Work done, for benchmarks and logs: decoded frames per sampled frame is the key number."""

    decoded_frames: int = 0
    sampled_frames: int = 0
    seeks: int = 0
    corrupt_packets: int = 0


def build_index(container: InputContainer, stream: VideoStream) -> VideoIndex:
    """Demux (without decoding) every packet of ``stream`` and index pts and key frames."""
    pts: list[int] = []
    keyframes: list[int] = []
    no_pts = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the flush packet at the end
        ts = packet.pts
        if ts is None:
            no_pts += 1
            continue
        pts.append(ts)
        if packet.is_keyframe:
            keyframes.append(ts)
    if no_pts:
        log.warning("%d packets without pts were not indexed", no_pts)
    if stream.time_base is None:
        raise ValueError("stream has no time base")
    return VideoIndex(
        pts=np.unique(np.asarray(pts, np.int64)),
        keyframe_pts=np.unique(np.asarray(keyframes, np.int64)),
        time_base=Fraction(stream.time_base),
    )


def frame_to_rgb(frame: VideoFrame) -> RGBImage:
    """Convert one decoded frame to (H, W, 3) uint8 RGB, upright (display rotation applied)."""
    rgb = np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)
    turns = (frame.rotation // 90) % 4  # counter-clockwise degrees, as players apply them
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


@dataclass(slots=True)
class _Decoder:
    """Forward decoding from a position, with at most one frame of push-back."""

    container: InputContainer
    stream: VideoStream
    stats: SamplingStats
    _frames: Generator[VideoFrame] | None = None
    _pending: VideoFrame | None = None
    position_pts: int | None = None

    def start(self, keyframe_pts: int, *, exact: bool = True) -> None:
        """Seek to the key frame at ``keyframe_pts`` and decode forward from it.

        Demuxers may land on an earlier key frame than asked (the mov demuxer does on some
        variable-rate files); with ``exact`` the packets before ours are dropped undecoded.
        """
        if self._frames is not None:
            self._frames.close()
        self.container.seek(keyframe_pts, stream=self.stream, backward=True, any_frame=False)
        self.stats.seeks += 1
        self._frames = self._decode(keyframe_pts if exact else None)
        self._pending = None
        self.position_pts = None

    def _decode(self, skip_to_keyframe_pts: int | None) -> Generator[VideoFrame]:
        skipping = skip_to_keyframe_pts is not None
        skip_to_keyframe_pts = skip_to_keyframe_pts or 0
        for packet in self.container.demux(self.stream):
            if skipping:
                # A GOP decodes from its own key frame: the packets before it need no decoding.
                if not (packet.is_keyframe and packet.pts is not None and packet.pts >= skip_to_keyframe_pts):
                    continue
                skipping = False
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


class VideoReader:
    """A SlotReader over one video file (mp4, mov, mkv, webm: whatever PyAV demuxes).

    Opening indexes the file (one demux pass, no decoding), decodes the first key frame to learn
    the display size and rotation, checks the limits and plans the frames. Iterating decodes.
    """

    def __init__(self, item: str, slot: str, path: Path, sampling: SamplingOptions, limits: MediaLimits) -> None:
        self._path = path
        self._sampling = sampling
        self.stats = SamplingStats()
        self._container = _open(path, limits)
        try:
            self._stream = self._container.streams.video[0]
            self._index = build_index(self._container, self._stream)
            if len(self._index.pts) == 0 or len(self._index.keyframe_pts) == 0:
                raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: no decodable video frames")
            width, height = self._probe_display_size()
            self.meta = self._plan(item, slot, width, height, limits)
        except BaseException:
            self._container.close()
            raise

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
        if self._sampling.mode is SamplingMode.KEYFRAMES:
            chosen = select_frames(index.times_s(index.keyframe_pts), self._sampling)
            self._wanted = index.keyframe_pts[chosen]
        else:
            self._wanted = index.pts[select_frames(times, self._sampling)]
        limits.check_frames(len(self._wanted), str(self._path))
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

    def __iter__(self) -> Iterator[Frame]:
        frames = self._iter_keyframes() if self._sampling.mode is SamplingMode.KEYFRAMES else self._iter_exact()
        for frame in frames:
            self.stats.sampled_frames += 1
            yield self._to_frame(frame)

    def _iter_exact(self) -> Iterator[VideoFrame]:
        index = self._index
        decoder = _Decoder(self._container, self._stream, self.stats)
        started = fell_back = False
        for wanted in self._wanted.tolist():
            k = max(0, int(np.searchsorted(index.keyframe_pts, wanted, "right")) - 1)
            keyframe = int(index.keyframe_pts[k])
            position = decoder.position_pts
            # Seek only past frames no target needs: when the wanted frame's key frame lies
            # beyond the decode position. Otherwise decoding forward is the shortest path.
            if not started or (position is not None and position < keyframe):
                decoder.start(keyframe)
                started = True
            frame = self._decode_until(decoder, wanted)
            if frame is None and not fell_back:
                # The demuxer landed past our key frame (its seek index disagrees with the pts
                # index): decode from the first key frame instead, slow but right. Once only,
                # so a truly missing frame cannot make sampling quadratic.
                fell_back = True
                decoder.start(int(index.keyframe_pts[0]), exact=False)
                frame = self._decode_until(decoder, wanted)
            if frame is not None:
                yield frame

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
                    log.warning("%s: no frame at pts %d", self._path, wanted)
                return previous
            previous = frame
        return previous

    def _iter_keyframes(self) -> Iterator[VideoFrame]:
        for wanted in self._wanted.tolist():
            frame = self._decode_keyframe(wanted)
            if frame is not None:
                yield frame

    def _decode_keyframe(self, pts: int) -> VideoFrame | None:
        """Seek to the key frame at ``pts`` and decode it on its own: no frame around it."""
        self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        self.stats.seeks += 1
        codec = self._stream.codec_context
        for packet in self._container.demux(self._stream):
            if packet.size == 0 or packet.pts is None or not packet.is_keyframe or packet.pts < pts:
                continue
            if packet.pts > pts:
                break  # the demuxer's seek index and our pts index disagree
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
        log.warning("%s: key frame at pts %d not found", self._path, pts)
        return None

    def _to_frame(self, frame: VideoFrame) -> Frame:
        pts = int(frame.pts) if frame.pts is not None else int(self._index.pts[0])
        image = frame_to_rgb(frame)
        return Frame(
            info=FrameInfo(
                item=self.meta.item,
                slot=self.meta.slot,
                source=str(self._path),
                media=MediaKind.VIDEO,
                frame_index=self._index.frame_index(pts),
                timestamp_s=float((pts - int(self._index.pts[0])) * self._index.time_base),
                width=image.shape[1],
                height=image.shape[0],
            ),
            image=image,
        )

    def close(self) -> None:
        self._container.close()


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
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise PreannotateError(ErrorCode.CORRUPT_MEDIA, f"{path}: cannot be read as video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise PreannotateError(ErrorCode.UNSUPPORTED_MEDIA, f"{path}: has no video stream")
    return container
