"""DynamicBatcher: merging, flush rules, deadlines, thresholds, OOM halving, errors, shutdown, metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from numpy.typing import NDArray
from prometheus_client import REGISTRY

from models.base import Detector, DetectorOptions
from models.errors import DeviceOutOfMemoryError, ModelLoadError
from models.registry import load_detector
from models.types import Detections, ModelInfo, RGBImage
from service import cli
from service.commands import run as run_command
from service.errors import ErrorCode, PreannotateError
from service.pipeline.batching import DynamicBatcher
from service.pipeline.flow import detect_one
from service.pipeline.frames import Frame, FrameResult
from service.pipeline.options import SamplingOptions
from tests.builders import make_info

SCORES = (0.1, 0.3, 0.5, 0.7, 0.9)
LONG_WAIT_MS = 10_000.0  # batches then close only when full: a test that waited this long has failed
RESULT_TIMEOUT_S = 10.0


def image_of(caller: int, height: int = 4, width: int = 6) -> RGBImage:
    """A frame whose pixels encode ``caller`` (0..65535)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0], image[..., 1] = caller % 256, caller // 256
    return image


def caller_of(image: RGBImage) -> int:
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


class FakeDetector(Detector):
    """Echoes each frame's caller id as the class of one box per score in SCORES that passes the threshold.

    Records every model call (the caller ids, the threshold, the thread) and can block on a gate,
    raise queued errors, or run out of memory on batches larger than ``oom_above``.
    """

    def __init__(
        self,
        *,
        oom_above: int | None = None,
        check: Callable[[Sequence[RGBImage]], None] | None = None,
    ) -> None:
        self.info = ModelInfo(
            spec="fake:echo",
            name="fake",
            version="0",
            class_names=("caller",),
            runtime="fake",
            device="cpu",
            batch_size=64,  # the base detect() then hands the whole batch to one _detect_batch call
            input_size_px=None,
        )
        self.oom_above = oom_above
        self.check = check
        self.calls: list[list[int]] = []
        self.thresholds: list[float] = []
        self.threads: set[str] = set()
        self.raises: list[Exception] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        ids = [caller_of(image) for image in images]
        self.calls.append(ids)
        self.thresholds.append(threshold)
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        if self.check is not None:
            self.check(images)
        if self.gate is not None:
            self.gate.wait(RESULT_TIMEOUT_S)
        if self.raises:
            raise self.raises.pop(0)
        if self.oom_above is not None and len(images) > self.oom_above:
            raise DeviceOutOfMemoryError(f"cuda out of memory on a batch of {len(images)} frames")
        return [_echo(caller, threshold) for caller in ids]


def _echo(caller: int, threshold: float) -> Detections:
    scores = np.array([s for s in SCORES if s >= threshold], np.float32)
    boxes = np.tile(np.array([caller, 0, caller + 1, 1], np.float32), (len(scores), 1))
    return Detections.from_arrays(boxes, scores, np.full(len(scores), caller, np.int64))


def sample(metric: str, batcher: DynamicBatcher) -> float:
    return REGISTRY.get_sample_value(metric, {"model": batcher.name}) or 0.0


def error_of(call: Callable[[], object]) -> PreannotateError:
    with pytest.raises(PreannotateError) as info:
        call()
    return info.value


def failure(future: Future[Detections]) -> PreannotateError:
    """The error a future failed with (it must fail within RESULT_TIMEOUT_S)."""
    return error_of(lambda: future.result(RESULT_TIMEOUT_S))


@pytest.fixture
def make_batcher() -> Iterator[Callable[..., DynamicBatcher]]:
    """Started batchers with unique metric names, closed after the test."""
    made: list[DynamicBatcher] = []

    def make(detector: Detector, *, max_batch_size: int = 8, max_wait_ms: float = 0.0) -> DynamicBatcher:
        name = f"test-{uuid.uuid4().hex[:8]}"
        batcher = DynamicBatcher(detector, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, name=name)
        batcher.start()
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close(timeout_s=5.0)


