"""How a source video's frames land on a CVAT task's frames (``CvatFrames.of_source_frame``)."""

from __future__ import annotations

from service.convert.cvat_types import CvatFrames

# every 2nd source frame of 3..39: task frame n is source frame 3 + 2 n
STEPPED = CvatFrames(size=19, start_frame=3, stop_frame=39, step=2, video=True)


def test_a_source_frame_the_task_holds_is_its_task_frame() -> None:
    assert [STEPPED.of_source_frame(3 + 2 * n) for n in range(19)] == list(range(19))


def test_frames_outside_the_task_have_none() -> None:
    assert [STEPPED.of_source_frame(f) for f in (0, 2, 40, 41, 100)] == [None] * 5


def test_samples_between_task_frames_land_on_distinct_task_frames() -> None:
    """Source frames halfway between two task frames all go the same way: every 2nd frame sampled (12.5 fps of a
    25 fps source) gives one task frame each, not two on one and none on the next (half of them dropped)."""
    sampled = range(4, 40, 2)
    landed = [STEPPED.of_source_frame(f) for f in sampled]
    assert len(set(landed)) == len(landed)
    assert landed == [(f - 3 + 1) // 2 for f in sampled]


def test_a_source_frame_off_the_grid_lands_on_a_nearest_task_frame() -> None:
    for f in range(3, 40):
        n = STEPPED.of_source_frame(f)
        assert n is not None
        assert abs(3 + 2 * n - f) <= 1


def test_a_task_of_every_third_frame_takes_the_nearest() -> None:
    frames = CvatFrames(size=10, start_frame=0, stop_frame=27, step=3, video=True)
    assert [frames.of_source_frame(f) for f in range(7)] == [0, 0, 1, 1, 1, 2, 2]
