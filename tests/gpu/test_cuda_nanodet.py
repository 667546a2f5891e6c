"""builtin:nanodet on CUDA (ONNX Runtime's CUDA provider, uint8 frames normalised on the GPU) gives the CPU's
detections, and a batch gives each frame's own. Skipped without a GPU or without the fetched model, whose folder
``PREANNOTATE_TEST_NANODET_DIR`` names (``make gpu-check`` converts it there from the carried TF.js files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from models.base import DetectorOptions
from models.nanodet import is_installed
from models.registry import load_detector
from models.runtimes.onnx import cuda_available
from models.types import Detections
from tests.gpu.test_cuda_detectors import _iou

MODEL_DIR = Path(os.environ.get("PREANNOTATE_TEST_NANODET_DIR", "/nonexistent"))

pytestmark = [
    pytest.mark.skipif(not cuda_available(), reason="onnxruntime has no CUDAExecutionProvider"),
    pytest.mark.skipif(not is_installed(MODEL_DIR), reason="PREANNOTATE_TEST_NANODET_DIR holds no fetched NanoDet"),
]


def _photos() -> list[np.ndarray]:
    camera = np.repeat(skimage.data.camera()[:, :, None], 3, axis=2)
    return [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), camera]


def _matches(a: Detections, b: Detections) -> None:
    assert len(a) == len(b)
    if len(a):
        assert float(_iou(a.xyxy, b.xyxy).diagonal().min()) > 0.95
        np.testing.assert_allclose(a.confidence, b.confidence, atol=2e-2)
        np.testing.assert_array_equal(a.class_id, b.class_id)


def test_cuda_gives_the_cpus_detections_batched_or_not() -> None:
    options = {"model_dir": str(MODEL_DIR)}
    cpu = load_detector("builtin:nanodet", DetectorOptions(device="cpu", **options))
    cuda = load_detector("builtin:nanodet", DetectorOptions(device="cuda", batch_size=4, **options))
    assert cuda.info.device == "cuda"
    photos = _photos()
    batched = cuda.detect(photos, threshold=0.3)
    for photo, together in zip(photos, batched, strict=True):
        _matches(cpu.detect([photo], threshold=0.3)[0], together)
        _matches(cuda.detect([photo], threshold=0.3)[0], together)
    assert int(batched[1].class_id[0]) == cpu.info.class_names.index("cat")