def test_concurrent_callers_are_merged_into_one_model_call(make_batcher: Callable[..., DynamicBatcher]) -> None:
    def merged(images: Sequence[RGBImage]) -> None:
        assert len(images) > 1, "concurrent requests were not merged"

    callers = 6
    fake = FakeDetector(check=merged)
    batcher = make_batcher(fake, max_batch_size=callers, max_wait_ms=LONG_WAIT_MS)
    barrier = threading.Barrier(callers)
    results: dict[int, Detections] = {}

    def call(caller: int) -> None:
        barrier.wait()
        results[caller] = batcher.submit(image_of(caller), threshold=0.0).result(RESULT_TIMEOUT_S)

    threads = [threading.Thread(target=call, args=(caller,)) for caller in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RESULT_TIMEOUT_S)

    assert [sorted(ids) for ids in fake.calls] == [list(range(callers))]
    assert fake.threads == {f"batcher-{batcher.name}"}
    for caller in range(callers):
        assert len(results[caller]) == len(SCORES)
        assert set(results[caller].class_id.tolist()) == {caller}


def test_full_batch_runs_without_waiting_for_max_wait(make_batcher: Callable[..., DynamicBatcher]) -> None:
    fake = FakeDetector()
    batcher = make_batcher(fake, max_batch_size=4, max_wait_ms=LONG_WAIT_MS)
    started = time.monotonic()
    futures = [batcher.submit(image_of(i), threshold=0.5) for i in range(4)]
    for future in futures:
        future.result(RESULT_TIMEOUT_S)
    assert time.monotonic() - started < LONG_WAIT_MS / 1000 / 2
    assert fake.calls == [[0, 1, 2, 3]]


def test_partial_batch_runs_after_max_wait(make_batcher: Callable[..., DynamicBatcher]) -> None:
    fake = FakeDetector()
    batcher = make_batcher(fake, max_batch_size=8, max_wait_ms=100)
    started = time.monotonic()
    futures = [batcher.submit(image_of(i), threshold=0.5) for i in range(2)]
    for future in futures:
        future.result(RESULT_TIMEOUT_S)
    elapsed = time.monotonic() - started
    assert 0.1 <= elapsed < 5.0
    assert fake.calls == [[0, 1]]


def test_batch_of_one_without_wait_adds_no_latency(make_batcher: Callable[..., DynamicBatcher]) -> None:
    fake = FakeDetector()
    batcher = make_batcher(fake, max_batch_size=1, max_wait_ms=0)
    started = time.monotonic()
    for caller in range(20):
        (dets,) = batcher.detect([image_of(caller)], threshold=0.5)
        assert set(dets.class_id.tolist()) == {caller}
    assert (time.monotonic() - started) / 20 < 0.05  # a thread hand-off, not a timer
    assert fake.calls == [[caller] for caller in range(20)]


def test_expired_requests_never_reach_the_model(make_batcher: Callable[..., DynamicBatcher]) -> None:
    # Given a model busy on request 0
    fake = FakeDetector()
    fake.gate = threading.Event()
    batcher = make_batcher(fake, max_batch_size=8)
    busy = batcher.submit(image_of(0), threshold=0.5)
    assert fake.entered.wait(RESULT_TIMEOUT_S)
    # When requests queue behind it, two of them with deadlines that pass before it is free
    soon = batcher.submit(image_of(1), threshold=0.5, deadline=time.monotonic() + 0.05)
    past = batcher.submit(image_of(2), threshold=0.5, deadline=time.monotonic() - 1.0)
    patient = batcher.submit(image_of(3), threshold=0.5, deadline=time.monotonic() + 60.0)
    time.sleep(0.2)
    fake.gate.set()
    # Then only the live ones run; the others fail with DEADLINE_EXCEEDED
    busy.result(RESULT_TIMEOUT_S)
    patient.result(RESULT_TIMEOUT_S)
    for future in (soon, past):
        assert failure(future).code is ErrorCode.DEADLINE_EXCEEDED
    assert fake.calls == [[0], [3]]
    assert sample("preannotate_deadline_exceeded_total", batcher) == 2


def test_mixed_thresholds_share_a_batch_and_are_filtered_per_request(
    make_batcher: Callable[..., DynamicBatcher],
) -> None:
    fake = FakeDetector()
    batcher = make_batcher(fake, max_batch_size=3, max_wait_ms=LONG_WAIT_MS)
    thresholds = {0: 0.6, 1: 0.2, 2: 0.8}
    futures = {caller: batcher.submit(image_of(caller), threshold=t) for caller, t in thresholds.items()}
    results = {caller: future.result(RESULT_TIMEOUT_S) for caller, future in futures.items()}

    assert fake.calls == [[0, 1, 2]]
    assert fake.thresholds == [0.2]
    for caller, threshold in thresholds.items():
        expected = [s for s in SCORES if s >= threshold]
        np.testing.assert_allclose(results[caller].confidence, expected)
        assert set(results[caller].class_id.tolist()) == {caller}


