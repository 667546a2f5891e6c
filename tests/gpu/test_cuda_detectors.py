"""CUDA paths: fp16 agrees with fp32, batches agree with single frames. Skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data

from models.base import DetectorOptions
from models.registry import load_detector
from models.runtimes.onnx import cuda_available
from tests.unit.models.hf_checkpoints import write_tiny_rtdetr

torch = pytest.importorskip("torch")

needs_torch_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
needs_ort_cuda = pytest.mark.skipif(not cuda_available(), reason="onnxruntime has no CUDAExecutionProvider")


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [skimage.data.astronaut(), *(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(5))]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@needs_torch_cuda
def test_hf_fp16_matches_fp32_on_cuda(tmp_path: Path) -> None:
    spec = f"hf:{write_tiny_rtdetr(tmp_path)}"
    fp32 = load_detector(spec, DetectorOptions(device="cuda", fp16=False, batch_size=4))
    fp16 = load_detector(spec, DetectorOptions(device="cuda", fp16=True, batch_size=4))
    assert (fp32.info.dtype, fp16.info.dtype) == ("float32", "float16")
    frames = _frames()
    compared = 0
    for a, b in zip(fp32.detect(frames, threshold=0.3), fp16.detect(frames, threshold=0.3), strict=True):
        strong = a.confidence > 0.4  # boxes near the threshold may cross it in fp16
        if not strong.any():
            continue
        assert len(b), "fp16 found nothing where fp32 found strong boxes"
        best = _iou(a.xyxy[strong], b.xyxy).max(axis=1)
        assert np.all(best > 0.9)
        compared += 1
    # The tiny seeded model gives strong boxes on every frame in fp32 (checked on CPU): an empty
    # comparison means a broken run, not agreement.
    assert compared > 0, "no strong fp32 boxes to compare"


@needs_torch_cuda
def test_hf_batch_equals_single_frames_on_cuda(tmp_path: Path) -> None:
    detector = load_detector(
        f"hf:{write_tiny_rtdetr(tmp_path)}", DetectorOptions(device="cuda", fp16=False, batch_size=16)
    )
    frames = _frames()
    batched = detector.detect(frames, threshold=0.3)
    single = [detector.detect([f], threshold=0.3)[0] for f in frames]
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.5)
        np.testing.assert_array_equal(a.class_id, b.class_id)


@needs_ort_cuda
def test_centerface_cuda_matches_cpu() -> None:
    frames = _frames()
    cpu = load_detector("builtin:centerface", DetectorOptions(device="cpu")).detect(frames, threshold=0.5)
    gpu_detector = load_detector("builtin:centerface", DetectorOptions(device="cuda", batch_size=8))
    assert gpu_detector.info.device == "cuda"
    gpu = gpu_detector.detect(frames, threshold=0.5)
    for a, b in zip(cpu, gpu, strict=True):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1.0)


@needs_torch_cuda
def test_out_of_memory_splits_the_batch_and_loses_no_frame(tmp_path: Path) -> None:
    """With the GPU memory capped, a large batch runs out; the batcher splits it and every frame
    still gets its result."""
    from service.pipeline.batching import DynamicBatcher

    detector = load_detector(
        f"hf:{write_tiny_rtdetr(tmp_path)}",
        DetectorOptions(device="cuda", fp16=False, batch_size=64, input_size_px=640),
    )
    frames = [np.zeros((1080, 1920, 3), np.uint8)] * 64
    torch.cuda.empty_cache()
    # Leave the caching allocator ~200 MB: a batch of 64 at 640 px cannot fit, a few frames can.
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(200 * 1024**2 / total)
    try:
        batcher = DynamicBatcher(detector, max_batch_size=64, max_wait_ms=50)
        batcher.start()
        try:
            results = batcher.detect(frames, threshold=0.3)
        finally:
            batcher.close()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert len(results) == 64
    assert batcher.max_batch_size < 64  # the ceiling came down


@needs_torch_cuda
def test_pinned_staging_uploads_every_frame_intact() -> None:
    from models.runtimes.torch_preprocess import HostStaging

    staging = HostStaging("cuda")
    rng = np.random.default_rng(1)
    for shapes in ([(4, 6, 3), (5, 3, 3)], [(64, 48, 3)] * 3, [(2, 2, 3)]):  # grows, then reuses
        frames = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in shapes]
        uploaded = staging.upload(frames)
        assert all(t.is_cuda for t in uploaded)
        for frame, tensor in zip(frames, uploaded, strict=True):
            np.testing.assert_array_equal(tensor.cpu().numpy(), frame)
    assert staging.capacity >= 64 * 48 * 3 * 3


@needs_torch_cuda
def test_cuda_warmup_runs_every_batch_bucket(tmp_path: Path) -> None:
    detector = load_detector(
        f"hf:{write_tiny_rtdetr(tmp_path)}", DetectorOptions(device="cuda", fp16=True, batch_size=6)
    )
    assert detector.warmup_batch_sizes() == (1, 2, 4, 6)
    detector.warmup()
    detector.close()
