"""select_frames: the one rule for which frames a sampling request keeps (table-tested)."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import ErrorCode, PreannotateError
from service.pipeline.options import SamplingOptions
from service.pipeline.sampling import check_start, frames_past_end, select_frames, target_count

CFR_10 = np.arange(50) / 10.0  # 10 fps, 5 s
VFR = np.array([0.0, 0.05, 0.9, 1.0, 1.02, 2.5, 2.6, 4.0])


@pytest.mark.parametrize(
    ("times", "options", "expected"),
    [
        (CFR_10, SamplingOptions(fps=1), [0, 10, 20, 30, 40]),
        (CFR_10, SamplingOptions(fps=0.25), [0, 40]),
        (CFR_10, SamplingOptions(fps=3), [0, 3, 6, 10, 13, 16, 20, 23, 26, 30, 33, 36, 40, 43, 46]),
        (CFR_10, SamplingOptions(fps=0), list(range(50))),
        # above the frame rate: each frame once; targets stop at the last frame's time (4.9 s is not k/25)
        (CFR_10, SamplingOptions(fps=25), list(range(49))),
        (CFR_10, SamplingOptions(fps=20), list(range(50))),
        (CFR_10, SamplingOptions(fps=1, start_s=0.55), [5, 15, 25, 35, 45]),
        (CFR_10, SamplingOptions(fps=1, start_s=1, end_s=3), [10, 20, 30]),
        (CFR_10, SamplingOptions(fps=0, start_s=4.55, end_s=4.7), [45, 46, 47]),
        (CFR_10, SamplingOptions(fps=1, max_frames=2), [0, 10]),
        (CFR_10, SamplingOptions(fps=1, start_s=10), []),
        # variable rate: the frame on screen at t=1 is the one shown at 1.0; at 2 it is the one from 1.02
        (VFR, SamplingOptions(fps=1), [0, 3, 4, 6, 7]),
        (VFR, SamplingOptions(fps=0.5), [0, 4, 7]),
        (np.zeros((0,)), SamplingOptions(fps=1), []),
        # a run's own frames, drawn again: those that exist, sorted, once each; fps/start/end do not apply
        (CFR_10, SamplingOptions(fps=1, start_s=3, frame_indices=(7, 2, 7, 49, 50, 900)), [2, 7, 49]),
        (CFR_10, SamplingOptions(frame_indices=()), []),
    ],
)
def test_select_frames(times: np.ndarray, options: SamplingOptions, expected: list[int]) -> None:
    assert select_frames(times, options).tolist() == expected


def test_rounding_never_skips_a_frame_on_a_target() -> None:
    # 29.97 fps timestamps come from 1001/30000 steps; targets at k/fps must still hit them.
    times = np.arange(3000) * 1001 / 30000
    chosen = select_frames(times, SamplingOptions(fps=30000 / 1001))
    assert chosen.tolist() == list(range(3000))


def test_huge_fps_stays_bounded() -> None:
    times = np.arange(100) / 30.0
    assert select_frames(times, SamplingOptions(fps=1000)).tolist() == list(range(100))


@pytest.mark.parametrize(
    ("options", "last", "expected"),
    [(SamplingOptions(fps=1), 4.9, 5), (SamplingOptions(fps=1), 5.0, 6), (SamplingOptions(fps=0), 5.0, 0)],
)
def test_target_count(options: SamplingOptions, last: float, expected: int) -> None:
    assert target_count(options, last) == expected


@pytest.mark.parametrize(
    "kwargs",
    [{"fps": -1}, {"fps": 2000}, {"start_s": -1}, {"start_s": 3, "end_s": 2}, {"max_frames": 0}],
)
def test_bad_sampling_options_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"fps|start|end|max_frames"):
        SamplingOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("step_s", [1 / 30, 0.5, 2.0])
@pytest.mark.parametrize("seen", [1, 5, 37])
@pytest.mark.parametrize("missing", [1, 2, 13, 100])
@pytest.mark.parametrize("fps", [0, 0.3, 1, 2.5, 30, 100])
@pytest.mark.parametrize(("start_s", "end_s"), [(0.0, None), (0.2, 1.0), (1.3, 3.7), (5.0, None), (5.0, 40.0)])
def test_frames_past_end_is_what_the_plan_of_the_whole_stream_adds(
    step_s: float, seen: int, missing: int, fps: float, start_s: float, end_s: float | None
) -> None:
    """A cut stream's expected frames: its plan plus ``frames_past_end`` is the plan of the stream uncut."""
    options = SamplingOptions(fps=fps, start_s=start_s, end_s=end_s)
    whole = np.arange(seen + missing) * step_s
    added = frames_past_end(float(whole[seen - 1]), step_s, missing, options)
    assert len(select_frames(whole[:seen], options)) + added == len(select_frames(whole, options))


@pytest.mark.parametrize("fps", [1.0, 0.0])
def test_a_start_after_the_last_frame_is_refused(fps: float) -> None:
    with pytest.raises(
        PreannotateError, match=r"clip\.mp4: start 4\.95 s is past the end \(last frame at 4\.900 s\)"
    ) as exc:
        check_start(CFR_10, SamplingOptions(fps=fps, start_s=4.95), "clip.mp4")
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT


def test_a_start_on_the_last_frame_samples_it() -> None:
    options = SamplingOptions(fps=1, start_s=4.9)
    check_start(CFR_10, options, "clip.mp4")
    assert list(select_frames(CFR_10, options)) == [49]


def test_frame_indices_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="frame indices"):
        SamplingOptions(frame_indices=(3, -1))
