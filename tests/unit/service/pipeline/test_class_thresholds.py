"""Per-class thresholds in the infer stage: the detector is asked at the least threshold, and each row is kept at
its class's (the global one for the rest), in batch runs (``run_flow``) and interactive ones (``detect_one``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from models.base import Detector
from models.types import Detections, ModelInfo, RGBImage
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.pipeline.batching import DynamicBatcher
from service.pipeline.flow import FlowOptions, detect_one, run_flow
from service.pipeline.frames import Frame
from service.pipeline.media import ItemSpec, SlotSpec
from service.pipeline.options import SamplingOptions
from service.pipeline.run import detection_filter
from tests.unit.service.test_batching import image_of, make_info
from tests.unit.service.test_flow import Opener

CLASSES = ("car", "person", "dog")
SCORES = (0.2, 0.35, 0.5, 0.7, 0.9)


class ScoresDetector(Detector):
    """One box per class per score in SCORES that passes the threshold asked; records the thresholds asked."""

    def __init__(self) -> None:
        self.info = ModelInfo(
            spec="fake:scores",
            name="scores",
            version="1",
            class_names=CLASSES,
            runtime="fake",
            device="cpu",
            batch_size=8,
            input_size_px=None,
        )
        self.asked: list[float] = []

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        self.asked.append(threshold)
        rows = [(c, s) for c in range(len(CLASSES)) for s in SCORES if s >= threshold]
        boxes = np.tile(np.array([0, 0, 2, 2], np.float32), (len(rows), 1))
        scores = np.array([s for _, s in rows], np.float32)
        ids = np.array([c for c, _ in rows], np.int64)
        return [Detections.from_arrays(boxes, scores, ids) for _ in images]


def kept(detections: Detections) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for class_id, score in zip(detections.class_id.tolist(), detections.confidence.tolist(), strict=True):
        out.setdefault(CLASSES[class_id], []).append(round(score, 2))
    return out


def run_one(options: FlowOptions, detector: ScoresDetector) -> list[Detections]:
    items = [ItemSpec("i0", (SlotSpec("2", (Path("0"),)),))]
    (output,) = run_flow(items, detector, options, open_slot=Opener())
    return [frame.detections for frame in output.frames]


def test_each_class_is_kept_at_its_threshold_and_the_rest_at_the_global_one() -> None:
    detector = ScoresDetector()
    options = FlowOptions(threshold=0.5, class_thresholds={"car": 0.3, "person": 0.8})
    frames = run_one(options, detector)
    assert detector.asked == [pytest.approx(0.3, abs=2e-5)]  # the least of all, so car's 0.35 reaches the filter
    assert [kept(d) for d in frames] == [{"car": [0.35, 0.5, 0.7, 0.9], "person": [0.9], "dog": [0.5, 0.7, 0.9]}] * 2


def test_a_class_threshold_above_the_global_one_asks_at_the_global_one() -> None:
    detector = ScoresDetector()
    (frame, _) = run_one(FlowOptions(threshold=0.3, class_thresholds={"dog": 0.75}), detector)
    assert detector.asked == [pytest.approx(0.3, abs=2e-5)]
    assert kept(frame) == {"car": [0.35, 0.5, 0.7, 0.9], "person": [0.35, 0.5, 0.7, 0.9], "dog": [0.9]}


def test_class_thresholds_and_the_class_filter_apply_together() -> None:
    (frame, _) = run_one(FlowOptions(threshold=0.6, classes=["car"], class_thresholds={"car": 0.4}), ScoresDetector())
    assert kept(frame) == {"car": [0.5, 0.7, 0.9]}


def test_an_unknown_class_threshold_is_refused_before_anything_is_opened() -> None:
    opener = Opener()
    items = [ItemSpec("i0", (SlotSpec("2", (Path("0"),)),))]
    options = FlowOptions(threshold=0.5, class_thresholds={"truck": 0.4})
    with pytest.raises(PreannotateError) as info:
        list(run_flow(items, ScoresDetector(), options, open_slot=opener))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "truck" in str(info.value)
    assert "the model has: car" in str(info.value)
    assert opener.readers == []


def test_flow_options_refuse_a_class_threshold_outside_0_1() -> None:
    with pytest.raises(ValueError, match="car"):
        FlowOptions(threshold=0.5, class_thresholds={"car": 1.5})


def test_settings_pass_class_thresholds_to_the_flow() -> None:
    options = Settings().flow_options(threshold=0.5, class_thresholds={"dog": 0.2})
    assert options.class_thresholds == {"dog": 0.2}


def test_detect_one_applies_class_thresholds() -> None:
    detector = ScoresDetector()
    batcher = DynamicBatcher(detector, max_batch_size=4, max_wait_ms=0.0, name=f"test-{uuid.uuid4().hex[:8]}")
    batcher.start()
    try:

        def open_frame(_: SamplingOptions) -> Frame:
            return Frame(info=make_info(width=6, height=4), image=image_of(0))

        result = asyncio.run(
            detect_one(open_frame, batcher, threshold=0.6, class_thresholds={"person": 0.2}, timeout_s=10.0)
        )
    finally:
        batcher.close(timeout_s=5.0)
    assert detector.asked == [pytest.approx(0.2, abs=2e-5)]
    assert kept(result.detections) == {"car": [0.7, 0.9], "person": [0.2, 0.35, 0.5, 0.7, 0.9], "dog": [0.7, 0.9]}


def test_a_class_threshold_compares_scores_as_they_are_written() -> None:
    """Calibrated on written scores (5 decimals): a box whose written score equals its class's threshold is kept,
    however its unwritten digits fall (0.929106 is written 0.92911); one written below it is not."""
    keep = detection_filter(CLASSES, threshold=0.99, class_thresholds={"car": 0.92911})
    assert keep.threshold <= 0.929106
    rows = Detections.from_arrays(np.zeros((3, 4)), np.array([0.929106, 0.929104, 0.95]), np.array([0, 0, 1]))
    assert keep.keep(rows).confidence.tolist() == [pytest.approx(0.929106)]
