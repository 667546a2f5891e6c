"""Model spec parsing and dispatch."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import ModelSpecError
from models.registry import FACE_MODEL_SPEC, load_detector, parse_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("builtin:centerface", ("builtin", "centerface")),
        ("  builtin:centerface  ", ("builtin", "centerface")),
        ("onnx:/models/yolo.onnx", ("onnx", "/models/yolo.onnx")),
        ("onnx:relative/model.bin", ("onnx", "relative/model.bin")),
        ("/models/yolo11n.onnx", ("onnx", "/models/yolo11n.onnx")),
        ("models/RTDETR.ONNX", ("onnx", "models/RTDETR.ONNX")),
        ("hf:PekingU/rtdetr_r50vd", ("hf", "PekingU/rtdetr_r50vd")),
        ("hf:/models/detr-resnet-50", ("hf", "/models/detr-resnet-50")),
        ("hf:C:/weird:path", ("hf", "C:/weird:path")),
        (FACE_MODEL_SPEC, ("builtin", "centerface")),
    ],
)
def test_parse_spec_valid(spec: str, expected: tuple[str, str]) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "invalid model spec"),
        ("centerface", "invalid model spec"),
        ("yolo.pt", "invalid model spec"),
        ("torch:/m/model.pt", "invalid model spec"),
        ("hf:", "invalid model spec"),
        ("onnx:", "invalid model spec"),
        ("HF:PekingU/rtdetr_r50vd", "invalid model spec"),
        ("builtin:yolov8", "unknown builtin model 'yolov8'; available: centerface"),
    ],
)
def test_parse_spec_invalid(spec: str, match: str) -> None:
    with pytest.raises(ModelSpecError, match=match):
        parse_spec(spec)


def test_load_detector_rejects_unknown_builtin_before_loading() -> None:
    with pytest.raises(ModelSpecError, match="unknown builtin"):
        load_detector("builtin:nope")


def test_tensorrt_providers_come_first_with_fp16_and_an_engine_cache() -> None:
    from models.runtimes.onnx import providers_for

    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = providers_for("cuda", tensorrt=True, fp16=True, engine_cache_dir="/cache/trt", available=available)
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    name, trt = providers[0]  # type: ignore[misc]
    assert name == "TensorrtExecutionProvider"
    assert trt["trt_fp16_enable"] is True
    assert trt["trt_engine_cache_enable"] is True
    assert trt["trt_engine_cache_path"] == "/cache/trt"
    assert providers_for("cuda", tensorrt=True, fp16=True, engine_cache_dir=None, available=available[1:]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert providers_for("cpu", tensorrt=True, fp16=True, engine_cache_dir=None, available=available) == [
        "CPUExecutionProvider"
    ]


def test_builtin_nanodet_not_fetched_names_the_fetch_command(tmp_path: Path) -> None:
    from models.base import DetectorOptions
    from models.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match=r"run `preannotate models fetch nanodet` once") as caught:
        load_detector("builtin:nanodet", DetectorOptions(model_dir=str(tmp_path)))
    assert str(tmp_path) in str(caught.value)
