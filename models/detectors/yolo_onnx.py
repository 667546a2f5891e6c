"""Ultralytics YOLOv8/YOLO11 ONNX exports (``[B, 4+nc, N]``) and their NMS-free end2end form (``[B, N, 6]``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from models.base import DetectorOptions
from models.detectors.onnx_base import Feeds, OnnxDetector
from models.detectors.onnx_meta import STRIDE_PX, dense_class_names, network_input_hw, read_class_mapping
from models.ops.boxes import Letterbox, clip_xyxy, cxcywh_to_xyxy, letterbox, nms_per_class
from models.runtimes.onnx import SessionIO
from models.types import Detections, RGBImage

# Ultralytics' predict defaults, so results match `yolo predict` on the same export.
NMS_IOU = 0.7
MAX_DETECTIONS = 300


@dataclass(frozen=True, slots=True)
class _LetterboxMeta:
    letterbox: Letterbox
    height_px: int
    width_px: int


class YoloOnnx(OnnxDetector[_LetterboxMeta]):
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
        self.info = self._make_info(spec=spec, class_names=class_names, input_hw=self._input_hw, extra_files=sidecars)

    def _num_classes(self) -> int | None:
        channels = self._io.output_shapes[0][1]
        if channels is None:  # symbolic in some exports; one blank frame tells
            channels = self._probe_output_shapes(self._input_hw)[0][1]
        return channels - 4

    def _pre_process(self, image: RGBImage) -> tuple[Feeds, _LetterboxMeta]:
        boxed, lb = letterbox(image, *self._input_hw, stride_px=self._stride_px)
        meta = _LetterboxMeta(lb, height_px=image.shape[0], width_px=image.shape[1])
        return {self._io.input_name: boxed}, meta  # uint8: batching writes the float blob

    def _post_process(self, outputs: list[NDArray[Any]], meta: _LetterboxMeta, threshold: float) -> Detections:
        candidates = outputs[0].astype(np.float32, copy=False).T  # (N, 4 + nc)
        scores_all = candidates[:, 4:]
        class_id = scores_all.argmax(axis=1)
        confidence = scores_all[np.arange(len(class_id)), class_id]
        keep = confidence >= threshold
        xyxy = cxcywh_to_xyxy(candidates[keep, :4])
        confidence, class_id = confidence[keep], class_id[keep].astype(np.int64)
        kept = nms_per_class(xyxy, confidence, class_id, iou_threshold=NMS_IOU, max_detections=MAX_DETECTIONS)
        return _to_source(xyxy[kept], confidence[kept], class_id[kept], meta)


class YoloEnd2EndOnnx(YoloOnnx):
    """One output ``[B, N, 6]``: x1, y1, x2, y2 (letterboxed input pixels), score, class; NMS is in the graph."""

    def _num_classes(self) -> int | None:
        return None  # the layout does not carry it; Ultralytics always embeds `names`

    def _post_process(self, outputs: list[NDArray[Any]], meta: _LetterboxMeta, threshold: float) -> Detections:
        rows = outputs[0].astype(np.float32, copy=False)
        class_id = rows[:, 5].round().astype(np.int64)
        keep = (rows[:, 4] >= threshold) & (class_id >= 0) & (class_id < len(self.info.class_names))
        return _to_source(rows[keep, :4], rows[keep, 4], class_id[keep], meta)


def _metadata_stride(metadata: dict[str, str]) -> int:
    """Ultralytics' ``stride`` metadata (the largest feature stride), else 32."""
    value = metadata.get("stride", "")
    return int(value) if value.isdigit() and int(value) > 0 else STRIDE_PX


def _to_source(
    xyxy_net: NDArray[np.float32], confidence: NDArray[np.float32], class_id: NDArray[np.int64], meta: _LetterboxMeta
) -> Detections:
    xyxy = clip_xyxy(meta.letterbox.to_source(xyxy_net), meta.width_px, meta.height_px)
    return Detections.from_arrays(xyxy, confidence, class_id)
