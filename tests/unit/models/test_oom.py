"""models.oom: split-and-retry on device out-of-memory, shared by the flow's infer stage and the server's batcher."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import numpy as np
import pytest

from models.errors import DeviceOutOfMemoryError, ModelLoadError
from models.oom import BatchCeiling, detect_splitting_on_oom, run_splitting_on_oom
from models.types import Detections, RGBImage


class Runner:
    """Runs chunks of ints, out of memory above ``fits``; records every call and whether it ran in an except block."""

    def __init__(self, fits: int) -> None:
        self.fits = fits
        self.calls: list[list[int]] = []
        self.done: list[int] = []
        self.inside_except: list[bool] = []

    def __call__(self, chunk: Sequence[int]) -> None:
        self.calls.append(list(chunk))
        self.inside_except.append(sys.exc_info()[0] is not None)
        if len(chunk) > self.fits:
            raise DeviceOutOfMemoryError(f"out of memory on {len(chunk)}")
        self.done.extend(chunk)


def test_a_batch_that_runs_out_is_split_and_every_item_runs_once_in_order(caplog: pytest.LogCaptureFixture) -> None:
    runner = Runner(fits=3)
    ceiling = BatchCeiling(16, name="m")
    ooms: list[int] = []
    with caplog.at_level(logging.WARNING, logger="models.oom"):
        run_splitting_on_oom(list(range(16)), runner, ceiling, on_oom=ooms.append)

    assert runner.done == list(range(16))
    # 16 -> 8 -> 4 -> 2, then the rest at the lowered ceiling (never a second try at a size that failed)
    assert [len(call) for call in runner.calls] == [16, 8, 4, 2, 2, 2, 2, 2, 2, 2, 2]
    assert ooms == [16, 8, 4]
    assert ceiling.size == 2
    assert "max batch size 16 -> 8" in caplog.text
    # Retries run after the except block ended (its traceback would pin the failed call's tensors).
    assert not any(runner.inside_except)


def test_the_ceiling_carries_over_to_the_next_call() -> None:
    ceiling = BatchCeiling(8, name="m")
    run_splitting_on_oom(list(range(8)), Runner(fits=4), ceiling)
    runner = Runner(fits=4)
    run_splitting_on_oom(list(range(10)), runner, ceiling)
    assert [len(call) for call in runner.calls] == [4, 4, 2]


def test_a_short_batch_lowers_the_ceiling_to_half_of_itself() -> None:
    ceiling = BatchCeiling(16, name="m")
    run_splitting_on_oom([1, 2, 3], Runner(fits=2), ceiling)
    assert ceiling.size == 2


def test_a_single_item_that_does_not_fit_goes_to_fail_one_and_the_rest_goes_on() -> None:
    runner = Runner(fits=0)
    failed: list[tuple[int, str]] = []
    ceiling = BatchCeiling(2, name="m")
    run_splitting_on_oom([7, 8, 9], runner, ceiling, fail_one=lambda item, error: failed.append((item, str(error))))
    assert [item for item, _ in failed] == [7, 8, 9]
    assert all("out of memory on 1" in message for _, message in failed)
    assert runner.calls == [[7, 8], [7], [8], [9]]


def test_without_fail_one_a_single_item_raises_device_oom() -> None:
    with pytest.raises(DeviceOutOfMemoryError, match="out of memory on 1"):
        run_splitting_on_oom([1, 2], Runner(fits=0), BatchCeiling(4, name="m"))


def test_other_errors_propagate_unchanged_and_leave_the_ceiling() -> None:
    ceiling = BatchCeiling(4, name="m")

    def run(chunk: Sequence[int]) -> None:
        raise ModelLoadError("broken graph")

    with pytest.raises(ModelLoadError, match="broken graph"):
        run_splitting_on_oom([1, 2, 3], run, ceiling)
    assert ceiling.size == 4


def test_the_ceiling_never_goes_up_and_rejects_bad_sizes() -> None:
    ceiling = BatchCeiling(4, name="m")
    ceiling.lower(8, failed=9)
    assert ceiling.size == 4
    ceiling.lower(2, failed=4)
    assert ceiling.size == 2
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="integer >= 1"):
            BatchCeiling(bad, name="m")  # type: ignore[arg-type]


def _frame(value: int) -> RGBImage:
    return np.full((2, 2, 3), value, np.uint8)


def _echo(images: Sequence[RGBImage]) -> list[Detections]:
    if len(images) > 2:
        raise DeviceOutOfMemoryError("too many")
    return [Detections.from_arrays(np.array([[i[0, 0, 0], 0, 1, 1]]), np.array([1.0]), np.array([0])) for i in images]


def test_detect_splitting_returns_one_result_per_frame_in_order() -> None:
    results = detect_splitting_on_oom(_echo, [_frame(v) for v in range(7)], BatchCeiling(8, name="m"))
    assert [int(dets.xyxy[0, 0]) for dets in results] == list(range(7))


def test_detect_splitting_rejects_a_detector_that_loses_frames() -> None:
    with pytest.raises(RuntimeError, match="1 results for 2 frames"):
        detect_splitting_on_oom(lambda images: _echo(images)[:1], [_frame(0), _frame(1)], BatchCeiling(2, name="m"))
