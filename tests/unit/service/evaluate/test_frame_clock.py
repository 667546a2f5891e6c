"""Frames counted at one rate found in a source counted at another: the source frame on screen at the time."""

from __future__ import annotations

import math

import pytest

from service.evaluate.frame_clock import same_clock, source_frame, source_frames


def test_a_frame_between_two_source_frames_is_the_earlier_one_on_screen() -> None:
    # 10 fps labels on a 25 fps source: frame k is at k / 10 s; source frame n starts at n / 25 s
    mapped = source_frames(range(6), 10.0, 25.0)
    assert mapped == {0: 0, 1: 2, 2: 5, 3: 7, 4: 10, 5: 12}  # 3 -> 0.3 s: frame 7 (0.28 s), not 8 (0.32 s)
    for frame, source in mapped.items():
        assert source / 25.0 <= frame / 10.0 < (source + 1) / 25.0


def test_a_time_a_hair_under_a_whole_frame_in_floating_point_stays_on_that_frame() -> None:
    assert 5 * 29.97 / 9.99 < 15  # 14.999999999999998
    assert source_frame(5, 9.99, 29.97) == 15
    assert source_frame(44, 23.976, 29.97) == 55


def test_a_slower_source_holds_a_frame_for_several_label_frames() -> None:
    assert source_frames(range(5), 30.0, 10.0) == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1}


@pytest.mark.parametrize(
    ("unit_fps", "source_fps"),
    [(None, 25.0), (10.0, None), (None, None), (29.97, 29.970029), (10.0, math.nan), (10.0, 0.0), (0.0, 25.0)],
)
def test_an_unknown_unusable_or_same_rate_keeps_the_index(unit_fps: float | None, source_fps: float | None) -> None:
    assert same_clock(unit_fps, source_fps)
    assert source_frames([0, 7, 1000], unit_fps, source_fps) == {0: 0, 7: 7, 1000: 1000}
