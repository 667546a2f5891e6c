"""Tiny constant ONNX graphs with the output layouts of real detector exports (no weights, no downloads).

Every output is a constant, broadcast to the input's batch size, so the decoders can be checked
against exact, hand-computed boxes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what onnxruntime 1.x accepts everywhere


def _dims(batch: int | None, *rest: int | str | None) -> list[int | str | None]:
    return ["batch" if batch is None else batch, *rest]


def _batch_of(input_name: str, prefix: str) -> list[onnx.NodeProto]:
    """Nodes computing ``<prefix>_b`` = the input's batch dim as a 1-element int64 tensor."""
    return [
        helper.make_node("Shape", [input_name], [f"{prefix}_shape"]),
        helper.make_node("Slice", [f"{prefix}_shape", "zero_1d", "one_1d"], [f"{prefix}_b"]),
    ]


def _broadcast(const_name: str, tail: tuple[int, ...], out: str) -> list[onnx.NodeProto]:
    """``out`` = the [1, *tail] constant expanded to [B, *tail]."""
    return [
        helper.make_node("Concat", ["img_b", f"{out}_tail"], [f"{out}_shape"], axis=0),
        helper.make_node("Expand", [const_name, f"{out}_shape"], [out]),
    ]


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    metadata: Mapping[str, str] | None,
) -> onnx.ModelProto:
    common = [
        numpy_helper.from_array(np.array([0], np.int64), "zero_1d"),
        numpy_helper.from_array(np.array([1], np.int64), "one_1d"),
    ]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=common + initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def yolo_model(
    candidates: NDArray[np.float32],
    *,
    batch: int | None = None,
    height_px: int | None = 640,
    width_px: int | None = 640,
    fp16: bool = False,
    metadata: Mapping[str, str] | None = None,
    end2end: bool = False,
) -> onnx.ModelProto:
    """Input ``images`` [B, 3, H, W]; output ``output0`` = ``candidates`` broadcast over the batch.

    Args:
        candidates: (4 + nc, N) for the YOLOv8 layout, or (N, 6) for ``end2end``.
        batch: a fixed batch dim, or None for a symbolic one.
        height_px: input height (None = symbolic); likewise ``width_px``.
        fp16: float16 input and output, like an Ultralytics ``half=True`` export.
    """
    elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    const = numpy_helper.from_array(candidates[None].astype(np.float16 if fp16 else np.float32), "candidates")
    tail = numpy_helper.from_array(np.array(candidates.shape, np.int64), "output0_tail")
    nodes = _batch_of("images", "img") + _broadcast("candidates", candidates.shape, "output0")
    inputs = [helper.make_tensor_value_info("images", elem, _dims(batch, 3, height_px, width_px))]
    out_dims = _dims(batch, *candidates.shape)
    outputs = [helper.make_tensor_value_info("output0", elem, out_dims)]
    meta = dict(metadata or {})
    if end2end:
        meta.setdefault("end2end", "True")
    return _model(nodes, inputs, outputs, [const, tail], meta)


def rtdetr_deploy_model(
    boxes_norm_xyxy: NDArray[np.float32],
    scores: NDArray[np.float32],
    labels: NDArray[np.int64],
    *,
    batch: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    """The lyuwenyu RT-DETR deploy layout: inputs ``images`` [B, 3, 640, 640] and ``orig_target_sizes``
    [B, 2] (w, h); outputs ``labels`` [B, Q], ``boxes`` [B, Q, 4] and ``scores`` [B, Q].

    ``boxes`` = ``boxes_norm_xyxy`` * (w, h, w, h) per frame, as the real post-processor computes it,
    so a wrong (w, h) feed shows up in the boxes.
    """
    q = len(scores)
    nodes = [
        *_batch_of("images", "img"),
        helper.make_node("Cast", ["orig_target_sizes"], ["sizes_f"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["sizes_f", "sizes_f"], ["sizes_4"], axis=1),
        helper.make_node("Unsqueeze", ["sizes_4", "one_1d"], ["sizes_b14"]),
        helper.make_node("Mul", ["sizes_b14", "boxes_norm"], ["boxes"]),
        *_broadcast("scores_const", (q,), "scores"),
        *_broadcast("labels_const", (q,), "labels"),
    ]
    initializers = [
        numpy_helper.from_array(boxes_norm_xyxy[None].astype(np.float32), "boxes_norm"),
        numpy_helper.from_array(scores[None].astype(np.float32), "scores_const"),
        numpy_helper.from_array(labels[None].astype(np.int64), "labels_const"),
        numpy_helper.from_array(np.array([q], np.int64), "scores_tail"),
        numpy_helper.from_array(np.array([q], np.int64), "labels_tail"),
    ]
    inputs = [
        helper.make_tensor_value_info("images", TensorProto.FLOAT, _dims(batch, 3, 640, 640)),
        helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, _dims(batch, 2)),
    ]
    outputs = [
        helper.make_tensor_value_info("labels", TensorProto.INT64, _dims(batch, q)),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, _dims(batch, q, 4)),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, _dims(batch, q)),
    ]
    return _model(nodes, inputs, outputs, initializers, metadata)


