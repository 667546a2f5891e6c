"""End-to-end (NMS-free) ONNX exports: RT-DETR deploy exports and HF/optimum DETR-family exports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from models.base import DetectorOptions
from models.detectors.onnx_base import FrameFeeds, OnnxDetector, PaddedImage
from models.detectors.onnx_meta import (
    dense_class_names,
    network_input_hw,
    read_class_mapping,
    read_json,
    round_to_stride,
)
from models.errors import InvalidModelError, ModelLoadError
from models.ops.boxes import clip_xyxy, cxcywh_to_xyxy
from models.runtimes.onnx import SessionIO
from models.types import Detections, RGBImage

ORIG_SIZES_INPUT = "orig_target_sizes"
PIXEL_MASK_INPUT = "pixel_mask"
# DETR-style heads score C real classes plus a trailing "no object" class with a softmax; the
# rest of the family (RT-DETR, Deformable/Conditional DETR, D-FINE) use per-class sigmoids.
SOFTMAX_MODEL_TYPES = frozenset({"detr", "table-transformer", "yolos"})
_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


@dataclass(frozen=True, slots=True)
class _FrameSize:
    height_px: int
    width_px: int


def _resize(image: RGBImage, height_px: int, width_px: int) -> RGBImage:
    if image.shape[:2] == (height_px, width_px):
        return image
    return np.asarray(cv2.resize(image, (width_px, height_px), interpolation=cv2.INTER_LINEAR), np.uint8)


def _output_index(io: SessionIO, name: str) -> int:
    lowered = [n.lower() for n in io.output_names]
    return lowered.index(name)


class BoxesScoresLabelsOnnx(OnnxDetector[_FrameSize]):
    """Inputs ``images`` [B, 3, H, W] (RGB in [0, 1], plain resize) and ``orig_target_sizes`` [B, 2] (w, h);
    outputs ``labels`` [B, Q], ``boxes`` [B, Q, 4] (xyxy, source pixels) and ``scores`` [B, Q].

    This is the lyuwenyu RT-DETR / D-FINE ``export_onnx.py`` deploy layout. Labels are whatever the
    export emits (COCO category ids 1..90 when it was trained with ``remap_mscoco_category``), so
    class names must come with the model: metadata ``names``, ``<stem>.names.json`` or ``config.json``.
    """

    def __init__(
        self,
        spec: str,
        model_path: Path,
        session: ort.InferenceSession,
        io: SessionIO,
        device: str,
        options: DetectorOptions,
    ) -> None:
        super().__init__(model_path=model_path, session=session, io=io, device=device, options=options)
        sizes = next((i for i in io.extra_inputs if i.name == ORIG_SIZES_INPUT), None)
        if sizes is None or sizes.type not in _INT_TYPES or len(io.extra_inputs) != 1:
            raise ModelLoadError(
                f"{model_path}: outputs boxes/scores/labels need exactly one extra input {ORIG_SIZES_INPUT!r} "
                f"(int64 [B, 2], w and h), got {[(i.name, i.type) for i in io.extra_inputs]}"
            )
        self._sizes_dtype = _INT_TYPES[sizes.type]
        self._input_hw = network_input_hw(io, options)
        self._labels, self._boxes, self._scores = (_output_index(io, n) for n in ("labels", "boxes", "scores"))
        mapping, sidecars = read_class_mapping(model_path, io.metadata)
        class_names = dense_class_names(mapping, None, model_path)
        # A plain resize to the network's height x width: pre-scaled frames would lose rows it keeps.
        self.info = self._make_info(
            spec=spec, class_names=class_names, input_hw=self._input_hw, keeps_aspect=False, extra_files=sidecars
        )

    def _pre_process(self, image: RGBImage) -> tuple[FrameFeeds, _FrameSize]:
        height, width = image.shape[:2]
        feeds: FrameFeeds = {
            self._io.input_name: PaddedImage.whole(_resize(image, *self._input_hw)),
            ORIG_SIZES_INPUT: np.array([width, height], self._sizes_dtype),
        }
        return feeds, _FrameSize(height, width)

    def _post_process(self, outputs: list[NDArray[Any]], meta: _FrameSize, threshold: float) -> Detections:
        scores = outputs[self._scores].astype(np.float32, copy=False).reshape(-1)
        labels = outputs[self._labels].astype(np.int64, copy=False).reshape(-1)
        boxes = outputs[self._boxes].astype(np.float32, copy=False).reshape(-1, 4)
        keep = (scores >= threshold) & (labels >= 0) & (labels < len(self.info.class_names))
        order = np.argsort(-scores[keep], kind="stable")
        xyxy = clip_xyxy(boxes[keep][order], meta.width_px, meta.height_px)
        return Detections.from_arrays(xyxy, scores[keep][order], labels[keep][order])


def pixel_normalization(preprocessor: Mapping[str, Any] | None) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-channel ``(scale, offset)`` such that ``input = uint8 * scale + offset``, from a HF ``preprocessor_config``.

    Follows the HF image processors: ``do_rescale`` (default on, ``rescale_factor`` 1/255), then
    ``do_normalize`` with ``image_mean``/``image_std``. Without a config: [0, 1] inputs, no mean/std.

    Returns:
        Two (3, 1, 1) float32 arrays, broadcastable over a (3, H, W) blob.
    """
    config = preprocessor or {}
    scale = np.full(3, config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) else 1.0, np.float64)
    offset = np.zeros(3, np.float64)
    if config.get("do_normalize", False):
        mean = np.asarray(config.get("image_mean", (0.0, 0.0, 0.0)), np.float64)
        std = np.asarray(config.get("image_std", (1.0, 1.0, 1.0)), np.float64)
        scale, offset = scale / std, -mean / std
    return scale.astype(np.float32).reshape(3, 1, 1), offset.astype(np.float32).reshape(3, 1, 1)


