"""The CUDA fast path's decisions, checked without a GPU: warm-up buckets, TensorRT profiles and engine-cache logs.

The CUDA calls themselves run only in tests/gpu; everything that decides what they are given runs here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.base import Detector, DetectorOptions, batch_buckets
from models.detectors import centerface_onnx
from models.detectors.onnx_auto import trt_profile_for
from models.errors import DeviceOutOfMemoryError
from models.registry import load_detector
from models.runtimes import onnx as ort_runtime
from models.runtimes.onnx import TensorInfo, graph_inputs, providers_for, trt_profile_shapes
from models.types import Detections, ModelInfo, RGBImage
from tests.builders import make_detections
from tests.unit.models import onnx_graphs


class Recorder(Detector):
    """Records the batch sizes it is run on; out of memory above ``fits``."""

    def __init__(self, *, device: str, batch_size: int, fits: int | None = None) -> None:
        self.info = ModelInfo(
            spec="fake:recorder",
            name="recorder",
            version="0",
            class_names=("thing",),
            runtime="fake",
            device=device,
            batch_size=batch_size,
            input_size_px=None,
        )
        self.fits = fits
        self.sizes: list[int] = []

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        self.sizes.append(len(images))
        if self.fits is not None and len(images) > self.fits:
            raise DeviceOutOfMemoryError(f"out of memory on {len(images)}")
        return [make_detections() for _ in images]


@pytest.mark.parametrize(
    ("ceiling", "buckets"),
    [(1, (1,)), (2, (1, 2)), (6, (1, 2, 4, 6)), (16, (1, 2, 4, 8, 16)), (24, (1, 2, 4, 8, 16, 24))],
)
def test_batch_buckets_are_the_powers_of_two_below_the_ceiling_and_the_ceiling(
    ceiling: int, buckets: tuple[int, ...]
) -> None:
    assert batch_buckets(ceiling) == buckets


def test_cpu_warmup_stays_a_single_frame_and_a_full_batch() -> None:
    detector = Recorder(device="cpu", batch_size=16)
    detector.warmup()
    assert detector.sizes == [1, 16]


def test_cuda_warmup_runs_every_bucket_smallest_first() -> None:
    detector = Recorder(device="cuda", batch_size=16)
    detector.warmup()
    assert detector.sizes == [1, 2, 4, 8, 16]


def test_warmup_stops_at_the_first_size_that_runs_out_of_memory(caplog: pytest.LogCaptureFixture) -> None:
    detector = Recorder(device="cuda", batch_size=16, fits=5)
    with caplog.at_level(logging.WARNING, logger="models.base"):
        detector.warmup()
    assert detector.sizes == [1, 2, 4, 8]
    assert "warm-up out of device memory at batch 8" in caplog.text


def test_warmup_raises_when_a_single_frame_does_not_fit() -> None:
    with pytest.raises(DeviceOutOfMemoryError):
        Recorder(device="cuda", batch_size=4, fits=0).warmup()


def test_a_fixed_batch_onnx_export_warms_its_one_shape(tmp_path: Path) -> None:
    candidates = np.zeros((7, 10), np.float32)
    fixed = onnx_graphs.save(onnx_graphs.yolo_model(candidates, batch=4), tmp_path / "fixed.onnx")
    dynamic = onnx_graphs.save(onnx_graphs.yolo_model(candidates), tmp_path / "dynamic.onnx")
    options = DetectorOptions(device="cpu", batch_size=3)
    assert load_detector(f"onnx:{fixed}", options).warmup_batch_sizes() == (4,)
    assert load_detector(f"onnx:{dynamic}", options).warmup_batch_sizes() == (1, 3)


def test_graph_inputs_skip_initializers_and_spell_types_as_onnxruntime_does() -> None:
    labels = np.zeros(3, np.int64)
    model = onnx_graphs.rtdetr_deploy_model(np.zeros((3, 4), np.float32), np.zeros(3, np.float32), labels)
    # Old exports also list initializers as graph inputs.
    model.graph.input.append(onnx_graphs.helper.make_tensor_value_info("zero_1d", 7, [1]))
    assert graph_inputs(model) == (
        TensorInfo("images", "tensor(float)", (None, 3, 640, 640)),
        TensorInfo("orig_target_sizes", "tensor(int64)", (None, 2)),
    )


def test_trt_profile_covers_every_batch_and_frame_size_up_to_the_ceiling() -> None:
    inputs = [TensorInfo("images", "tensor(float)", (None, 3, None, None))]
    assert trt_profile_shapes(inputs, max_batch=16, max_hw=(640, 480)) == {
        "trt_profile_min_shapes": "images:1x3x32x32",
        "trt_profile_opt_shapes": "images:16x3x640x480",
        "trt_profile_max_shapes": "images:16x3x640x480",
    }


def test_trt_profile_names_every_dynamic_input_and_skips_static_ones() -> None:
    inputs = [
        TensorInfo("images", "tensor(float)", (None, 3, 640, 640)),
        TensorInfo("orig_target_sizes", "tensor(int64)", (None, 2)),
        TensorInfo("static", "tensor(float)", (1, 2)),
    ]
    profile = trt_profile_shapes(inputs, max_batch=8, max_hw=(640, 640))
    assert profile is not None
    assert profile["trt_profile_min_shapes"] == "images:1x3x640x640,orig_target_sizes:1x2"
    assert profile["trt_profile_max_shapes"] == "images:8x3x640x640,orig_target_sizes:8x2"


def test_trt_profile_can_tune_for_a_smaller_shape_than_it_allows() -> None:
    inputs = [TensorInfo("images", "tensor(float)", (None, 3, None, None))]
    profile = trt_profile_shapes(inputs, max_batch=4, max_hw=(640, 640), opt_hw=(384, 640))
    assert profile is not None
    assert profile["trt_profile_opt_shapes"] == "images:4x3x384x640"
    assert profile["trt_profile_max_shapes"] == "images:4x3x640x640"
    with pytest.raises(ValueError, match="opt_hw <= max_hw"):
        trt_profile_shapes(inputs, max_batch=4, max_hw=(320, 320), opt_hw=(640, 640))


def test_no_trt_profile_for_static_graphs_or_dims_it_cannot_bound() -> None:
    assert trt_profile_shapes([TensorInfo("x", "tensor(float)", (4, 3, 64, 64))], max_batch=4, max_hw=(64, 64)) is None
    unknown = [TensorInfo("tokens", "tensor(int64)", (None, None))]  # a sequence length: no range we know
    assert trt_profile_shapes(unknown, max_batch=4, max_hw=(64, 64)) is None


def test_trt_profile_for_an_export_follows_the_detector_input_size_rules(tmp_path: Path) -> None:
    candidates = np.zeros((7, 10), np.float32)
    model = onnx_graphs.yolo_model(candidates, height_px=None, width_px=None, metadata={"imgsz": "[320, 480]"})
    path = onnx_graphs.save(model, tmp_path / "yolo.onnx")
    by_metadata = trt_profile_for(path, DetectorOptions(device="cuda", tensorrt=True, batch_size=8))
    assert by_metadata is not None
    assert by_metadata["trt_profile_opt_shapes"] == "images:8x3x320x480"
    assert by_metadata["trt_profile_max_shapes"] == "images:8x3x480x480"  # portrait frames fit too
    by_option = trt_profile_for(path, DetectorOptions(device="cuda", tensorrt=True, input_size_px=500))
    assert by_option is not None
    assert by_option["trt_profile_max_shapes"] == "images:16x3x512x512"  # CUDA default batch; size to stride
    assert trt_profile_for(tmp_path / "missing.onnx", DetectorOptions()) is None


def test_centerface_asks_for_a_profile_covering_its_batch_and_input_size(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real = centerface_onnx.create_session

    def spy(model: bytes | str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(model, **kwargs)

    monkeypatch.setattr(centerface_onnx, "create_session", spy)
    load_detector("builtin:centerface", DetectorOptions(device="cpu", batch_size=4, input_size_px=500))
    assert seen["trt_profile"] == {
        "trt_profile_min_shapes": "input.1:1x3x32x32",
        "trt_profile_opt_shapes": "input.1:4x3x512x512",
        "trt_profile_max_shapes": "input.1:4x3x512x512",
    }


_TRT_AVAILABLE = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_the_profile_reaches_the_tensorrt_provider_only() -> None:
    profile = {"trt_profile_max_shapes": "images:8x3x640x640"}
    providers = providers_for(
        "cuda", tensorrt=True, fp16=True, engine_cache_dir=None, available=_TRT_AVAILABLE, trt_profile=profile
    )
    assert providers[0][1]["trt_profile_max_shapes"] == "images:8x3x640x640"  # type: ignore[index]
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


class _Session:
    def __init__(self, model: object, *, sess_options: object, providers: list[Any]) -> None:
        self.providers = providers

    def get_providers(self) -> list[str]:
        return ["TensorrtExecutionProvider"]


@pytest.mark.parametrize(
    ("cached", "with_dir", "level", "message"),
    [
        (False, True, logging.WARNING, "building TensorRT engines (minutes on first use; cached in"),
        (True, True, logging.INFO, "TensorRT engines cached in"),
        (False, False, logging.WARNING, "on every start: no engine cache directory"),
    ],
)
def test_the_engine_build_warning_only_on_a_cache_miss(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    cached: bool,
    with_dir: bool,
    level: int,
    message: str,
) -> None:
    monkeypatch.setattr(ort_runtime.ort, "get_available_providers", lambda: _TRT_AVAILABLE)
    monkeypatch.setattr(ort_runtime.ort, "InferenceSession", _Session)
    if cached:
        (tmp_path / "TensorrtExecutionProvider_TRTKernel_graph_main_123_0_0_sm90.engine").write_bytes(b"")
    cache = str(tmp_path) if with_dir else None
    with caplog.at_level(logging.INFO, logger="models.runtimes.onnx"):
        session = ort_runtime.create_session(
            b"", device="cuda", num_threads=None, tensorrt=True, engine_cache_dir=cache, trt_profile={"a": "b"}
        )
    records = [r for r in caplog.records if "TensorRT" in r.getMessage()]
    assert [(r.levelno, message in r.getMessage()) for r in records] == [(level, True)]
    assert session.providers[0][1]["a"] == "b"  # type: ignore[attr-defined]
