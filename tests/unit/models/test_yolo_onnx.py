"""The Ultralytics YOLOv8 ONNX decoder on tiny constant graphs: letterbox undo, threshold, NMS, batching, names."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from models.base import DetectorOptions
from models.registry import load_detector
from models.types import Detections
from tests.unit.models import onnx_graphs

NAMES = {0: "person", 1: "car", 2: "dog"}
NAMES_LITERAL = "{0: 'person', 1: 'car', 2: 'dog'}"  # how Ultralytics writes metadata `names`

# Candidates in letterboxed 640x640 input pixels: (x1, y1, x2, y2, class, score).
_BOXES = [
    (100, 180, 200, 380, 0, 0.9),  # A: person
    (105, 185, 205, 385, 0, 0.8),  # B: person, IoU 0.86 with A -> suppressed
    (100, 180, 200, 380, 1, 0.7),  # C: car on A -> kept (NMS is per class)
    (250, 40, 300, 140, 0, 0.6),  # F: person reaching into the top pad of landscape frames -> clipped
    (300, 200, 500, 400, 2, 0.3),  # D: dog, between the two thresholds tested
    (400, 100, 460, 160, 0, 0.1),  # E: person below both thresholds
    # Real exports have thousands of candidates, nearly all scoring ~0; a few fillers keep the
    # candidate count away from 6, which would read as the end2end [B, N, 6] layout.
    *[(0, 0, 8, 8, 0, 0.0)] * 4,
]


def _candidates(num_classes: int = 3) -> NDArray[np.float32]:
    """The (4 + nc, N) output: cx, cy, w, h, then per-class scores (others get 0.01)."""
    cols = []
    for x1, y1, x2, y2, cls, score in _BOXES:
        scores = [min(0.01, score)] * num_classes
        scores[cls] = score
        cols.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, *scores])
    return np.array(cols, np.float32).T


# (frame h, w) -> expected (x1, y1, x2, y2, class, score) at threshold 0.25, best first.
EXPECTED = {
    # scale 1, pad y 80
    (480, 640): [
        (100, 100, 200, 300, 0, 0.9),
        (100, 100, 200, 300, 1, 0.7),
        (250, 0, 300, 60, 0, 0.6),
        (300, 120, 500, 320, 2, 0.3),
    ],
    # scale 0.5, pad y 80
    (960, 1280): [
        (200, 200, 400, 600, 0, 0.9),
        (200, 200, 400, 600, 1, 0.7),
        (500, 0, 600, 120, 0, 0.6),
        (600, 240, 1000, 640, 2, 0.3),
    ],
    # scale 1, pad x 170: A and C are cut at the left edge, D at the right
    (640, 300): [
        (0, 180, 30, 380, 0, 0.9),
        (0, 180, 30, 380, 1, 0.7),
        (80, 40, 130, 140, 0, 0.6),
        (130, 200, 300, 400, 2, 0.3),
    ],
}
FRAME_SIZES = list(EXPECTED)


def _frames() -> list[NDArray[np.uint8]]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in FRAME_SIZES]


def _assert_dets(dets: Detections, expected: list[tuple[float, ...]], *, atol_score: float = 1e-6) -> None:
    want = np.array(expected, np.float64).reshape(-1, 6)
    np.testing.assert_allclose(dets.xyxy, want[:, :4], atol=1e-3)
    np.testing.assert_array_equal(dets.class_id, want[:, 4].astype(np.int64))
    np.testing.assert_allclose(dets.confidence, want[:, 5], atol=atol_score)
    assert dets.xyxy.dtype == np.float32


def _write(tmp_path: Path, *, metadata: dict[str, str] | None = None, **graph_kwargs: Any) -> Path:
    """Save the YOLO graph as ``yolo.onnx``; metadata defaults to what Ultralytics embeds."""
    if metadata is None:
        metadata = {"names": NAMES_LITERAL, "imgsz": "[640, 640]", "stride": "32"}
    model = onnx_graphs.yolo_model(_candidates(), metadata=metadata, **graph_kwargs)
    return onnx_graphs.save(model, tmp_path / "yolo.onnx")


@pytest.mark.parametrize(
    ("graph_kwargs", "options", "expected_batch_size", "atol_score"),
    [
        pytest.param({}, DetectorOptions(batch_size=3), 3, 1e-6, id="dynamic-batch-one-run"),
        pytest.param({}, DetectorOptions(), 1, 1e-6, id="dynamic-batch-cpu-default"),
        pytest.param({"batch": 1}, DetectorOptions(batch_size=8), 1, 1e-6, id="fixed-batch-1"),
        pytest.param({"batch": 2}, DetectorOptions(), 2, 1e-6, id="fixed-batch-2-padded"),
        pytest.param({"fp16": True}, DetectorOptions(batch_size=3), 3, 1e-3, id="fp16"),
    ],
)
def test_decodes_exact_boxes_per_frame_in_input_order(
    tmp_path: Path,
    graph_kwargs: dict[str, object],
    options: DetectorOptions,
    expected_batch_size: int,
    atol_score: float,
) -> None:
    # Given a YOLOv8-layout export with known candidates
    detector = load_detector(f"onnx:{_write(tmp_path, **graph_kwargs)}", options)
    # When three frames of different shapes go through in one call
    results = detector.detect(_frames(), threshold=0.25)
    # Then each frame gets its own boxes, mapped back through its own letterbox
    assert detector.info.batch_size == expected_batch_size
    assert len(results) == len(FRAME_SIZES)
    for dets, size in zip(results, FRAME_SIZES, strict=True):
        _assert_dets(dets, EXPECTED[size], atol_score=atol_score)


def test_info_describes_the_export(tmp_path: Path) -> None:
    path = _write(tmp_path, fp16=True)
    info = load_detector(str(path)).info  # a bare .onnx path is an onnx: spec
    assert info.class_names == ("person", "car", "dog")
    assert info.runtime == "onnxruntime"
    assert info.device == "cpu"
    assert info.input_size_px == 640
    assert info.dtype == "float16"
    assert info.name == "yolo"
    assert info.version.startswith("yolo-")


@pytest.mark.parametrize(
    ("threshold", "expected_count"),
    [(0.05, 5), (0.25, 4), (0.5, 3), (0.95, 0)],
)
def test_threshold_is_inclusive_lower_bound(tmp_path: Path, threshold: float, expected_count: int) -> None:
    detector = load_detector(f"onnx:{_write(tmp_path)}")
    (dets,) = detector.detect([np.zeros((480, 640, 3), np.uint8)], threshold=threshold)
    assert len(dets) == expected_count
    assert (dets.confidence >= threshold).all()


def test_dynamic_input_uses_minimum_rectangle_like_ultralytics(tmp_path: Path) -> None:
    # Given an export with symbolic height and width (Ultralytics dynamic=True)
    path = _write(tmp_path, height_px=None, width_px=None)
    detector = load_detector(f"onnx:{path}")
    # When a 480x640 frame is fed, it is padded only to a multiple of 32: no padding at all here
    (dets,) = detector.detect([np.zeros((480, 640, 3), np.uint8)], threshold=0.25)
    # Then boxes map back without the 80 px pad a 640x640 square would have had
    assert detector.info.input_size_px == 640
    np.testing.assert_allclose(dets.xyxy[0], [100, 180, 200, 380], atol=1e-3)


@pytest.mark.parametrize(("requested_px", "expected_px"), [(320, 320), (500, 512), (None, 640)])
def test_dynamic_input_size_from_options(tmp_path: Path, requested_px: int | None, expected_px: int) -> None:
    path = _write(tmp_path, height_px=None, width_px=None)
    assert load_detector(f"onnx:{path}", DetectorOptions(input_size_px=requested_px)).info.input_size_px == expected_px


def test_fixed_input_size_wins_over_options(tmp_path: Path) -> None:
    detector = load_detector(f"onnx:{_write(tmp_path)}", DetectorOptions(input_size_px=320))
    assert detector.info.input_size_px == 640


@pytest.mark.parametrize(
    ("sidecar_name", "content", "expected"),
    [
        pytest.param("yolo.names.json", ["a", "b", "c"], ("a", "b", "c"), id="names-json-list"),
        pytest.param("yolo.names.json", {"0": "a", "2": "c"}, ("a", "class_1", "c"), id="names-json-dict-gap"),
        pytest.param(
            "config.json", {"id2label": {"1": "b", "0": "a", "2": "c"}}, ("a", "b", "c"), id="config-id2label"
        ),
    ],
)
def test_class_names_from_sidecar(
    tmp_path: Path, sidecar_name: str, content: object, expected: tuple[str, ...]
) -> None:
    path = _write(tmp_path, metadata={})
    (tmp_path / sidecar_name).write_text(json.dumps(content))
    assert load_detector(f"onnx:{path}").info.class_names == expected


def test_metadata_names_win_over_sidecar(tmp_path: Path) -> None:
    path = _write(tmp_path)
    (tmp_path / "yolo.names.json").write_text(json.dumps(["x", "y", "z"]))
    assert load_detector(f"onnx:{path}").info.class_names == ("person", "car", "dog")


def test_generic_names_with_warning_when_none_found(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, metadata={})
    with caplog.at_level(logging.WARNING):
        info = load_detector(f"onnx:{path}").info
    assert info.class_names == ("class_0", "class_1", "class_2")
    assert "no class names" in caplog.text


def test_sidecar_is_part_of_the_version(tmp_path: Path) -> None:
    path = _write(tmp_path, metadata={})
    sidecar = tmp_path / "yolo.names.json"
    sidecar.write_text(json.dumps(["a", "b", "c"]))
    first = load_detector(f"onnx:{path}").info.version
    sidecar.write_text(json.dumps(["a", "b", "renamed"]))
    assert load_detector(f"onnx:{path}").info.version != first


def test_end2end_layout(tmp_path: Path) -> None:
    # Given an NMS-free export: rows of (x1, y1, x2, y2, score, class) in letterboxed input pixels
    rows = np.array(
        [[100, 180, 200, 380, 0.9, 0], [300, 200, 500, 400, 0.3, 2], [0, 0, 10, 10, 0.0, 0]],
        np.float32,
    )
    path = onnx_graphs.save(
        onnx_graphs.yolo_model(rows, end2end=True, metadata={"names": NAMES_LITERAL}), tmp_path / "e2e.onnx"
    )
    # When a 480x640 frame is decoded (square letterbox, pad y 80)
    (dets,) = load_detector(f"onnx:{path}").detect([np.zeros((480, 640, 3), np.uint8)], threshold=0.25)
    # Then the rows are only filtered and mapped back, no NMS
    _assert_dets(dets, [(100, 100, 200, 300, 0, 0.9), (300, 120, 500, 320, 2, 0.3)])
