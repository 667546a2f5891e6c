"""NanoDet's GFL head outputs (``models.nanodet``'s served model, ``preannotate_layout`` = ``nanodet-gfl``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from models import nanodet
from models.base import DetectorOptions
from models.detectors.onnx_base import FrameFeeds, OnnxDetector, PaddedImage
from models.detectors.onnx_meta import dense_class_names, network_input_hw, read_class_mapping
from models.detectors.yolo_onnx import LetterboxMeta, detections_in_frame
from models.errors import ModelLoadError
from models.ops.boxes import nms_per_class, plan_letterbox, resize_for
from models.runtimes.onnx import SessionIO
from models.types import Detections, RGBImage

# Upstream's `get_bboxes`: per-class NMS at IoU 0.6, at most 100 boxes a frame.
NMS_IOU = 0.6
MAX_DETECTIONS = 100
_PAD_VALUE = 0  # upstream letterboxes with warpPerspective's default border: black


def center_priors(input_hw: tuple[int, int], strides_px: tuple[int, ...]) -> NDArray[np.float32]:
    """(cells, 3) rows of x, y (cell centres in input pixels) and stride, over every level in output order
    (row-major within a level, as the head flattens its maps)."""
    levels = []
    for stride in strides_px:
        rows, cols = -(-input_hw[0] // stride), -(-input_hw[1] // stride)
        y, x = np.mgrid[0:rows, 0:cols]
        levels.append(
            np.stack([(x.ravel() + 0.5) * stride, (y.ravel() + 0.5) * stride, np.full(rows * cols, stride)], axis=1)
        )
    return np.concatenate(levels).astype(np.float32)


def distances_px(logits: NDArray[np.float32], reg_max: int, stride_px: NDArray[np.float32]) -> NDArray[np.float32]:
    """(n, 4 * (reg_max + 1)) GFL logits -> (n, 4) distances left, top, right, bottom in pixels: the expectation
    of each side's softmax over 0..reg_max strides."""
    bins = logits.reshape(len(logits), 4, reg_max + 1)
    weights = np.exp(bins - bins.max(axis=2, keepdims=True))
    weights /= weights.sum(axis=2, keepdims=True)
    expectation: NDArray[np.float32] = weights @ np.arange(reg_max + 1, dtype=np.float32)
    return expectation * stride_px[:, None]


class NanoDetOnnx(OnnxDetector[LetterboxMeta]):
    """Outputs ``cls_<s>`` (B, cells, nc) sigmoid scores and ``box_<s>`` (B, cells, 4 x (reg_max + 1)) per stride.

    Frames are letterboxed (centred, black) into the fixed input, as upstream's keep-ratio warp does; every class
    scoring at least the threshold at a cell is a candidate (upstream's multi-label NMS), decoded from the cell
    centre and its distributions, suppressed per class, mapped back to the frame.
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
        self._input_hw = network_input_hw(io, options)
        try:
            strides = tuple(int(s) for s in json.loads(io.metadata.get("strides", "[8, 16, 32]")))
            self._reg_max = int(io.metadata.get("reg_max", nanodet.REG_MAX))
        except (ValueError, TypeError) as exc:
            raise ModelLoadError(f"{model_path}: metadata 'strides' / 'reg_max' unreadable: {exc}") from exc
        names = [f"cls_{s}" for s in strides] + [f"box_{s}" for s in strides]
        missing = [n for n in names if n not in io.output_names]
        if missing:
            raise ModelLoadError(f"{model_path}: NanoDet layout without outputs {', '.join(missing)}")
        self._order = [io.output_names.index(n) for n in names]
        self._levels = len(strides)
        self._priors = center_priors(self._input_hw, strides)
        num_classes = io.output_shapes[self._order[0]][-1]
        mapping, sidecars = read_class_mapping(model_path, io.metadata)
        class_names = dense_class_names(mapping, num_classes, model_path)
        self.info = self._make_info(
            spec=spec, class_names=class_names, input_hw=self._input_hw, keeps_aspect=True, extra_files=sidecars
        )

    def _pre_process(self, image: RGBImage) -> tuple[FrameFeeds, LetterboxMeta]:
        height, width = image.shape[:2]
        plan = plan_letterbox(height, width, *self._input_hw)
        placed = PaddedImage(
            resize_for(image, plan), plan.height_px, plan.width_px, plan.top_px, plan.left_px, _PAD_VALUE
        )
        meta = LetterboxMeta(plan.letterbox, height_px=height, width_px=width, input_hw=self._input_hw)
        return {self._io.input_name: placed}, meta

    def _post_process(self, outputs: list[NDArray[Any]], meta: LetterboxMeta, threshold: float) -> Detections:
        ordered = [outputs[i] for i in self._order]
        scores = np.concatenate(ordered[: self._levels]).astype(np.float32, copy=False)  # (cells, nc)
        cell, class_id = np.nonzero(scores >= max(threshold, 1e-6))
        if len(cell) == 0:
            return Detections.empty()
        confidence = scores[cell, class_id]
        cells = np.unique(cell)
        logits = np.concatenate(ordered[self._levels :])[cells].astype(np.float32, copy=False)
        priors = self._priors[cells]
        ltrb = distances_px(logits, self._reg_max, priors[:, 2])
        boxes = np.concatenate([priors[:, :2] - ltrb[:, :2], priors[:, :2] + ltrb[:, 2:]], axis=1)
        height, width = self._input_hw
        np.clip(boxes, 0, [width, height, width, height], out=boxes)
        xyxy = boxes[np.searchsorted(cells, cell)]
        class_ids = class_id.astype(np.int64)
        kept = nms_per_class(xyxy, confidence, class_ids, iou_threshold=NMS_IOU, max_detections=MAX_DETECTIONS)
        return detections_in_frame(xyxy[kept], confidence[kept], class_ids[kept], meta)
