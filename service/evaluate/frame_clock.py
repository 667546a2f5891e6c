"""Frames counted at one rate, found in a source counted at another: labels often count a video's frames at
their own rate (a Darwin slot's ``fps``, a Label Studio project's ``framerate``, Encord's ``data_fps``), and
what is drawn for such a frame is the source frame on screen at its time. Shared by ``render`` and the
``evaluate`` report's thumbnails, so both show the same picture for the same label."""

from __future__ import annotations

import math
from collections.abc import Iterable

from service.pipeline.media import SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.readers import SlotReader

SAME_RATE_TOLERANCE = 1e-3
"""Two frame rates this close (relative) count frames alike: a rate derived from rounded timestamps is no other
clock, and re-counting by it would shift frames late in a long video by one. Also the slack under a frame
time in floating point: a product a hair under a whole source frame must not fall to the frame before it."""


def same_clock(unit_fps: float | None, source_fps: float | None) -> bool:
    """Whether frame indices of the unit are the source's own: a rate unknown (or unusable) on either side,
    or two rates within ``SAME_RATE_TOLERANCE``."""
    return (
        unit_fps is None
        or source_fps is None
        or not math.isfinite(unit_fps)
        or not math.isfinite(source_fps)
        or unit_fps <= 0
        or source_fps <= 0
        or math.isclose(unit_fps, source_fps, rel_tol=SAME_RATE_TOLERANCE)
    )


def source_frame(frame: int, unit_fps: float | None, source_fps: float | None) -> int:
    """The source frame displayed at the time of the unit's ``frame``: frame k of the unit starts at
    k / unit_fps, and the source frame shown then is the last one started at or before it (floor, not round:
    at 10 fps on a 25 fps source, frame 3 is 0.3 s, where source frame 7 (0.28 s) is on screen, not 8)."""
    if unit_fps is None or source_fps is None or same_clock(unit_fps, source_fps):
        return frame
    return math.floor(frame * source_fps / unit_fps + SAME_RATE_TOLERANCE)


def source_frames(frames: Iterable[int], unit_fps: float | None, source_fps: float | None) -> dict[int, int]:
    """Each of a unit's frame indices -> ``source_frame`` of it."""
    return {f: source_frame(f, unit_fps, source_fps) for f in frames}


Clocked = tuple[int, float | None]
"""A frame index and the rate it counts at (None: the source's own frames)."""


def open_shown_frames(
    item: str, slot: SlotSpec, frames: Iterable[Clocked], limits: MediaLimits
) -> tuple[SlotReader, dict[Clocked, int]]:
    """A reader of just the source frames on screen at the times of ``frames``, and each of them -> its source
    frame. The source's rate is known once it is open: opened at the frames as given, and when some count at
    another rate, closed and opened again at the frames shown then (each reader closed once, whatever fails)."""
    wanted = set(frames)
    reader = open_slot(item, slot, SamplingOptions(frame_indices=tuple(sorted({f for f, _ in wanted}))), limits)
    to_source = {(f, fps): source_frame(f, fps, reader.meta.fps) for f, fps in wanted}
    if all(f == source for (f, _), source in to_source.items()):
        return reader, to_source
    reader.close()
    shown = SamplingOptions(frame_indices=tuple(sorted(set(to_source.values()))))
    return open_slot(item, slot, shown, limits), to_source