def test_oom_halves_the_batch_until_it_fits_and_lowers_the_ceiling(
    make_batcher: Callable[..., DynamicBatcher],
) -> None:
    fake = FakeDetector(oom_above=4)
    batcher = make_batcher(fake, max_batch_size=16, max_wait_ms=LONG_WAIT_MS)

    results = batcher.detect([image_of(i) for i in range(16)], threshold=0.5)

    # After 8 ran out, the rest goes at the lowered ceiling: no second batch of 8 to run out again.
    assert [len(call) for call in fake.calls] == [16, 8, 4, 4, 4, 4]
    assert [set(dets.class_id.tolist()) for dets in results] == [{i} for i in range(16)]
    assert batcher.max_batch_size == 4
    assert sample("preannotate_device_oom_total", batcher) == 2
    # Later batches start at the lowered ceiling.
    fake.calls.clear()
    batcher.detect([image_of(i) for i in range(8)], threshold=0.5)
    assert [len(call) for call in fake.calls] == [4, 4]


def test_a_frame_that_alone_does_not_fit_fails_with_device_oom(make_batcher: Callable[..., DynamicBatcher]) -> None:
    fake = FakeDetector(oom_above=0)
    batcher = make_batcher(fake, max_batch_size=2, max_wait_ms=LONG_WAIT_MS)
    futures = [batcher.submit(image_of(i), threshold=0.5) for i in range(2)]
    for future in futures:
        assert failure(future).code is ErrorCode.DEVICE_OUT_OF_MEMORY
    assert fake.calls == [[0, 1], [0], [1]]
    assert batcher.max_batch_size == 1
    assert sample("preannotate_device_oom_total", batcher) == 3


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (RuntimeError("secret internal detail"), ErrorCode.INTERNAL),
        (ModelLoadError("graph has no output"), ErrorCode.MODEL_LOAD_FAILED),
        (PreannotateError(ErrorCode.CORRUPT_MEDIA, "bad frame"), ErrorCode.CORRUPT_MEDIA),
    ],
)
def test_a_detector_error_fails_only_its_batch(
    make_batcher: Callable[..., DynamicBatcher],
    caplog: pytest.LogCaptureFixture,
    raised: Exception,
    code: ErrorCode,
) -> None:
    fake = FakeDetector()
    fake.raises.append(raised)
    batcher = make_batcher(fake, max_batch_size=2, max_wait_ms=LONG_WAIT_MS)
    with caplog.at_level(logging.ERROR, logger="service.pipeline.batching"):
        failed = [batcher.submit(image_of(i), threshold=0.5) for i in range(2)]
        errors = [failure(future) for future in failed]
    assert [error.code for error in errors] == [code, code]
    if code is ErrorCode.INTERNAL:
        assert all("secret" not in str(error) for error in errors)
        assert any(record.exc_info and "secret" in str(record.exc_info[1]) for record in caplog.records)
    # The loop survived: the next batch works.
    ok = [batcher.submit(image_of(i), threshold=0.5) for i in (2, 3)]
    assert [set(f.result(RESULT_TIMEOUT_S).class_id.tolist()) for f in ok] == [{2}, {3}]


def test_close_fails_queued_work_with_not_ready_and_finishes_the_running_batch() -> None:
    fake = FakeDetector()
    fake.gate = threading.Event()
    batcher = DynamicBatcher(fake, max_batch_size=1, max_wait_ms=0, name=f"test-{uuid.uuid4().hex[:8]}")
    assert error_of(lambda: batcher.submit(image_of(0), threshold=0.5)).code is ErrorCode.NOT_READY
    batcher.start()
    running = batcher.submit(image_of(0), threshold=0.5)
    assert fake.entered.wait(RESULT_TIMEOUT_S)
    queued = batcher.submit(image_of(1), threshold=0.5)

    release = threading.Timer(0.2, fake.gate.set)
    release.start()
    batcher.close(timeout_s=5.0)

    assert set(running.result(RESULT_TIMEOUT_S).class_id.tolist()) == {0}
    assert failure(queued).code is ErrorCode.NOT_READY
    assert error_of(lambda: batcher.submit(image_of(2), threshold=0.5)).code is ErrorCode.NOT_READY
    assert fake.calls == [[0]]


