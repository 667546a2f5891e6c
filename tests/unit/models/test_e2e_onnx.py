"""End-to-end ONNX layouts on tiny constant graphs: RT-DETR deploy (boxes/scores/labels) and DETR logits/pred_boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from models.base import DetectorOptions
from models.detectors.e2e_onnx import pixel_normalization
from models.errors import InvalidModelError, ModelLoadError
from models.registry import load_detector
from service.errors import ErrorCode, from_model_error
from tests.unit.models import onnx_graphs

FRAMES_HW = [(480, 640), (300, 200), (480, 640)]


def _frames(value: int = 0) -> list[NDArray[np.uint8]]:
    return [np.full((h, w, 3), value, np.uint8) for h, w in FRAMES_HW]


def _scaled(xyxy_norm: tuple[float, ...], height: int, width: int) -> list[float]:
    x1, y1, x2, y2 = xyxy_norm
    return [min(x1 * width, width), min(y1 * height, height), min(x2 * width, width), min(y2 * height, height)]


# --- RT-DETR deploy export: boxes are computed in the graph from orig_target_sizes (w, h) ---

# Per query: normalized xyxy, score, label. Labels are COCO category ids, as with remap_mscoco_category.
_QUERIES = [
    ((0.1, 0.2, 0.3, 0.4), 0.6, 3),
    ((0.5, 0.5, 1.2, 0.9), 0.9, 1),  # reaches past the right edge -> clipped
    ((0.0, 0.0, 0.5, 0.5), 0.2, 18),  # below the threshold
    ((0.2, 0.2, 0.4, 0.4), 0.95, 99),  # a label with no name -> dropped
    ((0.3, 0.3, 0.6, 0.6), 0.5, 18),  # exactly at the threshold -> kept
]
_COCO_NAMES = {"1": "person", "3": "car", "18": "dog"}


def _rtdetr(tmp_path: Path, *, batch: int | None = None, names: dict[str, str] | None = _COCO_NAMES) -> Path:
    model = onnx_graphs.rtdetr_deploy_model(
        np.array([q[0] for q in _QUERIES], np.float32),
        np.array([q[1] for q in _QUERIES], np.float32),
        np.array([q[2] for q in _QUERIES], np.int64),
        batch=batch,
    )
    path = onnx_graphs.save(model, tmp_path / "rtdetr_r18.onnx")
    if names is not None:
        (tmp_path / "rtdetr_r18.names.json").write_text(json.dumps(names))
    return path


@pytest.mark.parametrize(
    ("batch", "options"),
    [
        pytest.param(None, DetectorOptions(batch_size=3), id="dynamic-batch"),
        pytest.param(1, DetectorOptions(), id="fixed-batch-1"),
    ],
)
def test_rtdetr_deploy_layout(tmp_path: Path, batch: int | None, options: DetectorOptions) -> None:
    # Given an export whose boxes are scaled by the orig_target_sizes it is fed
    detector = load_detector(f"onnx:{_rtdetr(tmp_path, batch=batch)}", options)
    # When frames of two sizes go through
    results = detector.detect(_frames(), threshold=0.5)
    # Then boxes land in each frame's pixels (so w and h were fed in that order), best first,
    # with the unnamed label dropped and the sparse COCO ids kept as class ids
    assert detector.info.class_names[1] == "person"
    assert detector.info.class_names[18] == "dog"
    assert detector.info.class_names[2] == "class_2"
    assert len(detector.info.class_names) == 19
    for dets, (h, w) in zip(results, FRAMES_HW, strict=True):
        np.testing.assert_allclose(
            dets.xyxy,
            [_scaled(_QUERIES[i][0], h, w) for i in (1, 0, 4)],
            rtol=1e-6,
        )
        np.testing.assert_allclose(dets.confidence, [0.9, 0.6, 0.5], rtol=1e-6)
        np.testing.assert_array_equal(dets.class_id, [1, 3, 18])


def test_rtdetr_deploy_layout_needs_class_names(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"rtdetr_r18\.names\.json"):
        load_detector(f"onnx:{_rtdetr(tmp_path, names=None)}")


# --- HF/optimum DETR family: logits [B, Q, C] + normalized cxcywh pred_boxes ---

_PRED_BOXES = np.array(
    [[0.5, 0.5, 0.5, 0.5], [0.2, 0.3, 0.2, 0.2], [0.5, 0.5, 1.0, 1.0], [0.95, 0.5, 0.2, 0.2]], np.float32
)
_XYXY_NORM = [(0.25, 0.25, 0.75, 0.75), (0.1, 0.2, 0.3, 0.4), (0.0, 0.0, 1.0, 1.0), (0.85, 0.4, 1.05, 0.6)]


def _sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def _detr_dir(
    tmp_path: Path,
    logits: NDArray[np.float32],
    *,
    config: dict[str, object] | None,
    preprocessor: dict[str, object] | None,
    fixed_hw: bool = True,
) -> Path:
    size = 640 if fixed_hw else None
    model = onnx_graphs.detr_logits_model(logits, _PRED_BOXES, height_px=size, width_px=size)
    path = onnx_graphs.save(model, tmp_path / "model.onnx")
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    if preprocessor is not None:
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return path


_SIGMOID_LOGITS = np.array(
    [
        [-1.5, -5.0, -5.0],  # query 0, class 0: the graph adds the mean input value to this logit
        [-5.0, 2.0, 1.0],  # query 1: two classes pass -> two detections from one query
        [-5.0, -5.0, -1.0],  # query 2: 0.27, below the threshold
        [-5.0, 3.0, -5.0],  # query 3: box reaches past the right edge -> clipped
    ],
    np.float32,
)
_RTDETR_CONFIG = {"model_type": "rt_detr", "id2label": {"0": "cat", "1": "dog", "2": "car"}}


@pytest.mark.parametrize(
    ("preprocessor", "mean_input"),
    [
        pytest.param({}, 1.0, id="empty-preprocessor-config"),
        pytest.param({"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": False}, 1.0, id="rt-detr"),
        pytest.param(
            {"do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}, 2.0, id="mean-std"
        ),
    ],
)
@pytest.mark.parametrize("fixed_hw", [True, False], ids=["fixed-640", "dynamic-hw"])
def test_logits_sigmoid_layout(
    tmp_path: Path, preprocessor: dict[str, object] | None, mean_input: float, fixed_hw: bool
) -> None:
    # Given an RT-DETR-style export (sigmoid scores) and a white frame
    path = _detr_dir(tmp_path, _SIGMOID_LOGITS, config=_RTDETR_CONFIG, preprocessor=preprocessor, fixed_hw=fixed_hw)
    detector = load_detector(f"onnx:{path}", DetectorOptions(batch_size=2))
    results = detector.detect(_frames(255), threshold=0.3)
    # Then every (query, class) pair over the threshold is a detection, best first; query 0's score
    # shows which pixel normalization was applied (white = 1.0 in [0, 1], 2.0 after mean/std)
    assert detector.info.class_names == ("cat", "dog", "car")
    expected = sorted(
        [
            (_sigmoid(3.0), 3, 1),
            (_sigmoid(2.0), 1, 1),
            (_sigmoid(1.0), 1, 2),
            (_sigmoid(-1.5 + mean_input), 0, 0),
        ],
        reverse=True,
    )
    for dets, (h, w) in zip(results, FRAMES_HW, strict=True):
        np.testing.assert_allclose(dets.confidence, [e[0] for e in expected], rtol=1e-5)
        np.testing.assert_array_equal(dets.class_id, [e[2] for e in expected])
        np.testing.assert_allclose(dets.xyxy, [_scaled(_XYXY_NORM[e[1]], h, w) for e in expected], rtol=1e-5)


def test_logits_softmax_layout_for_detr(tmp_path: Path) -> None:
    # Given a DETR export: softmax over 3 classes + a trailing "no object" class
    logits = np.array([[3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    config = {"model_type": "detr", "id2label": {"0": "cat", "1": "dog", "2": "car"}}
    path = _detr_dir(tmp_path, logits.astype(np.float32), config=config, preprocessor={})
    detector = load_detector(f"onnx:{path}")
    (dets,) = detector.detect([np.zeros((480, 640, 3), np.uint8)], threshold=0.3)
    # Then "no object" is never a class, and query 1 (mostly "no object") is dropped
    assert detector.info.class_names == ("cat", "dog", "car")
    np.testing.assert_allclose(dets.confidence, [np.e**3 / (np.e**3 + 3), np.e**2 / (np.e**2 + 3)], rtol=1e-5)
    np.testing.assert_array_equal(dets.class_id, [0, 1])
    np.testing.assert_allclose(dets.xyxy, [_scaled(_XYXY_NORM[q], 480, 640) for q in (0, 2)], rtol=1e-5)


@pytest.mark.parametrize(
    ("config", "preprocessor", "missing"),
    [
        pytest.param(None, None, "config.json and preprocessor_config.json", id="neither"),
        pytest.param(_RTDETR_CONFIG, None, "preprocessor_config.json", id="no-preprocessor-config"),
        pytest.param(None, {}, "config.json", id="no-config"),
    ],
)
def test_a_logits_export_without_its_sidecars_is_refused(
    tmp_path: Path, config: dict[str, object] | None, preprocessor: dict[str, object] | None, missing: str
) -> None:
    # Given a DETR-family export whose HF sidecars were not copied beside it
    path = _detr_dir(tmp_path, _SIGMOID_LOGITS, config=config, preprocessor=preprocessor)
    # Then it is refused, naming what is missing and how to fix it, rather than run with guessed scores
    with pytest.raises(InvalidModelError, match="logits/pred_boxes") as caught:
        load_detector(f"onnx:{path}")
    message = str(caught.value)
    assert f"needs {missing} beside it in {tmp_path}" in message
    assert "optimum" in message
    assert from_model_error(caught.value).code is ErrorCode.INVALID_MODEL


def test_a_config_without_model_type_is_refused(tmp_path: Path) -> None:
    path = _detr_dir(tmp_path, _SIGMOID_LOGITS, config={"id2label": {"0": "cat"}}, preprocessor={})
    with pytest.raises(InvalidModelError, match=r'config\.json: no "model_type"'):
        load_detector(f"onnx:{path}")


def test_hand_written_sidecars_are_the_explicit_opt_in(tmp_path: Path) -> None:
    # Given the two minimal files the refusal suggests, for a model that came without them
    path = _detr_dir(tmp_path, _SIGMOID_LOGITS, config={"model_type": "rt_detr"}, preprocessor={"do_normalize": False})
    # Then it loads, with class names from the output width (no id2label given)
    assert load_detector(f"onnx:{path}").info.class_names == ("class_0", "class_1", "class_2")


@pytest.mark.parametrize(
    ("config", "pixel", "expected"),
    [
        (None, 255, 1.0),
        ({}, 51, 0.2),
        ({"do_rescale": False}, 7, 7.0),
        ({"do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}, 0, -1.0),
        ({"do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}, 255, None),
    ],
)
def test_pixel_normalization(config: dict[str, object] | None, pixel: int, expected: float | None) -> None:
    scale, offset = pixel_normalization(config)
    got = pixel * scale + offset
    assert scale.shape == offset.shape == (3, 1, 1)
    if expected is None:  # ImageNet mean/std, per channel
        np.testing.assert_allclose(
            got.ravel(), (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-5
        )
    else:
        np.testing.assert_allclose(got.ravel(), [expected] * 3, rtol=1e-5)