def detr_logits_model(
    logits: NDArray[np.float32],
    pred_boxes_cxcywh_norm: NDArray[np.float32],
    *,
    batch: int | None = None,
    height_px: int | None = 640,
    width_px: int | None = 640,
) -> onnx.ModelProto:
    """The HF/optimum layout: input ``pixel_values`` [B, 3, H, W]; outputs ``logits`` [B, Q, C] and
    ``pred_boxes`` [B, Q, 4].

    ``logits[:, 0, 0]`` additionally gets the mean input value added, so tests can see the pixel
    normalization the detector applied.
    """
    q, c = logits.shape
    probe = np.zeros((1, q, c), np.float32)
    probe[0, 0, 0] = 1.0
    nodes = [
        *_batch_of("pixel_values", "img"),
        *_broadcast("logits_const", (q, c), "logits_base"),
        helper.make_node("ReduceMean", ["pixel_values"], ["pixel_mean_b"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["pixel_mean_b", "axes_1_2"], ["pixel_mean"]),  # [B, 1, 1]
        helper.make_node("Mul", ["pixel_mean", "probe"], ["logits_probe"]),
        helper.make_node("Add", ["logits_base", "logits_probe"], ["logits"]),
        *_broadcast("boxes_const", (q, 4), "pred_boxes"),
    ]
    initializers = [
        numpy_helper.from_array(logits[None].astype(np.float32), "logits_const"),
        numpy_helper.from_array(probe, "probe"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes_1_2"),
        numpy_helper.from_array(pred_boxes_cxcywh_norm[None].astype(np.float32), "boxes_const"),
        numpy_helper.from_array(np.array([q, c], np.int64), "logits_base_tail"),
        numpy_helper.from_array(np.array([q, 4], np.int64), "pred_boxes_tail"),
    ]
    inputs = [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, _dims(batch, 3, height_px, width_px))]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, _dims(batch, q, c)),
        helper.make_tensor_value_info("pred_boxes", TensorProto.FLOAT, _dims(batch, q, 4)),
    ]
    return _model(nodes, inputs, outputs, initializers, None)


def echo_yolo_model(*, side_px: int = 32, fp16: bool = False) -> onnx.ModelProto:
    """Input ``images`` [B, 3, side, side]; output ``output0`` = the pixels themselves as a YOLOv8 layout.

    The input is reshaped to [B, 6, 3 * side * side / 6] (cx, cy, w, h and two class scores, all in [0, 1]),
    so the decoded boxes depend on every pixel value the graph was fed: two feeds giving the same
    detections gave the same tensor.
    """
    elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    candidates = 3 * side_px * side_px // 6
    nodes = [helper.make_node("Reshape", ["images", "echo_shape"], ["output0"])]
    shape = numpy_helper.from_array(np.array([0, 6, -1], np.int64), "echo_shape")
    inputs = [helper.make_tensor_value_info("images", elem, _dims(None, 3, side_px, side_px))]
    outputs = [helper.make_tensor_value_info("output0", elem, _dims(None, 6, candidates))]
    return _model(nodes, inputs, outputs, [shape], None)


def yolo_seg_model(
    candidates: NDArray[np.float32],
    protos: NDArray[np.float32],
    *,
    batch: int | None = None,
    height_px: int | None = 640,
    width_px: int | None = 640,
    metadata: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    """An Ultralytics ``-seg`` layout: input ``images`` [B, 3, H, W]; outputs ``output0`` = ``candidates``
    ((4 + nc + nm, N), or (N, 6 + nm) end2end) broadcast over the batch, and ``output1`` = ``protos``
    (nm, mh, mw) times each frame's brightest input value.

    The prototypes follow the frame they belong to: an all-black frame that fills the input gets all-zero
    prototypes (no mask pixel anywhere), so a decoder that mixes up batch rows shows it.
    """
    nodes = [
        *_batch_of("images", "img"),
        *_broadcast("candidates", candidates.shape, "output0"),
        *_broadcast("protos_const", protos.shape, "protos_b"),
        helper.make_node("ReduceMax", ["images"], ["image_max"], axes=[1, 2, 3], keepdims=1),  # [B, 1, 1, 1]
        helper.make_node("Mul", ["protos_b", "image_max"], ["output1"]),
    ]
    initializers = [
        numpy_helper.from_array(candidates[None].astype(np.float32), "candidates"),
        numpy_helper.from_array(np.array(candidates.shape, np.int64), "output0_tail"),
        numpy_helper.from_array(protos[None].astype(np.float32), "protos_const"),
        numpy_helper.from_array(np.array(protos.shape, np.int64), "protos_b_tail"),
    ]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, _dims(batch, 3, height_px, width_px))]
    outputs = [
        helper.make_tensor_value_info("output0", TensorProto.FLOAT, _dims(batch, *candidates.shape)),
        helper.make_tensor_value_info("output1", TensorProto.FLOAT, _dims(batch, *protos.shape)),
    ]
    meta = {"task": "segment", **(metadata or {})}
    return _model(nodes, inputs, outputs, initializers, meta)


def nanodet_model(
    cls: Mapping[int, NDArray[np.float32]],
    box: Mapping[int, NDArray[np.float32]],
    *,
    side_px: int,
    metadata: Mapping[str, str] | None = None,
    output_order: tuple[str, ...] | None = None,
) -> onnx.ModelProto:
    """NanoDet's served layout (``models.nanodet.served_model``): input ``images`` [B, 3, side, side], outputs
    ``cls_<s>`` [B, cells, nc] and ``box_<s>`` [B, cells, 4 x (reg_max + 1)] per stride, the given constants
    broadcast over the batch. ``output_order``: the outputs' order in the graph (default cls_*, then box_*)."""
    constants = {f"cls_{s}": v for s, v in cls.items()} | {f"box_{s}": v for s, v in box.items()}
    nodes = _batch_of("images", "img")
    initializers = []
    outputs = []
    for name in output_order or tuple(constants):
        value = constants[name]
        initializers.append(numpy_helper.from_array(value[None].astype(np.float32), f"{name}_const"))
        initializers.append(numpy_helper.from_array(np.array(value.shape, np.int64), f"{name}_tail"))
        nodes += _broadcast(f"{name}_const", value.shape, name)
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, _dims(None, *value.shape)))
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, _dims(None, 3, side_px, side_px))]
    return _model(nodes, inputs, outputs, initializers, metadata)
