"""``onnx:PATH``: open an ONNX export, recognise its output layout and build the matching detector."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.base import DEFAULT_BATCH_SIZE, Detector, DetectorOptions
from models.detectors.e2e_onnx import BoxesScoresLabelsOnnx, DetrLogitsOnnx
from models.detectors.nanodet_onnx import NanoDetOnnx
from models.detectors.onnx_meta import network_input_hw
from models.detectors.yolo_onnx import YoloEnd2EndOnnx, YoloOnnx
from models.detectors.yolo_seg_onnx import YoloSegEnd2EndOnnx, YoloSegOnnx
from models.errors import ModelLoadError, ModelNotFoundError
from models.runtimes.onnx import (
    SessionIO,
    create_session,
    graph_inputs,
    image_input,
    resolve_device,
    session_io,
    trt_profile_shapes,
)

log = logging.getLogger(__name__)


class OnnxLayout(enum.Enum):
    """The output layouts ``onnx:`` understands (values are for messages)."""

    YOLO = "Ultralytics YOLOv8/YOLO11: one output [B, 4+nc, N] (cx, cy, w, h, class scores)"
    YOLO_END2END = "Ultralytics end2end: one output [B, N, 6] (x1, y1, x2, y2, score, class)"
    BOXES_SCORES_LABELS = "RT-DETR deploy: inputs images + orig_target_sizes; outputs labels, boxes, scores"
    LOGITS_PRED_BOXES = "HF/optimum DETR family: outputs logits [B, Q, C] and pred_boxes [B, Q, 4]"
    YOLO_SEG = "Ultralytics -seg: outputs [B, 4+nc+nm, N] (boxes, scores, mask coefficients), [B, nm, H/4, W/4]"
    YOLO_SEG_END2END = "Ultralytics -seg end2end: outputs [B, N, 6+nm] and prototypes [B, nm, H/4, W/4]"
    NANODET_GFL = "NanoDet as `preannotate models fetch nanodet` writes it: cls_<stride> and box_<stride> per stride"


def _unsupported(model_path: Path, io: SessionIO, why: str) -> ModelLoadError:
    outputs = ", ".join(f"{n} {list(s)}" for n, s in zip(io.output_names, io.output_shapes, strict=True))
    supported = "; ".join(layout.value for layout in OnnxLayout)
    return ModelLoadError(f"{model_path}: {why} (outputs: {outputs}). Supported layouts: {supported}")


def detect_layout(io: SessionIO, model_path: Path) -> OnnxLayout:
    """Recognise the export from its output names and shapes (and Ultralytics metadata).

    Raises:
        ModelLoadError: the layout is none of ``OnnxLayout``, or is a non-detection Ultralytics task.
    """
    task = io.metadata.get("task", "detect")
    if task not in ("detect", "segment"):
        raise _unsupported(model_path, io, f"Ultralytics task {task!r} is not object detection or segmentation")
    if io.metadata.get("preannotate_layout") == "nanodet-gfl":
        return OnnxLayout.NANODET_GFL
    segmentation = _segmentation_layout(io)
    if segmentation is not None:
        return segmentation
    names = {n.lower() for n in io.output_names}
    if {"boxes", "scores", "labels"} <= names:
        return OnnxLayout.BOXES_SCORES_LABELS
    if {"logits", "pred_boxes"} <= names:
        return OnnxLayout.LOGITS_PRED_BOXES
    if len(io.output_names) == 1 and len(io.output_shapes[0]) == 3:
        _, dim1, dim2 = io.output_shapes[0]
        # [B, N, 6] rows come from end2end heads and from `nms=True` exports (whose metadata says
        # end2end False). YOLO's N is at least 21 (imgsz 32), so a last dim of 6 always means rows.
        if io.metadata.get("end2end", "").lower() == "true" or dim2 == 6:
            return OnnxLayout.YOLO_END2END
        if dim1 is None or dim1 > 4:
            return OnnxLayout.YOLO
    raise _unsupported(model_path, io, "unrecognised output layout")


def _segmentation_layout(io: SessionIO) -> OnnxLayout | None:
    """Two outputs, candidates (3-D) and prototypes (4-D): an Ultralytics ``-seg`` export, else None."""
    ranks = sorted(len(shape) for shape in io.output_shapes)
    if len(io.output_shapes) != 2 or ranks != [3, 4]:
        return None
    candidates = next(shape for shape in io.output_shapes if len(shape) == 3)
    protos = next(shape for shape in io.output_shapes if len(shape) == 4)
    # Rows of 6 + nm (x1, y1, x2, y2, score, class, coefficients); YOLO's N is never 6 + 32 (21, 84, 189, ...).
    end2end = io.metadata.get("end2end", "").lower() == "true"
    if end2end or (protos[1] is not None and candidates[2] == 6 + protos[1]):
        return OnnxLayout.YOLO_SEG_END2END
    return OnnxLayout.YOLO_SEG


_DETECTORS: dict[OnnxLayout, Callable[[str, Path, ort.InferenceSession, SessionIO, str, DetectorOptions], Detector]] = {
    OnnxLayout.YOLO: YoloOnnx,
    OnnxLayout.YOLO_END2END: YoloEnd2EndOnnx,
    OnnxLayout.BOXES_SCORES_LABELS: BoxesScoresLabelsOnnx,
    OnnxLayout.LOGITS_PRED_BOXES: DetrLogitsOnnx,
    OnnxLayout.YOLO_SEG: YoloSegOnnx,
    OnnxLayout.YOLO_SEG_END2END: YoloSegEnd2EndOnnx,
    OnnxLayout.NANODET_GFL: NanoDetOnnx,
}


def load_onnx_detector(spec: str, path: str, options: DetectorOptions) -> Detector:
    """Load an ONNX detection export of any layout in ``OnnxLayout``.

    Args:
        spec: the spec as given (kept in ``info.spec``).
        path: the ``.onnx`` file; sidecars (``<stem>.names.json``, ``config.json``,
            ``preprocessor_config.json``) are looked for next to it.
        options: device, batch size, input size and threads.

    Raises:
        ModelNotFoundError: the file does not exist.
        ModelLoadError: onnxruntime cannot open it, or its layout is unsupported.
        DeviceUnavailableError: ``cuda`` was asked for without onnxruntime-gpu.
    """
    model_path = Path(path).expanduser()
    if not model_path.is_file():
        raise ModelNotFoundError(
            f"ONNX model {model_path} does not exist; check the path in {spec!r} (is the model volume mounted?)"
        )
    device = resolve_device(options.device)
    try:
        session = create_session(
            str(model_path),
            device=device,
            num_threads=options.num_threads,
            tensorrt=options.tensorrt,
            fp16=options.fp16,
            engine_cache_dir=options.engine_cache_dir,
            trt_profile=trt_profile_for(model_path, options) if options.tensorrt and device == "cuda" else None,
        )
    except ModelLoadError as exc:
        raise ModelLoadError(f"{model_path}: {exc} (is it a complete ONNX export?)") from exc
    io = session_io(session)
    layout = detect_layout(io, model_path)
    log.info("%s: %s layout", model_path, layout.name)
    return _DETECTORS[layout](spec, model_path, session, io, device, options)


def trt_profile_for(model_path: Path, options: DetectorOptions) -> dict[str, str] | None:
    """TensorRT profile shapes for the export at ``model_path``, read from the graph before a session exists.

    The batch ceiling and input size follow the detectors' own rules (``network_input_hw``). Frames may
    come out transposed (DETR-family exports fit the longest side, whichever it is), so both sides range
    up to the larger one: every shape fed lies inside the profile. None when the file cannot be read
    here (ORT reports it).
    """
    import onnx  # here: importing it (ml_dtypes) costs half a second at every start, and only TensorRT needs it

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # a broken file is ORT's to report, with its own message
        return None
    inputs = graph_inputs(model)
    if not inputs:
        return None
    image = image_input(inputs)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    io = SessionIO(
        input_name=image.name, input_dtype=np.float32, input_shape=image.shape, output_names=(), metadata=metadata
    )
    max_batch = options.batch_size or DEFAULT_BATCH_SIZE["cuda"]
    input_hw = network_input_hw(io, options)
    side = max(input_hw)
    return trt_profile_shapes(inputs, max_batch=max_batch, max_hw=(side, side), opt_hw=input_hw)
