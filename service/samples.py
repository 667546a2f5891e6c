"""Sample media generated on the spot: the demo, the tests and the benchmarks use these.

Videos are encoded with PyAV (libx264 by default) with a chosen key-frame interval and B-frames,
so sampling behaviour can be checked against known content, and nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.stream import VideoStream

from models.types import RGBImage


@dataclass(frozen=True, slots=True)
class MovingBox:
    """A filled square moving in a straight line: its position at any time is known."""

    size_px: int
    start_xy_px: tuple[float, float]
    velocity_xy_px_s: tuple[float, float]
    color_rgb: tuple[int, int, int] = (255, 255, 255)

    def xyxy_at(self, t_s: float) -> tuple[int, int, int, int]:
        x = round(self.start_xy_px[0] + self.velocity_xy_px_s[0] * t_s)
        y = round(self.start_xy_px[1] + self.velocity_xy_px_s[1] * t_s)
        return x, y, x + self.size_px, y + self.size_px


DEFAULT_BOXES = (
    MovingBox(size_px=40, start_xy_px=(10, 20), velocity_xy_px_s=(30, 5), color_rgb=(255, 64, 64)),
    MovingBox(size_px=24, start_xy_px=(200, 150), velocity_xy_px_s=(-20, -10), color_rgb=(64, 255, 64)),
)


def textured_background(height_px: int, width_px: int, seed: int) -> RGBImage:
    """Smooth random texture: realistic work for the encoder, unlike a flat colour."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height_px // 16), max(2, width_px // 16), 3), dtype=np.uint8)
    return np.asarray(cv2.resize(small, (width_px, height_px), interpolation=cv2.INTER_CUBIC), np.uint8)


def render_frame(background: RGBImage, t_s: float, boxes: Sequence[MovingBox]) -> RGBImage:
    """The background panned slowly with time, with each box drawn at its position at ``t_s``."""
    shift = int(t_s * 8) % background.shape[1]
    frame = np.roll(background, shift, axis=1)
    for box in boxes:
        x1, y1, x2, y2 = box.xyxy_at(t_s)
        frame[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)] = box.color_rgb
    return frame


def write_video(
    path: Path,
    *,
    width_px: int = 320,
    height_px: int = 240,
    fps: int | Fraction = 30,
    duration_s: float = 4.0,
    gop: int = 30,
    bframes: int = 2,
    codec: str = "libx264",
    preset: str = "veryfast",
    crf: int = 23,
    frame_times_s: Sequence[float] | None = None,
    rotation_deg: int = 0,
    boxes: Sequence[MovingBox] = DEFAULT_BOXES,
    seed: int = 0,
    threads: int = 0,
) -> list[float]:
    """Encode a synthetic clip and return the presentation time of every frame, in order.

    Args:
        path: output file; the container follows the extension (.mp4, .mov, .mkv, .webm).
        width_px: frame width.
        height_px: frame height.
        fps: nominal frame rate (constant-rate clips use it for every frame).
        duration_s: clip length when ``frame_times_s`` is not given.
        gop: key-frame interval in frames (scene-cut detection off, so it is exact).
        bframes: consecutive B-frames (H.264/HEVC only).
        codec: encoder name (libx264, libx265, libvpx-vp9, mpeg4, ...).
        preset: x264/x265 preset.
        crf: x264/x265 quality.
        frame_times_s: explicit, increasing frame times: a variable-frame-rate clip.
        rotation_deg: display rotation stored in the container (players rotate on display).
        boxes: the moving content.
        seed: texture seed.
        threads: encoder threads; 0 lets FFmpeg choose. x264's frame threads make the bytes depend on
            scheduling (seen under load), so clips that must match another encode bit for bit use 1.
    """
    times = (
        list(frame_times_s) if frame_times_s is not None else [float(i / fps) for i in range(round(duration_s * fps))]
    )
    background = textured_background(height_px, width_px, seed)
    time_base = Fraction(1, 1000 * fps) if frame_times_s is not None else Fraction(1, fps)
    options = {"g": str(gop), "keyint_min": str(gop)}
    if codec in ("libx264", "libx265"):
        options |= {"preset": preset, "crf": str(crf), "bf": str(bframes)}
        options["x264-params" if codec == "libx264" else "x265-params"] = "scenecut=0"
    with av.open(str(path), mode="w") as container:
        stream = _video_stream(container.add_stream(codec, rate=fps, options=options))
        stream.width, stream.height, stream.pix_fmt = width_px, height_px, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.codec_context.thread_count = threads
        if rotation_deg:
            stream.set_display_rotation(rotation_deg)
        for t in times:
            frame = av.VideoFrame.from_ndarray(render_frame(background, t, boxes), format="rgb24")
            frame.pts, frame.time_base = round(t / time_base), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return times


def write_pan_video(
    image: RGBImage,
    path: Path,
    *,
    width_px: int = 320,
    height_px: int = 240,
    fps: int = 25,
    duration_s: float = 4.0,
    gop: int = 50,
) -> None:
    """A camera pan across ``image`` (e.g. a photo with faces): a clip with real content to detect."""
    h, w = image.shape[:2]
    scale = max(height_px / h, width_px * 1.5 / w)
    canvas = np.asarray(cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA), np.uint8)
    travel = canvas.shape[1] - width_px
    top = (canvas.shape[0] - height_px) // 2
    count = round(duration_s * fps)
    with av.open(str(path), mode="w") as container:
        stream = _video_stream(container.add_stream("libx264", rate=fps, options={"g": str(gop), "preset": "veryfast"}))
        stream.width, stream.height, stream.pix_fmt = width_px, height_px, "yuv420p"
        for i in range(count):
            left = round(travel * i / max(1, count - 1))
            crop = np.ascontiguousarray(canvas[top : top + height_px, left : left + width_px])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        container.mux(stream.encode(None))


def _video_stream(stream: object) -> VideoStream:
    if not isinstance(stream, VideoStream):
        raise TypeError(f"expected a video stream, got {type(stream).__name__}")
    return stream
