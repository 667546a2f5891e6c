"""uint8 to the device, normalised there: the CUDA paths give the CPU paths' tensors. Skipped without a GPU.

The same functions run on CPU tensors in tests/unit/models (test_torch_preprocess, test_onnx_uint8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.base import DetectorOptions
from models.registry import load_detector
from models.runtimes.onnx import create_session, cuda_available, run_session
from models.runtimes.onnx_uint8 import DeviceInputs
from models.runtimes.torch_preprocess import HostStaging, PreprocessSpec, preprocess
from tests.unit.models import onnx_graphs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

needs_torch_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
needs_ort_cuda = pytest.mark.skipif(not cuda_available(), reason="onnxruntime has no CUDAExecutionProvider")


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(480, 640), (720, 1280), (640, 480), (480, 640)]
    return [
        np.ascontiguousarray(np.kron(rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8), np.ones((8, 8, 1), np.uint8)))
        for h, w in shapes
    ]


@needs_torch_cuda
@pytest.mark.parametrize("size", [{"shortest_edge": 640, "longest_edge": 640}, {"height": 640, "width": 640}])
def test_torch_preprocess_on_cuda_matches_the_cpu(size: dict[str, int]) -> None:
    processor = (
        transformers.DetrImageProcessor(size=size) if "shortest_edge" in size else transformers.RTDetrImageProcessor()
    )
    spec = PreprocessSpec.from_processor(processor, size)
    assert spec is not None
    frames = _frames()
    cpu = preprocess(frames, spec, "cpu")
    staging = HostStaging("cuda")
    for _ in range(2):  # the second batch reuses the pinned buffer
        cuda = preprocess(frames, spec, "cuda", staging)
        assert cuda["pixel_values"].device.type == "cuda"
        torch.testing.assert_close(cuda["pixel_values"].cpu(), cpu["pixel_values"], atol=2e-3, rtol=0)
        if spec.pad:
            assert torch.equal(cuda["pixel_mask"].cpu(), cpu["pixel_mask"])
    assert staging.capacity >= sum(f.nbytes for f in frames)
    half = preprocess(frames, spec, "cuda", staging, dtype=torch.float16)["pixel_values"]
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float().cpu(), cpu["pixel_values"], atol=2e-2, rtol=0)
    staging.release()


@needs_ort_cuda
def test_device_inputs_feed_a_cuda_session() -> None:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    model = onnx_graphs._model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
        [],
        None,
    )
    session = create_session(model.SerializeToString(), device="cuda", num_threads=None)
    inputs = DeviceInputs("cuda")
    for batch in (3, 3, 5):
        x = np.random.default_rng(batch).random((batch, 4), np.float32)
        (y,) = run_session(session, None, {"x": x}, inputs)
        assert np.array_equal(y, x)


@needs_ort_cuda
@pytest.mark.parametrize("fp16", [False, True])
def test_onnx_uint8_feeds_on_cuda_find_the_cpu_boxes(tmp_path: Path, fp16: bool) -> None:
    path = onnx_graphs.save(onnx_graphs.echo_yolo_model(fp16=fp16), tmp_path / "echo.onnx")
    frames = [np.random.default_rng(i).integers(0, 256, (120, 160, 3), np.uint8) for i in range(6)]
    cpu = load_detector(f"onnx:{path}", DetectorOptions(device="cpu", batch_size=4)).detect(frames, threshold=0.5)
    detector = load_detector(f"onnx:{path}", DetectorOptions(device="cuda", batch_size=4))
    assert detector._session.get_inputs()[0].type == "tensor(uint8)"  # type: ignore[attr-defined]
    cuda = detector.detect(frames, threshold=0.5)
    for a, b in zip(cpu, cuda, strict=True):
        np.testing.assert_array_equal(a.class_id, b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
