"""ONNX Runtime sessions: provider choice, threads and the input/output facts detectors need."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from models.errors import DeviceOutOfMemoryError, DeviceUnavailableError, ModelLoadError

if TYPE_CHECKING:
    import onnx  # the graph-reading helpers take its models; importing it costs half a second

    from models.runtimes.onnx_uint8 import DeviceInputs

log = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
# ORT has no out-of-memory error type: the CUDA EP's BFC arena raises RuntimeException "Failed to allocate
# memory for requested buffer of size N", and CUDA calls fail (Fail / EPFail) with "out of memory" or
# "..._ALLOC_FAILED". EPFail is missing from older builds.
_RUN_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(ort_state, name) for name in ("RuntimeException", "Fail", "EPFail") if hasattr(ort_state, name)
)
_OOM_MARKERS = ("failed to allocate", "out of memory", "alloc_failed")


def cuda_available() -> bool:
    """True when this onnxruntime build can run on CUDA (onnxruntime-gpu)."""
    return _CUDA in ort.get_available_providers()


def resolve_device(requested: str) -> str:
    """Map ``auto|cpu|cuda`` to the device this runtime will really use."""
    if requested == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if requested == "cuda":
        raise DeviceUnavailableError(
            "device 'cuda' requested but onnxruntime has no CUDAExecutionProvider "
            "(install the 'gpu' extra: onnxruntime-gpu)"
        )
    return "cpu"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One graph input or output: name, ORT type string (``tensor(float)``) and shape (None = symbolic)."""

    name: str
    type: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True, slots=True)
class SessionIO:
    """The image input's name, element type and shape (``None`` for symbolic dims), plus the rest of the graph IO.

    Attributes:
        input_name: the image input: the first float input of rank 4, else the first input.
        input_dtype: its numpy element type.
        input_shape: its shape, e.g. ``(None, 3, 640, 640)``.
        output_names: outputs in graph order.
        metadata: the model's ``metadata_props`` (Ultralytics: ``names``, ``imgsz``, ...).
        extra_inputs: inputs other than the image (e.g. RT-DETR's ``orig_target_sizes``).
        output_shapes: shapes of ``output_names``, in the same order.
    """

    input_name: str
    input_dtype: type[np.floating]
    input_shape: tuple[int | None, ...]
    output_names: tuple[str, ...]
    metadata: dict[str, str]
    extra_inputs: tuple[TensorInfo, ...] = ()
    output_shapes: tuple[tuple[int | None, ...], ...] = ()


_TENSORRT = "TensorrtExecutionProvider"


def providers_for(
    device: str,
    *,
    tensorrt: bool,
    fp16: bool,
    engine_cache_dir: str | None,
    available: Sequence[str],
    trt_profile: Mapping[str, str] | None = None,
) -> list[str | tuple[str, dict[str, Any]]]:
    """Execution providers in priority order, named explicitly (recent builds put Azure first).

    On CUDA with ``tensorrt``: the TensorRT EP first (fp16 when allowed, engines cached on disk so
    only the first start pays for the build, ``trt_profile`` from ``trt_profile_shapes``), then the
    CUDA EP for what TensorRT cannot run. The CUDA EP alone runs a model in its exported precision.
    """
    providers: list[str | tuple[str, dict[str, Any]]] = []
    if device == "cuda":
        if tensorrt and _TENSORRT in available:
            trt: dict[str, Any] = {"trt_fp16_enable": fp16, "trt_timing_cache_enable": True}
            if engine_cache_dir:
                trt |= {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": engine_cache_dir,
                    "trt_timing_cache_path": engine_cache_dir,
                }
            if trt_profile:
                trt |= dict(trt_profile)
            providers.append((_TENSORRT, trt))
        elif tensorrt:
            log.warning("TensorRT requested but this onnxruntime build has no TensorrtExecutionProvider")
        providers.append(_CUDA)
    providers.append(_CPU)
    return providers


def has_cached_engines(engine_cache_dir: str | None) -> bool:
    """True when ``engine_cache_dir`` holds a TensorRT engine (ORT names them ``*.engine``).

    A hint for the log only: ORT still rebuilds when the model, the profile shapes, the GPU or the
    TensorRT version differ from the cached engine's.
    """
    if not engine_cache_dir:
        return False
    try:
        return any(Path(engine_cache_dir).glob("*.engine"))
    except OSError:
        return False


def graph_inputs(model: onnx.ModelProto) -> tuple[TensorInfo, ...]:
    """The graph's real inputs (old exports also list initializers) without opening a session."""
    import onnx

    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs: list[TensorInfo] = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        element = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()  # ORT spells types the same way
        dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim]
        inputs.append(TensorInfo(value.name, f"tensor({element})", _shape(dims)))
    return tuple(inputs)


def image_input(inputs: Sequence[TensorInfo]) -> TensorInfo:
    """The image input: the first float input of rank 4, else the first input."""
    # Exports with extra inputs (RT-DETR's orig_target_sizes) do not always list the image first.
    return next((i for i in inputs if i.type in _ORT_FLOAT_TYPES and len(i.shape) == 4), inputs[0])


_MIN_SIDE_PX = 32  # the smallest frame side detectors feed (one stride)