def test_cli_run_splits_out_of_memory_batches_and_writes_every_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a model that runs out of device memory above 2 frames, and 5 photos
    fake = FakeDetector(oom_above=2)
    fake.info = dataclasses.replace(fake.info, class_names=tuple(f"caller{i}" for i in range(8)))
    monkeypatch.setattr(run_command, "load_detector", lambda spec, options: fake)
    paths = []
    for caller in range(5):
        paths.append(tmp_path / f"photo{caller}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(image_of(caller, 16, 16), cv2.COLOR_RGB2BGR))
    out = tmp_path / "preds.json"

    # When the CLI runs them (the detector's own batch size, 64, is the starting ceiling)
    rc = cli.main(["run", *map(str, paths), "--threshold", "0.5", "--out", str(out), "-q"])

    # Then it succeeds and every photo has its own detections
    assert rc == 0, capsys.readouterr().err
    coco = json.loads(out.read_text())
    assert [image["file_name"] for image in coco["images"]] == [path.name for path in paths]
    for caller, image in enumerate(coco["images"]):
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(boxes) == 3  # the scores 0.5, 0.7, 0.9
        assert {int(box[0]) for box in boxes} == {caller}
    # Warm-up ran out at 64 and stopped there; the run split 5 -> 3 -> 2 and stayed at 2.
    assert fake.calls == [[0], [0] * 64, [0, 1, 2, 3, 4], [0, 1, 2], [0, 1], [2, 3], [4]]


def test_detect_async_merges_concurrent_coroutines(make_batcher: Callable[..., DynamicBatcher]) -> None:
    fake = FakeDetector()
    batcher = make_batcher(fake, max_batch_size=4, max_wait_ms=LONG_WAIT_MS)

    async def main() -> list[Detections]:
        calls = [batcher.detect_async(image_of(i), threshold=0.5, timeout_s=RESULT_TIMEOUT_S) for i in range(4)]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert [sorted(call) for call in fake.calls] == [[0, 1, 2, 3]]
    assert [set(dets.class_id.tolist()) for dets in results] == [{i} for i in range(4)]


def test_detect_async_timeout_is_deadline_exceeded_and_the_frame_never_runs(
    make_batcher: Callable[..., DynamicBatcher],
) -> None:
    fake = FakeDetector()
    fake.gate = threading.Event()
    batcher = make_batcher(fake, max_batch_size=1)
    busy = batcher.submit(image_of(0), threshold=0.5)
    assert fake.entered.wait(RESULT_TIMEOUT_S)

    coroutine = batcher.detect_async(image_of(1), threshold=0.5, timeout_s=0.05)
    assert error_of(lambda: asyncio.run(coroutine)).code is ErrorCode.DEADLINE_EXCEEDED
    fake.gate.set()
    busy.result(RESULT_TIMEOUT_S)
    batcher.detect([image_of(2)], threshold=0.5)  # runs after the cancelled frame would have
    assert fake.calls == [[0], [2]]
    assert sample("preannotate_deadline_exceeded_total", batcher) == 1


def test_detect_one_opens_off_the_loop_and_maps_boxes_to_source_pixels(
    make_batcher: Callable[..., DynamicBatcher],
) -> None:
    fake = FakeDetector()
    fake.info = dataclasses.replace(fake.info, input_size_px=32, keeps_aspect=True)
    batcher = make_batcher(fake)
    opened: list[tuple[SamplingOptions, str]] = []

    def open_frame(sampling: SamplingOptions) -> Frame:
        opened.append((sampling, threading.current_thread().name))
        return Frame(info=make_info(width=12, height=8), image=image_of(0))  # decoded at half size

    async def main() -> tuple[FrameResult, str]:
        result = await detect_one(open_frame, batcher, threshold=0.5, timeout_s=RESULT_TIMEOUT_S)
        return result, threading.current_thread().name

    result, loop_thread = asyncio.run(main())

    ((sampling, open_thread),) = opened
    assert open_thread != loop_thread
    assert (sampling.max_frames, sampling.detector_size_px) == (1, 32)  # one frame, sized for the detector
    assert result.detections.xyxy.tolist() == [[0, 0, 2, 2]] * 3  # echo box (0, 0, 1, 1) in 12x8 pixels
    assert result.info == make_info(width=12, height=8)


def test_detect_one_filters_classes_and_refuses_unknown_ones_before_opening(
    make_batcher: Callable[..., DynamicBatcher],
) -> None:
    batcher = make_batcher(FakeDetector())
    opened: list[int] = []

    def open_frame(caller: int) -> Callable[[SamplingOptions], Frame]:
        def opener(_: SamplingOptions) -> Frame:
            opened.append(caller)
            return Frame(info=make_info(width=6, height=4), image=image_of(caller))

        return opener

    def run(caller: int, classes: list[str]) -> FrameResult:
        return asyncio.run(detect_one(open_frame(caller), batcher, threshold=0.5, classes=classes, timeout_s=1.0))

    assert len(run(0, ["caller"]).detections) == 3  # class 0 is "caller"
    assert len(run(1, ["caller"]).detections) == 0  # class 1 has no name in the model: filtered out
    assert error_of(lambda: run(2, ["car"])).code is ErrorCode.INVALID_ARGUMENT
    assert opened == [0, 1]


def test_detect_one_keeps_the_batchers_deadline(make_batcher: Callable[..., DynamicBatcher]) -> None:
    fake = FakeDetector()
    fake.gate = threading.Event()
    batcher = make_batcher(fake, max_batch_size=1)
    busy = batcher.submit(image_of(0), threshold=0.5)
    assert fake.entered.wait(RESULT_TIMEOUT_S)

    def open_frame(_: SamplingOptions) -> Frame:
        return Frame(info=make_info(width=6, height=4), image=image_of(1))

    coroutine = detect_one(open_frame, batcher, threshold=0.5, timeout_s=0.05)
    assert error_of(lambda: asyncio.run(coroutine)).code is ErrorCode.DEADLINE_EXCEEDED
    fake.gate.set()
    busy.result(RESULT_TIMEOUT_S)
    batcher.detect([image_of(2)], threshold=0.5)
    assert fake.calls == [[0], [2]]  # the late frame was dropped, never run


def test_metrics_are_recorded_per_model_call(make_batcher: Callable[..., DynamicBatcher]) -> None:
    batcher = make_batcher(FakeDetector(), max_batch_size=3, max_wait_ms=LONG_WAIT_MS)
    batcher.detect([image_of(i) for i in range(3)], threshold=0.5)

    assert sample("preannotate_batch_size_count", batcher) == 1
    assert sample("preannotate_batch_size_sum", batcher) == 3
    assert sample("preannotate_frames_processed_total", batcher) == 3
    assert sample("preannotate_inference_seconds_count", batcher) == 1
    assert sample("preannotate_queue_wait_seconds_count", batcher) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_size": 0, "max_wait_ms": 0.0},
        {"max_batch_size": True, "max_wait_ms": 0.0},
        {"max_batch_size": 2.5, "max_wait_ms": 0.0},
        {"max_batch_size": 1, "max_wait_ms": -1.0},
        {"max_batch_size": 1, "max_wait_ms": float("nan")},
        {"max_batch_size": 1, "max_wait_ms": float("inf")},
        {"max_batch_size": 1, "max_wait_ms": 0.0, "name": " "},
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"max_batch_size|max_wait_ms|name"):
        DynamicBatcher(FakeDetector(), **kwargs)  # type: ignore[arg-type]


