"""uint8 feeds normalised inside the graph: the same tensors, and the same detections, as the CPU float blob.

On CUDA the ONNX detectors feed uint8 (N, H, W, 3) and let the graph normalise; here the same graphs run
on onnxruntime's CPU provider, forced onto that path, against the float path they replace.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from models.base import DetectorOptions
from models.detectors import onnx_base
from models.detectors.onnx_base import PaddedImage, chw_blob, hwc_blob, wants_uint8_input
from models.ops.boxes import LETTERBOX_PAD_VALUE, plan_letterbox, resize_for
from models.registry import load_detector
from models.runtimes.onnx import create_session, run_session
from models.runtimes.onnx_uint8 import DeviceInputs, with_uint8_image_input
from tests.unit.models import onnx_graphs


def _identity_model(elem: int = TensorProto.FLOAT, channels: int | str = 3) -> onnx_graphs.onnx.ModelProto:
    nodes = [helper.make_node("Identity", ["images"], ["out"])]
    inputs = [helper.make_tensor_value_info("images", elem, ["batch", channels, "height", "width"])]
    outputs = [helper.make_tensor_value_info("out", elem, ["batch", channels, "height", "width"])]
    return onnx_graphs._model(nodes, inputs, outputs, [], None)


def _session(model: onnx_graphs.onnx.ModelProto) -> ort.InferenceSession:
    return create_session(model.SerializeToString(), device="cpu", num_threads=1)


def _placed(image: np.ndarray, size: int) -> PaddedImage:
    plan = plan_letterbox(image.shape[0], image.shape[1], size, size)
    return PaddedImage(
        resize_for(image, plan), plan.height_px, plan.width_px, plan.top_px, plan.left_px, LETTERBOX_PAD_VALUE
    )


def _frames(count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(360, 640, 3), (640, 360, 3), (64, 64, 3), (300, 500, 3)]
    return [rng.integers(0, 256, shapes[i % len(shapes)], np.uint8) for i in range(count)]


@pytest.mark.parametrize(("elem", "dtype"), [(TensorProto.FLOAT, np.float32), (TensorProto.FLOAT16, np.float16)])
def test_the_graph_normalises_uint8_exactly_as_the_cpu_blob(elem: int, dtype: type[np.floating]) -> None:
    placed = [_placed(frame, 64) for frame in _frames()]
    session = _session(with_uint8_image_input(_identity_model(elem), "images"))
    assert [(i.name, i.type) for i in session.get_inputs()] == [("images", "tensor(uint8)")]
    (fed,) = session.run(None, {"images": hwc_blob(placed, threading.local())})
    expected = chw_blob(placed, dtype, threading.local())
    assert fed.dtype == expected.dtype
    assert np.array_equal(fed, expected)


def test_the_input_keeps_its_name_and_batch_and_spatial_dims() -> None:
    model = with_uint8_image_input(_identity_model(channels="c"), "images")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "height", "width", 3]
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert model.graph.output[0].name == "out"


def test_the_original_model_is_left_as_it_was() -> None:
    model = _identity_model()
    before = model.SerializeToString()
    with_uint8_image_input(model, "images")
    assert model.SerializeToString() == before


@pytest.mark.parametrize(
    ("model", "name", "message"),
    [
        (_identity_model(), "pixels", "no input 'pixels'"),
        (_identity_model(TensorProto.INT64), "images", "not a float"),
        (_identity_model(channels=1), "images", "1 channels"),
    ],
)
def test_inputs_that_are_not_float_rgb_images_are_refused(
    model: onnx_graphs.onnx.ModelProto, name: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        with_uint8_image_input(model, name)


def test_hwc_blob_is_the_letterboxed_canvas_whatever_the_buffer_held() -> None:
    frames = _frames()
    buffers = threading.local()
    for batch in ([frames[0], frames[1]], [frames[1], frames[0]], [frames[2], frames[3], frames[0]], [frames[0]]):
        placed = [_placed(f, 640) for f in batch]
        blob = hwc_blob(placed, buffers)
        expected = chw_blob(placed, np.float32, threading.local())
        assert blob.dtype == np.uint8
        assert np.array_equal(blob.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255), expected)


def test_device_inputs_feed_the_same_tensors_and_reuse_their_buffer() -> None:
    session = _session(_identity_model())
    inputs = DeviceInputs("cpu")
    rng = np.random.default_rng(1)
    first = rng.random((2, 3, 8, 8), np.float32)
    (out,) = run_session(session, None, {"images": first}, inputs)
    assert np.array_equal(out, first)
    buffer = inputs._values["images"]
    second = rng.random((2, 3, 8, 8), np.float32)
    (out,) = run_session(session, None, {"images": second}, inputs)
    assert np.array_equal(out, second)
    assert inputs._values["images"] is buffer  # same shape: copied into, not reallocated
    third = rng.random((1, 3, 8, 8), np.float32)
    (out,) = run_session(session, None, {"images": third}, inputs)
    assert np.array_equal(out, third)
    assert inputs._values["images"] is not buffer


@pytest.mark.parametrize(
    ("device", "tensorrt", "expected"), [("cuda", False, True), ("cuda", True, False), ("cpu", False, False)]
)
def test_uint8_feeds_only_on_cuda_without_tensorrt(device: str, tensorrt: bool, expected: bool) -> None:
    assert wants_uint8_input(device, DetectorOptions(tensorrt=tensorrt)) is expected


@pytest.fixture
def force_uint8(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA decision, taken on the CPU: the session is rebuilt with a uint8 input."""
    monkeypatch.setattr(onnx_base, "wants_uint8_input", lambda device, options: True)