def trt_profile_shapes(
    inputs: Sequence[TensorInfo],
    *,
    max_batch: int,
    max_hw: tuple[int, int],
    opt_hw: tuple[int, int] | None = None,
) -> dict[str, str] | None:
    """TensorRT optimization-profile options (``trt_profile_{min,opt,max}_shapes``) for the dynamic inputs.

    Without them ORT builds a profile from the shapes it has seen, and a batch or frame size outside
    it builds a new engine mid-run. This one covers batches 1..``max_batch`` and frames from 32 px to
    ``max_hw``, tuned for the full batch at ``opt_hw`` (default ``max_hw``), so partial batches and small
    frames reuse it.

    Dynamic dims understood: the first (batch) dim of any input, and channels (3), height and width
    of rank-4 inputs (NCHW images). None when no input is dynamic, or one has another dynamic dim
    (TensorRT needs every dynamic input covered; ORT's own profiles are the fallback then).
    """
    opt_hw = opt_hw or max_hw
    if max_batch < 1 or min(opt_hw) < 1 or opt_hw[0] > max_hw[0] or opt_hw[1] > max_hw[1]:
        raise ValueError(f"need max_batch >= 1 and 1 <= opt_hw <= max_hw, got {max_batch}, {opt_hw}, {max_hw}")
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for tensor in inputs:
        if None not in tensor.shape:
            continue
        bounds: list[tuple[int, int, int]] = []
        for axis, dim in enumerate(tensor.shape):
            if dim is not None:
                bounds.append((dim, dim, dim))
            elif axis == 0:
                bounds.append((1, max_batch, max_batch))
            elif len(tensor.shape) == 4 and axis == 1:
                bounds.append((3, 3, 3))
            elif len(tensor.shape) == 4:
                side, opt = max_hw[axis - 2], opt_hw[axis - 2]
                bounds.append((min(_MIN_SIDE_PX, opt), opt, side))
            else:
                return None
        for i, key in enumerate(("min", "opt", "max")):
            shapes[key].append(f"{tensor.name}:{'x'.join(str(b[i]) for b in bounds)}")
    if not shapes["max"]:
        return None
    return {f"trt_profile_{key}_shapes": ",".join(value) for key, value in shapes.items()}


def create_session(
    model: bytes | str,
    *,
    device: str,
    num_threads: int | None,
    tensorrt: bool = False,
    fp16: bool = True,
    engine_cache_dir: str | None = None,
    trt_profile: Mapping[str, str] | None = None,
) -> ort.InferenceSession:
    """Open a session on ``device`` (already resolved); CPU-only sessions never list CUDA.

    ``trt_profile`` (from ``trt_profile_shapes``) is used only when the TensorRT EP is.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # old exports list initializers as inputs; ORT warns per tensor
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    providers = providers_for(
        device,
        tensorrt=tensorrt,
        fp16=fp16,
        engine_cache_dir=engine_cache_dir,
        available=ort.get_available_providers(),
        trt_profile=trt_profile,
    )
    if providers and isinstance(providers[0], tuple):
        if has_cached_engines(engine_cache_dir):
            log.info(
                "TensorRT engines cached in %s (rebuilt only if the model, shapes or GPU changed)", engine_cache_dir
            )
        elif engine_cache_dir:
            log.warning("building TensorRT engines (minutes on first use; cached in %s)", engine_cache_dir)
        else:
            log.warning("building TensorRT engines (minutes, on every start: no engine cache directory is set)")
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises several private exception types for bad graphs
        raise ModelLoadError(f"onnxruntime cannot load the model: {exc}") from exc
    log.info("onnxruntime session on %s", session.get_providers()[0])
    return session


def run_session(
    session: ort.InferenceSession,
    output_names: Sequence[str] | None,
    feeds: Mapping[str, NDArray[Any]],
    device_inputs: DeviceInputs | None = None,
) -> list[NDArray[Any]]:
    """Run the session, raising DeviceOutOfMemoryError when ORT could not allocate (callers split the batch).

    On a GPU session the outputs are bound to the device and copied back once, together, instead of
    ORT's per-output synchronous copies. With ``device_inputs`` (any session) the feeds are copied into
    its reused buffers on its device and bound from there.
    """
    try:
        on_cpu = session.get_providers()[0] == _CPU
        if device_inputs is None and on_cpu:
            return list(session.run(output_names, dict(feeds)))
        binding = session.io_binding()
        if device_inputs is not None:
            device_inputs.bind(binding, feeds)
        else:
            for name, array in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in output_names or [o.name for o in session.get_outputs()]:
            binding.bind_output(name, "cpu" if on_cpu else "cuda")
        session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())
    except _RUN_ERRORS as exc:
        if not any(marker in str(exc).lower() for marker in _OOM_MARKERS):
            raise
        batch = len(next(iter(feeds.values()), ()))
        raise DeviceOutOfMemoryError(f"onnxruntime ran out of memory on a batch of {batch} frames") from exc


_ORT_FLOAT_TYPES: dict[str, type[np.floating]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def _shape(dims: Sequence[object]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)


def session_io(session: ort.InferenceSession) -> SessionIO:
    """Describe the session's image input, its other inputs and its outputs."""
    inputs = [TensorInfo(i.name, i.type, _shape(i.shape)) for i in session.get_inputs()]
    image = image_input(inputs)
    if image.type not in _ORT_FLOAT_TYPES:
        raise ModelLoadError(f"unsupported input type {image.type} for input {image.name!r}")
    outputs = session.get_outputs()
    return SessionIO(
        input_name=image.name,
        input_dtype=_ORT_FLOAT_TYPES[image.type],
        input_shape=image.shape,
        output_names=tuple(o.name for o in outputs),
        metadata=dict(session.get_modelmeta().custom_metadata_map),
        extra_inputs=tuple(i for i in inputs if i.name != image.name),
        output_shapes=tuple(_shape(o.shape) for o in outputs),
    )
