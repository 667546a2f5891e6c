"""Which frames to keep: pure functions over frame times, shared by video and timed DICOM."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from service.errors import ErrorCode, PreannotateError
from service.pipeline.options import SamplingOptions

# Frame times come from rational timestamps; a target that should land exactly on a frame must
# not miss it by a rounding error.
_TIME_EPS_S = 1e-6
_TARGET_CHUNK = 1 << 20  # bounds memory when fps is far above the source's frame rate


def target_count(options: SamplingOptions, last_time_s: float) -> int:
    """How many targets ``start + k / fps`` fall in [start, min(end, last frame time)]."""
    end = last_time_s if options.end_s is None else min(options.end_s, last_time_s)
    if options.fps <= 0 or end < options.start_s:
        return 0
    return math.floor((end - options.start_s) * options.fps + _TIME_EPS_S) + 1


def check_start(frame_times_s: NDArray[np.float64], options: SamplingOptions, source: str) -> None:
    """Refuse a start after the last frame (INVALID_ARGUMENT naming ``source``): it would sample nothing,
    and an empty result that looks like success hides the caller's mistake (often seconds vs frames)."""
    if len(frame_times_s) and options.start_s > float(frame_times_s[-1]) + _TIME_EPS_S:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"{source}: start {options.start_s:g} s is past the end (last frame at {float(frame_times_s[-1]):.3f} s)",
        )


def select_frames(frame_times_s: NDArray[np.float64], options: SamplingOptions) -> NDArray[np.intp]:
    """Indices (ascending, unique) of the frames to keep.

    ``frame_times_s`` are sorted presentation times from the first frame. For each target
    ``start + k / fps`` the kept frame is the one *displayed* at that time: the last frame whose
    time is <= the target (the first frame for targets before it). ``fps == 0`` keeps every
    frame from the one displayed at ``start_s`` through ``end_s``. ``max_frames`` keeps the
    earliest ones. ``frame_indices`` keeps those frames (the ones that exist) instead.
    """
    if len(frame_times_s) == 0:
        return np.zeros((0,), np.intp)
    if options.frame_indices is not None:
        wanted = np.unique(np.asarray(options.frame_indices, np.intp))
        chosen = wanted[wanted < len(frame_times_s)]
    elif options.fps <= 0:
        first = _displayed_at(frame_times_s, np.array([options.start_s]))[0]
        end = math.inf if options.end_s is None else options.end_s
        stop = int(np.searchsorted(frame_times_s, end + _TIME_EPS_S, "right"))
        chosen = np.arange(first, max(first, stop), dtype=np.intp)
    else:
        parts: list[NDArray[np.intp]] = []
        kept, last = 0, -1
        total = target_count(options, float(frame_times_s[-1]))
        for start in range(0, total, _TARGET_CHUNK):
            k = np.arange(start, min(total, start + _TARGET_CHUNK), dtype=np.float64)
            part = np.unique(_displayed_at(frame_times_s, options.start_s + k / options.fps))
            part = part[part > last]  # chunks are ordered; only the boundary frame can repeat
            if len(part):
                parts.append(part)
                kept, last = kept + len(part), int(part[-1])
            if options.max_frames is not None and kept >= options.max_frames:
                break
        chosen = np.concatenate(parts) if parts else np.zeros((0,), np.intp)
    if options.max_frames is not None:
        chosen = chosen[: options.max_frames]
    return chosen


def frames_past_end(last_time_s: float, step_s: float, count: int, options: SamplingOptions) -> int:
    """How many frames ``select_frames`` would add had the frames gone on past ``last_time_s``.

    The frames it did not see are ``count`` more, ``step_s`` apart: a truncated stream's missing part,
    as long as its container declares it. Counted without listing them (a declared length can be
    hours of frames). ``max_frames`` is the caller's: it caps the total, not this part.
    """
    if count <= 0 or step_s <= 0:
        return 0
    end_s = last_time_s + count * step_s  # the last missing frame's time
    if options.end_s is not None:
        end_s = min(end_s, options.end_s)

    def frame_at(t_s: float) -> int:
        """Which missing frame (1..count) is displayed at ``t_s``; 0 is the last frame seen."""
        return max(0, min(count, math.floor((t_s - last_time_s) / step_s + _TIME_EPS_S)))

    if options.fps <= 0:
        first = frame_at(options.start_s)
        if first == 0:
            return frame_at(end_s)
        # A start past the frames seen planned the last of them (displayed at start): the rest would not.
        return frame_at(max(end_s, options.start_s)) - first
    # The targets past the last frame seen (the plan stopped there), up to end_s. The first of them
    # may still show that last frame: new to the plan unless a target landed on it exactly.
    k_first = max(0, math.floor((last_time_s - options.start_s) * options.fps + _TIME_EPS_S) + 1)
    k_last = math.floor((end_s - options.start_s) * options.fps + _TIME_EPS_S)
    if k_last < k_first:
        return 0
    first, last = (frame_at(options.start_s + k / options.fps) for k in (k_first, k_last))
    # Targets closer than the frames hit every frame between, farther ones a new frame each.
    added = min(k_last - k_first + 1, last - first + 1)
    seen_last = abs(options.start_s + (k_first - 1) / options.fps - last_time_s) <= _TIME_EPS_S and k_first > 0
    return added - 1 if first == 0 and seen_last else added


def _displayed_at(frame_times_s: NDArray[np.float64], targets_s: NDArray[np.float64]) -> NDArray[np.intp]:
    idx = np.searchsorted(frame_times_s, targets_s + _TIME_EPS_S, "right") - 1
    return np.maximum(idx, 0).astype(np.intp)
