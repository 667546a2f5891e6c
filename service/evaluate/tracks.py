"""Video tracks as the editors show them: every frame a track covers, filled in from its keyframes.

Darwin and Label Studio export keyframes; V7 and the LS editor show the object on every frame in between
(interpolated, or the last keyframe held). Scored on keyframes alone, a perfect track would miss every
frame between its keyframes against a benchmark drawn frame by frame, so the loaders fill tracks first.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from service.evaluate.types import FormatError

T = TypeVar("T")

MAX_FILLED_FRAMES = 1_000_000
"""Frames the tracks of one input may cover in all: a range is two numbers, its frames are shapes in memory."""


@dataclass(slots=True)
class FrameBudget:
    """What is left of ``MAX_FILLED_FRAMES`` for one input; spent before expanding, so nothing huge is built."""

    left: int = MAX_FILLED_FRAMES

    def spend(self, frames: int) -> None:
        self.left -= max(0, frames)
        if self.left < 0:
            raise FormatError(f"video tracks cover more than {MAX_FILLED_FRAMES} frames in all")


def lerp(a: float, b: float, t: float) -> float:
    """The value a fraction ``t`` of the way from ``a`` to ``b``."""
    return a + (b - a) * t


def fill_between(
    knots: Mapping[int, T], frames: Iterable[int], between: Callable[[T, T, float], T] | None
) -> dict[int, T]:
    """``knots`` (frame -> value) carried to every frame of ``frames``.

    A knot's own frame gets the knot; a frame between two knots gets ``between(previous, next, t)``, t the
    fraction of the way (0 < t < 1), or the previous knot when ``between`` is None (held); a frame after the
    last knot gets the last knot; a frame before the first gets nothing (the track has not started).
    """
    keys = sorted(knots)
    out: dict[int, T] = {}
    for frame in frames:
        i = bisect.bisect_right(keys, frame)
        if i == 0:
            continue
        prev = keys[i - 1]
        if prev == frame or between is None or i == len(keys):
            out[frame] = knots[prev]
        else:
            nxt = keys[i]
            out[frame] = between(knots[prev], knots[nxt], (frame - prev) / (nxt - prev))
    return out