def test_bad_input_is_rejected_at_submit_not_in_a_shared_batch(make_batcher: Callable[..., DynamicBatcher]) -> None:
    fake = FakeDetector()
    batcher = make_batcher(fake)
    with pytest.raises(ValueError, match="threshold"):
        batcher.submit(image_of(0), threshold=1.5)
    with pytest.raises(ValueError, match="uint8 RGB"):
        batcher.submit(np.zeros((4, 4), np.uint8), threshold=0.5)
    with pytest.raises(RuntimeError, match="already started"):
        batcher.start()
    assert fake.calls == []


def _rgb(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image


def test_centerface_gives_the_same_detections_through_the_batcher(
    make_batcher: Callable[..., DynamicBatcher],
) -> None:
    detector = load_detector("builtin:centerface", DetectorOptions(device="cpu", batch_size=4))
    try:
        photos = [skimage.data.astronaut(), _rgb(skimage.data.camera()), skimage.data.coffee()]
        thresholds = [0.5, 0.3, 0.4]
        direct = [detector.detect([p], threshold=t)[0] for p, t in zip(photos, thresholds, strict=True)]
        batcher = make_batcher(detector, max_batch_size=3, max_wait_ms=LONG_WAIT_MS)

        futures = [batcher.submit(p, threshold=t) for p, t in zip(photos, thresholds, strict=True)]
        batched = [future.result(RESULT_TIMEOUT_S * 3) for future in futures]

        assert sum(len(dets) for dets in direct) > 0
        for want, got in zip(direct, batched, strict=True):
            assert len(got) == len(want)
            np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-2)
            np.testing.assert_allclose(got.confidence, want.confidence, atol=1e-5)
            np.testing.assert_array_equal(got.class_id, want.class_id)
        assert sample("preannotate_batch_size_sum", batcher) == 3
    finally:
        detector.close()