@pytest.mark.parametrize("fp16", [False, True])
def test_a_yolo_detector_finds_the_same_boxes_from_uint8_feeds(tmp_path: Path, fp16: bool) -> None:
    path = onnx_graphs.save(onnx_graphs.echo_yolo_model(fp16=fp16), tmp_path / "echo.onnx")
    frames = _frames(5)
    float_fed = load_detector(f"onnx:{path}", DetectorOptions(device="cpu", batch_size=4))
    expected = float_fed.detect(frames, threshold=0.5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_base, "wants_uint8_input", lambda device, options: True)
        uint8_fed = load_detector(f"onnx:{path}", DetectorOptions(device="cpu", batch_size=4))
    assert uint8_fed._session.get_inputs()[0].type == "tensor(uint8)"  # type: ignore[attr-defined]
    got = uint8_fed.detect(frames, threshold=0.5)
    assert sum(len(d) for d in expected) > 0
    for a, b in zip(expected, got, strict=True):
        assert np.array_equal(a.xyxy, b.xyxy)
        assert np.array_equal(a.confidence, b.confidence)
        assert np.array_equal(a.class_id, b.class_id)


def test_a_fixed_batch_rtdetr_export_runs_from_uint8_feeds(tmp_path: Path, force_uint8: None) -> None:
    boxes = np.array([[0.1, 0.2, 0.5, 0.6]], np.float32)
    model = onnx_graphs.rtdetr_deploy_model(
        boxes, np.array([0.9], np.float32), np.array([0], np.int64), batch=2, metadata={"names": "{0: 'thing'}"}
    )
    path = onnx_graphs.save(model, tmp_path / "rtdetr.onnx")
    detector = load_detector(f"onnx:{path}", DetectorOptions(device="cpu"))
    inputs = {i.name: i.type for i in detector._session.get_inputs()}  # type: ignore[attr-defined]
    assert inputs == {"images": "tensor(uint8)", "orig_target_sizes": "tensor(int64)"}
    (found,) = detector.detect([np.zeros((100, 200, 3), np.uint8)], threshold=0.5)
    np.testing.assert_allclose(found.xyxy, [[20, 20, 100, 60]], atol=1e-4)


def test_detr_logits_exports_keep_their_float_feed(tmp_path: Path, force_uint8: None) -> None:
    from models.detectors.e2e_onnx import DetrLogitsOnnx

    assert DetrLogitsOnnx.uint8_image_feed is False
