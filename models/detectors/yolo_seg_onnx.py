"""Ultralytics ``-seg`` ONNX exports: YOLO boxes plus 32 mask coefficients per candidate, and mask prototypes.

``output0`` is ``[B, 4+nc+nm, N]`` (cx, cy, w, h, class scores, mask coefficients) or, end2end, ``[B, N, 6+nm]``
(x1, y1, x2, y2, score, class, coefficients); the 4-D output is the prototypes ``[B, nm, H/4, W/4]``. A kept
box's mask is sigmoid(coefficients . prototypes) > 0.5, zero outside the box (Ultralytics' ``process_mask``).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from models.detectors.yolo_onnx import LetterboxMeta, YoloOnnx, detections_in_frame, select_candidates
from models.errors import ModelLoadError
from models.masks import BoolMask, Masks
from models.ops.boxes import Letterbox
from models.types import Detections


class YoloSegOnnx(YoloOnnx):
    """``output0`` ``[B, 4+nc+nm, N]`` and prototypes ``[B, nm, H/4, W/4]``: boxes decoded as ``YoloOnnx`` does
    (the coefficient rows are not scores), then a mask for each kept box only."""

    makes_masks = True
    _class_rows_end: int  # 4 + nc: where the mask coefficients start in output0
    _protos_index: int

    def _num_classes(self) -> int | None:
        self._protos_index = _protos_index(self._io.output_shapes)
        shapes: list[tuple[int | None, ...]] = list(self._io.output_shapes)
        if shapes[1 - self._protos_index][1] is None or shapes[self._protos_index][1] is None:
            shapes = list(self._probe_output_shapes(self._input_hw))  # symbolic in some exports; one frame tells
        rows, mask_dim = shapes[1 - self._protos_index][1], shapes[self._protos_index][1]
        assert rows is not None  # a probed shape is concrete
        assert mask_dim is not None
        num_classes = rows - 4 - mask_dim
        if num_classes < 1:
            raise ModelLoadError(
                f"{self._model_path}: output0 has {rows} rows per candidate, too few for 4 box rows and {mask_dim} "
                "mask coefficients (one per prototype) plus at least one class"
            )
        self._class_rows_end = 4 + num_classes
        return num_classes

    def _split(self, outputs: list[NDArray[Any]]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(output0 rows, prototypes) of one frame, as float32."""
        protos = outputs[self._protos_index].astype(np.float32, copy=False)
        return outputs[1 - self._protos_index].astype(np.float32, copy=False), protos

    def _post_process(self, outputs: list[NDArray[Any]], meta: LetterboxMeta, threshold: float) -> Detections:
        rows, protos = self._split(outputs)  # (4 + nc + nm, N), (nm, mh, mw)
        end = self._class_rows_end
        xyxy, confidence, class_id, columns = select_candidates(rows[:4], rows[4:end], threshold)
        dets = detections_in_frame(xyxy, confidence, class_id, meta)
        coefficients = np.ascontiguousarray(rows[end:, columns].T)
        return dets.with_masks(prototype_masks(coefficients, protos, dets.xyxy, meta))


class YoloSegEnd2EndOnnx(YoloSegOnnx):
    """``output0`` ``[B, N, 6+nm]`` (x1, y1, x2, y2, score, class, coefficients; NMS in the graph) and prototypes."""

    def _num_classes(self) -> int | None:
        self._protos_index = _protos_index(self._io.output_shapes)
        return None  # the layout does not carry it; Ultralytics always embeds `names`

    def _post_process(self, outputs: list[NDArray[Any]], meta: LetterboxMeta, threshold: float) -> Detections:
        rows, protos = self._split(outputs)  # (N, 6 + nm), (nm, mh, mw)
        class_id = rows[:, 5].round().astype(np.int64)
        keep = (rows[:, 4] >= threshold) & (class_id >= 0) & (class_id < len(self.info.class_names))
        dets = detections_in_frame(rows[keep, :4], rows[keep, 4], class_id[keep], meta)
        coefficients = np.ascontiguousarray(rows[keep, 6:])
        return dets.with_masks(prototype_masks(coefficients, protos, dets.xyxy, meta))


def prototype_masks(
    coefficients: NDArray[np.float32], protos: NDArray[np.float32], xyxy: NDArray[np.float32], meta: LetterboxMeta
) -> Masks:
    """Each kept row's mask, cut to its box in the frame the detector was given.

    Args:
        coefficients: (k, nm) the kept rows' mask coefficients.
        protos: (nm, mh, mw) the frame's prototypes, on the network input (``meta.input_hw``) at 1/4 scale.
        xyxy: (k, 4) the kept boxes in frame pixels (clipped to the frame).
        meta: the frame's letterbox.

    The mask logits (coefficients . prototypes, for the kept rows only) are sampled bilinearly at each frame
    pixel's centre inside its box: the letterboxed input pixel it came from, on the prototypes' grid (half-pixel
    centres, as Ultralytics' upsampling). A pixel is in the mask where the logit is > 0 (sigmoid > 0.5). Only the
    box's pixels are ever computed, never a full frame per row.
    """
    nm, mh, mw = protos.shape
    logits = (coefficients @ protos.reshape(nm, -1)).reshape(-1, mh, mw)
    scale_x, scale_y = mw / meta.input_hw[1], mh / meta.input_hw[0]
    crops: list[BoolMask] = []
    origins = np.zeros((len(xyxy), 2), np.int64)
    for i, box in enumerate(xyxy):
        # Ultralytics' crop_mask keeps pixel index c where x1 <= c < x2.
        x0, y0 = (min(max(math.ceil(float(v)), 0), limit) for v, limit in zip(box[:2], _wh(meta), strict=True))
        x1, y1 = (min(max(math.ceil(float(v)), 0), limit) for v, limit in zip(box[2:], _wh(meta), strict=True))
        if x1 <= x0 or y1 <= y0:
            crops.append(np.zeros((0, 0), np.bool_))
            continue
        to_protos = _crop_to_protos(meta.letterbox, x0, y0, scale_x, scale_y)
        sampled = cv2.warpAffine(
            logits[i],
            to_protos,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        crops.append(np.asarray(sampled) > 0)
        origins[i] = (x0, y0)
    return Masks.from_crops(crops, origins)


def _protos_index(shapes: tuple[tuple[int | None, ...], ...]) -> int:
    """Which of the two outputs is the (4-D) prototypes."""
    return [len(shape) for shape in shapes].index(4)


def _wh(meta: LetterboxMeta) -> tuple[int, int]:
    return meta.width_px, meta.height_px


def _crop_to_protos(letterbox: Letterbox, x0: int, y0: int, scale_x: float, scale_y: float) -> NDArray[np.float64]:
    """The affine map from a crop's pixel (column, row), its top-left at frame pixel (x0, y0), to the prototype
    grid: frame pixel centre -> letterboxed input -> prototypes (centre-aligned, align_corners=False)."""
    ax, ay = letterbox.scale_x * scale_x, letterbox.scale_y * scale_y
    bx = ((x0 + 0.5) * letterbox.scale_x + letterbox.pad_x_px) * scale_x - 0.5
    by = ((y0 + 0.5) * letterbox.scale_y + letterbox.pad_y_px) * scale_y - 0.5
    return np.array([[ax, 0.0, bx], [0.0, ay, by]], np.float64)
