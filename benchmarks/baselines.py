"""Named baselines, re-implemented exactly, that the benchmarks (and the tests) compare against."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
from av.video.frame import VideoFrame

from models.types import RGBImage
from service.pipeline.options import SamplingMode, SamplingOptions
from service.pipeline.video import frame_to_rgb

_EPS_S = 1e-6


def decode_all_sampler(path: Path, options: SamplingOptions) -> Iterator[tuple[int, float, RGBImage]]:
    """Pixeltable's frame-iterator method: decode **every** frame, convert only the kept ones.

    ``av.open``, ``container.decode(video=0)`` with default threading and no ``skip_frame``. A
    frame is kept when it is on screen at some target ``start + k / fps`` — frame i is on screen
    over ``[t_i, t_i+1)`` — the candidate's rule applied identically, decided with one frame of
    look-ahead. In key-frame mode only key frames count as frames (every frame is still decoded).
    Yields ``(frame_index, timestamp_s, rgb)`` in time order; the index counts key frames too in
    key-frame mode, so callers compare indices only in exact mode.
    """
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        time_base = stream.time_base
        first_pts: int | None = None
        held: tuple[int, float, VideoFrame] | None = None
        index = kept = 0
        for frame in container.decode(stream):
            if frame.pts is None or (options.mode is SamplingMode.KEYFRAMES and not frame.key_frame):
                continue
            first_pts = frame.pts if first_pts is None else first_pts
            current = (index, float((frame.pts - first_pts) * time_base), frame)
            index += 1
            if held is not None and _on_screen_at_a_target(held[1], current[1], held[0] == 0, options):
                yield held[0], held[1], frame_to_rgb(held[2])
                kept += 1
                if options.max_frames is not None and kept >= options.max_frames:
                    return
            held = current
        if held is not None and _last_on_screen_at_a_target(held[1], held[0] == 0, options):
            yield held[0], held[1], frame_to_rgb(held[2])


def _targets_before(x_s: float, options: SamplingOptions) -> int:
    """How many targets are < x (and <= end)."""
    if x_s <= options.start_s:
        return 0
    count = math.ceil((x_s - options.start_s) * options.fps)
    if options.end_s is not None:
        count = min(count, math.floor((options.end_s - options.start_s) * options.fps + _EPS_S) + 1)
    return max(0, count)


def _on_screen_at_a_target(t_s: float, next_t_s: float, first: bool, options: SamplingOptions) -> bool:
    if options.end_s is not None and t_s > options.end_s + _EPS_S:
        return False
    if options.fps <= 0:  # every frame still on screen at start or later
        return next_t_s > options.start_s + _EPS_S
    before = 0 if first else _targets_before(t_s - _EPS_S, options)
    return _targets_before(next_t_s - _EPS_S, options) > before


def _last_on_screen_at_a_target(t_s: float, first: bool, options: SamplingOptions) -> bool:
    end = t_s if options.end_s is None else min(options.end_s, t_s)
    if options.fps <= 0:
        return options.end_s is None or t_s <= options.end_s + _EPS_S
    if end < options.start_s:
        return False
    up_to_end = math.floor((end - options.start_s) * options.fps + _EPS_S) + 1
    before = 0 if first else _targets_before(t_s - _EPS_S, options)
    return up_to_end > before
