"""The flow's mask stage: a box-prompted segmenter (``models.base.Segmenter``) turns each batch's kept boxes into
masks, on the frames the detector saw, before the boxes (and the masks with them) are mapped to source pixels.

One ``segment`` call per batch; on device OOM the batch is split in halves like the detector's (``models.oom``)
and the ceiling stays down for the rest of the run. A frame without boxes never reaches the model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from models.base import DetectorOptions, Segmenter
from models.errors import DeviceOutOfMemoryError, ModelError
from models.masks import Masks
from models.oom import BatchCeiling, run_splitting_on_oom
from models.registry import load_segmenter
from models.types import Detections, RGBImage
from service.errors import PreannotateError, from_model_error


def open_segmenter(spec: str, options: DetectorOptions) -> Segmenter:
    """Load the segmenter ``spec`` names, on the detector's device and precision (its input size is its own).

    Raises:
        PreannotateError: INVALID_MODEL_SPEC, MODEL_NOT_FOUND, MODEL_LOAD_FAILED ... naming the spec.
    """
    try:
        return load_segmenter(spec, replace(options, input_size_px=None))
    except ModelError as exc:
        error = from_model_error(exc)
        message = error.message if spec in error.message else f"segmenter {spec}: {error.message}"
        raise PreannotateError(error.code, message) from None


class SharedSegmenter(Segmenter):
    """One loaded segmenter shared by a server's threads (job workers, interactive requests): one call at a time,
    so two batches never hold the model's activations on the device at once."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.inner = segmenter
        self.info = segmenter.info
        self._lock = threading.Lock()

    def segment(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        with self._lock:
            return self.inner.segment(images, boxes_xyxy)

    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        raise NotImplementedError("SharedSegmenter delegates whole calls (segment)")  # never reached

    def close(self) -> None:
        self.inner.close()


class MaskStage:
    """A run's segmenter and its out-of-memory ceiling (frames per ``segment`` call, lowered on OOM only)."""

    def __init__(self, segmenter: Segmenter, *, max_frames: int) -> None:
        self.segmenter = segmenter
        self._ceiling = BatchCeiling(max_frames, name=segmenter.info.name)

    def attach(self, images: Sequence[RGBImage], detections: Sequence[Detections]) -> list[Detections]:
        """``detections`` (one per image, in its pixels) with a mask per row; frames without rows come back as
        they are.

        Raises:
            PreannotateError: DEVICE_OUT_OF_MEMORY when one frame's boxes alone do not fit.
        """
        masks: list[Masks] = []

        def run(chunk: Sequence[int]) -> None:
            out = self.segmenter.segment([images[k] for k in chunk], [detections[k].xyxy for k in chunk])
            if len(out) != len(chunk):
                raise RuntimeError(f"the segmenter returned {len(out)} results for {len(chunk)} frames")
            masks.extend(out)

        try:
            run_splitting_on_oom(range(len(images)), run, self._ceiling)
        except DeviceOutOfMemoryError as exc:
            raise from_model_error(exc) from None
        return [dets.with_masks(m) if len(dets) else dets for dets, m in zip(detections, masks, strict=True)]
