"""Ultralytics YOLOv8/YOLO11 ONNX exports (``[B, 4+nc, N]``) and their NMS-free end2end form (``[B, N, 6]``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from models.base import DetectorOptions
from models.detectors.onnx_base import FrameFeeds, OnnxDetector, PaddedImage
from models.detectors.onnx_meta import STRIDE_PX, dense_class_names, network_input_hw, read_class_mapping
from models.ops.boxes import (
    LETTERBOX_PAD_VALUE,
    Letterbox,
    clip_xyxy,
    cxcywh_to_xyxy,
    nms_per_class,
    plan_letterbox,
    resize_for,
)
from models.runtimes.onnx import SessionIO
from models.types import Detections, RGBImage

# Ultralytics' predict defaults, so results match `yolo predict` on the same export.
NMS_IOU = 0.7
MAX_DETECTIONS = 300


@dataclass(frozen=True, slots=True)
class LetterboxMeta:
    """How one frame was fitted: the mapping, the frame's own size and the canvas it was fed on."""

    letterbox: Letterbox
    height_px: int
    width_px: int
    input_hw: tuple[int, int]


class YoloOnnx(OnnxDetector[LetterboxMeta]):
    """One output ``[B, 4+nc, N]``: cx, cy, w, h in letterboxed input pixels, then per-class scores.

    Frames are letterboxed like Ultralytics' predictor (centred, grey 114, bilinear; the minimum
    stride-aligned rectangle for dynamic-shape exports), fed as RGB in [0, 1];
    boxes are decoded with a class argmax, the score threshold and per-class NMS, then mapped back.
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
        # Like Ultralytics' predictor: a dynamic-shape export gets the minimum stride-aligned
        # rectangle (less padding, less compute), a static one the full square.
        dynamic_hw = len(io.input_shape) == 4 and None in io.input_shape[2:]
        self._stride_px: int | None = _metadata_stride(io.metadata) if dynamic_hw else None
        mapping, sidecars = read_class_mapping(model_path, io.metadata)
        class_names = dense_class_names(mapping, self._num_classes(), model_path)
        self.info = self._make_info(
            spec=spec, class_names=class_names, input_hw=self._input_hw, keeps_aspect=True, extra_files=sidecars
        )

    def _num_classes(self) -> int | None:
        channels = self._io.output_shapes[0][1]
        if channels is None:  # symbolic in some exports; one blank frame tells
            channels = self._probe_output_shapes(self._input_hw)[0][1]
        return channels - 4

    def _pre_process(self, image: RGBImage) -> tuple[FrameFeeds, LetterboxMeta]:
        height, width = image.shape[:2]
        plan = plan_letterbox(height, width, *self._input_hw, stride_px=self._stride_px)
        # Not padded here: batching places the resized frame on the grey canvas as it normalises it.
        placed = PaddedImage(
            resize_for(image, plan), plan.height_px, plan.width_px, plan.top_px, plan.left_px, LETTERBOX_PAD_VALUE
        )
        meta = LetterboxMeta(plan.letterbox, height_px=height, width_px=width, input_hw=(plan.height_px, plan.width_px))
        return {self._io.input_name: placed}, meta

    def _post_process(self, outputs: list[NDArray[Any]], meta: LetterboxMeta, threshold: float) -> Detections:
        rows = outputs[0].astype(np.float32, copy=False)  # (4 + nc, N)
        xyxy, confidence, class_id, _ = select_candidates(rows[:4], rows[4:], threshold)
        return detections_in_frame(xyxy, confidence, class_id, meta)


class YoloEnd2EndOnnx(YoloOnnx):
    """One output ``[B, N, 6]``: x1, y1, x2, y2 (letterboxed input pixels), score, class; NMS is in the graph."""

    def _num_classes(self) -> int | None:
        return None  # the layout does not carry it; Ultralytics always embeds `names`

    def _post_process(self, outputs: list[NDArray[Any]], meta: LetterboxMeta, threshold: float) -> Detections:
        rows = outputs[0].astype(np.float32, copy=False)
        class_id = rows[:, 5].round().astype(np.int64)
        keep = (rows[:, 4] >= threshold) & (class_id >= 0) & (class_id < len(self.info.class_names))
        return detections_in_frame(rows[keep, :4], rows[keep, 4], class_id[keep], meta)


def select_candidates(
    cxcywh: NDArray[np.float32], scores: NDArray[np.float32], threshold: float
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64], NDArray[np.intp]]:
    """Candidate columns ``cxcywh`` (4, N) and ``scores`` (nc, N) -> the boxes (xyxy, input pixels), scores and
    classes kept by the threshold and per-class NMS, best first, with the candidate columns they came from."""
    # The best score per candidate first, over contiguous rows; the class only for those kept.
    confidence = scores.max(axis=0)
    keep = np.flatnonzero(confidence >= threshold)
    class_id = scores[:, keep].argmax(axis=0).astype(np.int64)
    xyxy = cxcywh_to_xyxy(np.ascontiguousarray(cxcywh[:, keep].T))
    confidence = confidence[keep]
    kept = nms_per_class(xyxy, confidence, class_id, iou_threshold=NMS_IOU, max_detections=MAX_DETECTIONS)
    return xyxy[kept], confidence[kept], class_id[kept], keep[kept]


def _metadata_stride(metadata: dict[str, str]) -> int:
    """Ultralytics' ``stride`` metadata (the largest feature stride), else 32."""
    value = metadata.get("stride", "")
    return int(value) if value.isdigit() and int(value) > 0 else STRIDE_PX


def detections_in_frame(
    xyxy_net: NDArray[np.float32], confidence: NDArray[np.float32], class_id: NDArray[np.int64], meta: LetterboxMeta
) -> Detections:
    xyxy = clip_xyxy(meta.letterbox.to_source(xyxy_net), meta.width_px, meta.height_px)
    return Detections.from_arrays(xyxy, confidence, class_id)
