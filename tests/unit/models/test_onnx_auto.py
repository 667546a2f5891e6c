"""Recognising ONNX output layouts, and load errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.detectors.onnx_auto import OnnxLayout, detect_layout
from models.errors import ModelLoadError, ModelNotFoundError
from models.registry import load_detector
from models.runtimes.onnx import SessionIO, TensorInfo

_COCO_NAMES = repr({i: f"c{i}" for i in range(80)})


def _io(outputs: dict[str, tuple[int | None, ...]], metadata: dict[str, str] | None = None) -> SessionIO:
    return SessionIO(
        input_name="images",
        input_dtype=float,  # type: ignore[arg-type]  # not used by detect_layout
        input_shape=(1, 3, 640, 640),
        output_names=tuple(outputs),
        metadata=metadata or {},
        extra_inputs=(),
        output_shapes=tuple(outputs.values()),
    )


@pytest.mark.parametrize(
    ("outputs", "metadata", "expected"),
    [
        pytest.param({"output0": (1, 84, 8400)}, {"names": _COCO_NAMES}, OnnxLayout.YOLO, id="yolov8-640"),
        pytest.param({"output0": (None, 84, None)}, {}, OnnxLayout.YOLO, id="yolov8-dynamic"),
        pytest.param({"output0": (None, None, None)}, {}, OnnxLayout.YOLO, id="all-symbolic"),
        pytest.param({"output0": (1, 6, 2100)}, {}, OnnxLayout.YOLO, id="yolo-2-classes"),
        pytest.param({"output0": (1, 300, 6)}, {}, OnnxLayout.YOLO_END2END, id="end2end-by-shape"),
        pytest.param(
            {"output0": (1, 300, 6)}, {"end2end": "False", "names": _COCO_NAMES}, OnnxLayout.YOLO_END2END, id="nms-true"
        ),
        pytest.param({"output0": (1, 6, 6)}, {"end2end": "True"}, OnnxLayout.YOLO_END2END, id="end2end-metadata"),
        pytest.param(
            {"labels": (1, 300), "boxes": (1, 300, 4), "scores": (1, 300)},
            {},
            OnnxLayout.BOXES_SCORES_LABELS,
            id="rtdetr",
        ),
        pytest.param({"logits": (1, 300, 80), "pred_boxes": (1, 300, 4)}, {}, OnnxLayout.LOGITS_PRED_BOXES, id="hf"),
        pytest.param({"Logits": (1, 100, 92), "PRED_BOXES": (1, 100, 4)}, {}, OnnxLayout.LOGITS_PRED_BOXES, id="case"),
        pytest.param(
            {"output0": (1, 116, 8400), "output1": (1, 32, 160, 160)},
            {"task": "segment", "names": _COCO_NAMES},
            OnnxLayout.YOLO_SEG,
            id="yolov8-seg",
        ),
        pytest.param(
            {"output0": (None, None, None), "output1": (None, 32, None, None)},
            {},
            OnnxLayout.YOLO_SEG,
            id="seg-dynamic",
        ),
        pytest.param(
            {"output1": (1, 32, 160, 160), "output0": (1, 116, 8400)}, {}, OnnxLayout.YOLO_SEG, id="seg-protos-first"
        ),
        pytest.param(
            {"output0": (1, 300, 38), "output1": (1, 32, 160, 160)}, {}, OnnxLayout.YOLO_SEG_END2END, id="seg-end2end"
        ),
        pytest.param(
            {"output0": (1, 300, None), "output1": (1, 32, 160, 160)},
            {"end2end": "True"},
            OnnxLayout.YOLO_SEG_END2END,
            id="seg-end2end-metadata",
        ),
    ],
)
def test_detect_layout(
    outputs: dict[str, tuple[int | None, ...]], metadata: dict[str, str], expected: OnnxLayout
) -> None:
    assert detect_layout(_io(outputs, metadata), Path("m.onnx")) is expected


@pytest.mark.parametrize(
    ("outputs", "metadata", "match"),
    [
        pytest.param({"output0": (1, 56, 8400)}, {"task": "pose"}, "'pose' is not object detection", id="pose-task"),
        pytest.param({"output0": (1, 116, 8400), "output1": (1, 32, 160)}, {}, "unrecognised", id="seg-protos-not-4d"),
        pytest.param({"output0": (1, 1000)}, {}, "unrecognised", id="classifier"),
        pytest.param({"output0": (1, 4, 8400)}, {}, "unrecognised", id="no-class-channels"),
    ],
)
def test_unsupported_layouts_list_the_supported_ones(
    outputs: dict[str, tuple[int | None, ...]], metadata: dict[str, str], match: str
) -> None:
    with pytest.raises(ModelLoadError, match=match) as info:
        detect_layout(_io(outputs, metadata), Path("m.onnx"))
    for layout in OnnxLayout:
        assert layout.value in str(info.value)
    assert "m.onnx" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"missing\.onnx does not exist"):
        load_detector(f"onnx:{tmp_path / 'missing.onnx'}")


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelLoadError, match=r"broken\.onnx"):
        load_detector(str(path))


def test_session_io_finds_the_image_input_when_not_first() -> None:
    from onnx import TensorProto, helper

    from models.runtimes.onnx import create_session, session_io

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["out"])],
        "g",
        [
            helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, ["b", 2]),
            helper.make_tensor_value_info("images", TensorProto.FLOAT, ["b", 3, 640, 640]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", 3, 640, 640])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    io = session_io(create_session(model.SerializeToString(), device="cpu", num_threads=1))
    assert io.input_name == "images"
    assert io.input_shape == (None, 3, 640, 640)
    assert io.extra_inputs == (TensorInfo("orig_target_sizes", "tensor(int64)", (None, 2)),)
    assert io.output_shapes == ((None, 3, 640, 640),)