HF_SIDECARS = ("config.json", "preprocessor_config.json")
"""What an HF/optimum export writes beside ``model.onnx``; a logits/pred_boxes graph cannot be read without them."""


def _read_hf_sidecars(model_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``config.json`` (with ``model_type``) and ``preprocessor_config.json`` beside a logits/pred_boxes export.

    Without them the scores would be read wrongly: a DETR's last logit ("no object") would become a class,
    and pixels would skip the mean/std the model was trained with. Guessing silently is worse than refusing.

    Raises:
        InvalidModelError: a file is missing, or ``config.json`` has no ``model_type``; the message names the
            files and how to provide them.
    """
    config_path, preprocessor_path = (model_path.with_name(n) for n in HF_SIDECARS)
    config, preprocessor = read_json(config_path), read_json(preprocessor_path)
    missing = [p.name for p, data in ((config_path, config), (preprocessor_path, preprocessor)) if data is None]
    if missing or config is None or preprocessor is None:
        raise InvalidModelError(
            f"{model_path}: a logits/pred_boxes (HF DETR-family) export needs {' and '.join(missing)} beside it "
            f"in {model_path.parent}, to tell a softmax DETR (whose last class is 'no object') from a sigmoid "
            "one and to normalise pixels as in training. Export with optimum (`optimum-cli export onnx --model "
            "ID DIR` writes both files next to model.onnx), or copy them from the checkpoint; for a model "
            'without them, write config.json {"model_type": "rt_detr"} (or "detr" for softmax) and '
            'preprocessor_config.json {"do_rescale": true, "do_normalize": false} yourself'
        )
    if not isinstance(config.get("model_type"), str):
        raise InvalidModelError(
            f'{config_path}: no "model_type" (e.g. "detr", "rt_detr"); it says how to read the model\'s '
            "logits. Use the config.json of the checkpoint the model was exported from"
        )
    return config, preprocessor


class DetrLogitsOnnx(OnnxDetector[_FrameSize]):
    """Outputs ``logits`` [B, Q, C] and ``pred_boxes`` [B, Q, 4] (normalized cx, cy, w, h), as HF/optimum export.

    ``config.json`` and ``preprocessor_config.json`` must sit next to the model (``_read_hf_sidecars``).
    Scores are sigmoids (RT-DETR, Deformable DETR, ...) unless ``config.json``'s ``model_type`` is a softmax
    one (DETR), whose last class is "no object". Pixels are scaled as ``preprocessor_config.json`` says.
    A fixed input size is filled by a plain resize (as RT-DETR's processor does); a dynamic one keeps the
    aspect ratio, long side = input size.
    """

    uint8_image_feed = False  # its feed is normalised with the processor's mean/std on the CPU

    def __init__(
        self,
        spec: str,
        model_path: Path,
        session: ort.InferenceSession,
        io: SessionIO,
        device: str,
        options: DetectorOptions,
    ) -> None:
        super().__init__(model_path=model_path, session=session, io=io, device=device, options=options)
        unknown = [i.name for i in io.extra_inputs if i.name != PIXEL_MASK_INPUT]
        if unknown:
            raise ModelLoadError(f"{model_path}: unexpected inputs {unknown} for a logits/pred_boxes export")
        self._has_mask = len(io.extra_inputs) == 1
        config_path, preprocessor_path = (model_path.with_name(n) for n in HF_SIDECARS)
        config, preprocessor = _read_hf_sidecars(model_path)
        self._softmax = config["model_type"] in SOFTMAX_MODEL_TYPES
        self._scale, self._offset = pixel_normalization(preprocessor)
        self._fixed_hw = io.input_shape[2] is not None and io.input_shape[3] is not None
        self._input_hw = network_input_hw(io, options)
        self._logits, self._pred_boxes = (_output_index(io, n) for n in ("logits", "pred_boxes"))
        mapping, sidecars = read_class_mapping(model_path, io.metadata)
        class_names = dense_class_names(mapping, self._num_classes(), model_path)
        extra = [p for p in (config_path, preprocessor_path) if p.is_file() and p not in sidecars]
        self.info = self._make_info(
            spec=spec,
            class_names=class_names,
            input_hw=self._input_hw,
            keeps_aspect=not self._fixed_hw,  # a fixed input is a plain resize, a dynamic one a long-side fit
            extra_files=[*sidecars, *extra],
        )

    def _num_classes(self) -> int:
        channels = self._io.output_shapes[self._logits][-1]
        if channels is None:
            channels = self._probe_output_shapes(self._input_hw)[self._logits][-1]
        return channels - 1 if self._softmax else channels

    def _net_hw(self, height_px: int, width_px: int) -> tuple[int, int]:
        if self._fixed_hw:
            return self._input_hw
        scale = max(self._input_hw) / max(height_px, width_px)
        return round_to_stride(round(height_px * scale)), round_to_stride(round(width_px * scale))

    def _pre_process(self, image: RGBImage) -> tuple[FrameFeeds, _FrameSize]:
        height, width = image.shape[:2]
        net_h, net_w = self._net_hw(height, width)
        resized = _resize(image, net_h, net_w).transpose(2, 0, 1)
        blob = (resized * self._scale + self._offset).astype(self._io.input_dtype, copy=False)
        feeds: FrameFeeds = {self._io.input_name: blob}
        if self._has_mask:
            feeds[PIXEL_MASK_INPUT] = np.ones((net_h, net_w), np.int64)
        return feeds, _FrameSize(height, width)

    def _post_process(self, outputs: list[NDArray[Any]], meta: _FrameSize, threshold: float) -> Detections:
        logits = outputs[self._logits].astype(np.float32, copy=False)  # (Q, C)
        boxes_norm = outputs[self._pred_boxes].astype(np.float32, copy=False)  # (Q, 4)
        if self._softmax:
            query, class_id, score = _softmax_decode(logits, threshold)
        else:
            query, class_id, score = _sigmoid_decode(logits, threshold)
        size = np.array([meta.width_px, meta.height_px] * 2, np.float32)
        xyxy = clip_xyxy(cxcywh_to_xyxy(boxes_norm[query]) * size, meta.width_px, meta.height_px)
        return Detections.from_arrays(xyxy, score, class_id)


def _sigmoid_decode(
    logits: NDArray[np.float32], threshold: float
) -> tuple[NDArray[np.intp], NDArray[np.int64], NDArray[np.float32]]:
    """Top-Q (query, class) pairs over all queries x classes, as HF's RT-DETR post-processing does."""
    num_queries, num_classes = logits.shape
    probs = (1 / (1 + np.exp(-logits))).reshape(-1)
    flat = np.flatnonzero(probs >= threshold)
    flat = flat[np.argsort(-probs[flat], kind="stable")][:num_queries]
    return flat // num_classes, (flat % num_classes).astype(np.int64), probs[flat].astype(np.float32)


def _softmax_decode(
    logits: NDArray[np.float32], threshold: float
) -> tuple[NDArray[np.intp], NDArray[np.int64], NDArray[np.float32]]:
    """Best real class per query; the last column is DETR's "no object"."""
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (exp / exp.sum(axis=1, keepdims=True))[:, :-1]
    class_id = probs.argmax(axis=1)
    score = probs[np.arange(len(class_id)), class_id]
    query = np.flatnonzero(score >= threshold)
    query = query[np.argsort(-score[query], kind="stable")]
    return query, class_id[query].astype(np.int64), score[query].astype(np.float32)
