"""The feed benchmark's null model is a YOLO export the loader takes, and ``preannotate bench feed`` is wired."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.bench_feed import NULL_INPUT_PX, null_yolo_model
from models.base import DetectorOptions
from models.registry import load_detector
from service.cli import build_parser
from service.commands.bench import BENCHMARKS


def test_null_model_loads_as_yolo_and_finds_nothing(tmp_path: Path) -> None:
    path = null_yolo_model(tmp_path / "null.onnx")
    detector = load_detector(f"onnx:{path}", DetectorOptions(device="cpu", batch_size=2))
    try:
        assert detector.info.input_size_px == NULL_INPUT_PX
        assert detector.info.class_names == ("object",)
        frames = [np.full((360, 640, 3), 200, np.uint8), np.zeros((720, 1280, 3), np.uint8)]
        assert [len(d) for d in detector.detect(frames, threshold=0.25)] == [0, 0]
    finally:
        detector.close()


def test_bench_feed_is_a_benchmark() -> None:
    assert "feed" in BENCHMARKS
    args = build_parser().parse_args(["bench", "feed", "--quick"])
    assert (args.name, args.extra) == ("feed", ["--quick"])
