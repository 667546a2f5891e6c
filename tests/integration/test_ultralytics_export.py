"""The ``onnx:`` YOLO decoder against Ultralytics itself, on real Ultralytics YOLOv8 exports.

Skipped unless ``PREANNOTATE_TEST_YOLO_DIR`` names a directory made by
``tests/tools/make_ultralytics_export.py`` (run in a separate venv with Ultralytics; its outputs are
AGPL-derived and never committed). For every export and photo there, the detector must return what
``YOLO(onnx).predict(conf=0.25, iou=0.7)`` returned: the same boxes (within 1 px), scores (within
1e-3) and classes.

Boxes are paired greedily, best score first, with the nearest unpaired box of the same class within
those tolerances. A box left unpaired fails the test unless it is *borderline*, i.e. a float-noise
difference could legitimately flip it: its score within the score tolerance of the threshold, or an
IoU within ``NMS_IOU_SLACK`` of the NMS threshold with a higher-scoring box of its class.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from models.base import DetectorOptions
from models.registry import load_detector
from models.types import Detections

ENV_VAR = "PREANNOTATE_TEST_YOLO_DIR"
BOX_TOL_PX = 1.0
SCORE_TOL = 1e-3
NMS_IOU_SLACK = 0.02

_YOLO_DIR = Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None


def _load_expected() -> dict[str, Any] | None:
    if _YOLO_DIR is None:
        return None
    return json.loads((_YOLO_DIR / "expected.json").read_text())


_EXPECTED = _load_expected()


def _cases() -> list[Any]:
    if _EXPECTED is None:
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"{ENV_VAR} is not set"), id="no-yolo-dir")]
    return [
        pytest.param(export, image, id=f"{export['id']}-{image['id']}")
        for export in _EXPECTED["exports"]
        if not export.get("diagnostic_only")
        for image in export["images"]
    ]


@functools.cache
def _detector(onnx_name: str) -> Any:
    assert _YOLO_DIR is not None
    return load_detector(f"onnx:{_YOLO_DIR / onnx_name}", DetectorOptions(device="cpu", batch_size=1))


def _rgb(png: str) -> NDArray[np.uint8]:
    assert _YOLO_DIR is not None
    bgr = cv2.imread(str(_YOLO_DIR / png), cv2.IMREAD_COLOR)
    assert bgr is not None, png
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _iou(box: NDArray[np.float64], others: NDArray[np.float64]) -> NDArray[np.float64]:
    lt = np.maximum(box[:2], others[:, :2])
    rb = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(others[:, 2:] - others[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def _match(
    exp_xyxy: NDArray[np.float64],
    exp_conf: NDArray[np.float64],
    exp_cls: NDArray[np.int64],
    got_xyxy: NDArray[np.float64],
    got_conf: NDArray[np.float64],
    got_cls: NDArray[np.int64],
) -> list[tuple[int, int]]:
    """Greedy pairs (expected index, detector index): best expected first, nearest same-class box in tolerance."""
    pairs: list[tuple[int, int]] = []
    free = np.ones(len(got_xyxy), bool)
    for i in np.argsort(-exp_conf, kind="stable"):
        dist = np.abs(got_xyxy - exp_xyxy[i]).max(axis=1) if len(got_xyxy) else np.zeros(0)
        ok = free & (got_cls == exp_cls[i]) & (dist <= BOX_TOL_PX) & (np.abs(got_conf - exp_conf[i]) <= SCORE_TOL)
        if ok.any():
            j = int(np.flatnonzero(ok)[np.argmin(dist[ok])])
            free[j] = False
            pairs.append((int(i), j))
    return pairs


def _borderline(
    xyxy: NDArray[np.float64], conf: float, cls: int, pool: list[tuple[NDArray[np.float64], NDArray[np.float64]]]
) -> str | None:
    """Why an unpaired box may legitimately differ, or None. ``pool``: (xyxy, conf) of same-class boxes."""
    threshold = _EXPECTED["conf"] if _EXPECTED else 0.25
    if abs(conf - threshold) <= SCORE_TOL:
        return f"score {conf:.5f} within {SCORE_TOL} of the threshold"
    nms_iou = _EXPECTED["iou"] if _EXPECTED else 0.7
    for boxes, scores in pool:
        better = boxes[scores > conf]
        if len(better):
            iou = _iou(xyxy, better)
            if np.any(np.abs(iou - nms_iou) <= NMS_IOU_SLACK):
                return f"IoU {iou[np.argmin(np.abs(iou - nms_iou))]:.4f} with a better box, at the NMS threshold"
    return None


def _describe(tag: str, xyxy: NDArray[np.float64], conf: float, cls: int) -> str:
    return f"{tag} cls {cls:2d} conf {conf:.5f} xyxy [{', '.join(f'{v:8.2f}' for v in xyxy)}]"


def _compare(expected: dict[str, Any], got: Detections) -> tuple[list[str], list[str], int]:
    """(failures, tolerated borderline differences, pairs)."""
    exp_xyxy = np.asarray(expected["xyxy"], np.float64).reshape(-1, 4)
    exp_conf = np.asarray(expected["conf"], np.float64)
    exp_cls = np.asarray(expected["cls"], np.int64)
    got_xyxy = got.xyxy.astype(np.float64)
    got_conf = got.confidence.astype(np.float64)
    got_cls = got.class_id
    pairs = _match(exp_xyxy, exp_conf, exp_cls, got_xyxy, got_conf, got_cls)
    paired_exp = {i for i, _ in pairs}
    paired_got = {j for _, j in pairs}
    failures: list[str] = []
    tolerated: list[str] = []
    for tag, xyxy, conf, cls, paired in (
        ("ultralytics only:", exp_xyxy, exp_conf, exp_cls, paired_exp),
        ("detector only:   ", got_xyxy, got_conf, got_cls, paired_got),
    ):
        for k in range(len(xyxy)):
            if k in paired:
                continue
            pool = [
                (b[c == cls[k]], s[c == cls[k]])
                for b, s, c in ((exp_xyxy, exp_conf, exp_cls), (got_xyxy, got_conf, got_cls))
            ]
            why = _borderline(xyxy[k], float(conf[k]), int(cls[k]), pool)
            line = _describe(tag, xyxy[k], float(conf[k]), int(cls[k]))
            (tolerated if why else failures).append(f"{line} ({why})" if why else line)
    return failures, tolerated, len(pairs)


def _nearest_report(expected: dict[str, Any], got: Detections, limit: int = 8) -> str:
    """For the best expected boxes: the detector's nearest box of any class, to tell scale/offset/class errors apart."""
    lines = []
    exp_xyxy = np.asarray(expected["xyxy"], np.float64).reshape(-1, 4)
    for i in range(min(limit, len(exp_xyxy))):
        line = _describe("  ultralytics", exp_xyxy[i], expected["conf"][i], expected["cls"][i])
        if len(got.xyxy):
            j = int(np.argmin(np.abs(got.xyxy.astype(np.float64) - exp_xyxy[i]).max(axis=1)))
            line += "\n" + _describe(
                "  detector   ", got.xyxy[j].astype(np.float64), float(got.confidence[j]), int(got.class_id[j])
            )
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize(("export", "image"), _cases())
def test_detector_matches_ultralytics(export: dict[str, Any], image: dict[str, Any]) -> None:
    detector = _detector(export["onnx"])
    rgb = _rgb(image["png"])
    assert list(rgb.shape[:2]) == image["shape_hw"]
    (got,) = detector.detect([rgb], threshold=_EXPECTED["conf"] if _EXPECTED else 0.25)

    failures, tolerated, paired = _compare(image, got)
    if tolerated:
        print(f"{len(tolerated)} borderline difference(s) tolerated:\n" + "\n".join(tolerated))
    if not failures:
        return
    message = [
        f"{export['id']} / {image['id']} {image['shape_hw']} (Ultralytics {_EXPECTED['ultralytics_version']}, "
        f"letterbox {export.get('letterbox')} -> input {image.get('ultra_input_hw')}): "
        f"{len(image['conf'])} expected, {len(got.confidence)} from the detector, {paired} paired; "
        f"{len(failures)} unexplained:",
        *failures[:20],
        "best expected boxes vs the detector's nearest:",
        _nearest_report(image, got),
    ]
    # A dynamic export also has Ultralytics' predictions for square letterboxes: say if those match.
    square = next((e for e in _EXPECTED["exports"] if e.get("diagnostic_only") and e["onnx"] == export["onnx"]), None)
    if square is not None:
        alt = next(im for im in square["images"] if im["id"] == image["id"])
        alt_failures, _, _ = _compare(alt, got)
        verdict = "MATCHES" if not alt_failures else f"does not match either ({len(alt_failures)} unexplained)"
        message.append(f"vs Ultralytics with square letterbox (input {alt.get('ultra_input_hw')}): {verdict}")
    pytest.fail("\n".join(message))
