"""The flow's mask stage: a box-prompted segmenter (``models.base.Segmenter``) turns each batch's kept boxes into
masks, on the frames the detector saw, before the boxes (and the masks with them) are mapped to source pixels.

One ``segment`` call per batch; on device OOM the batch is split in halves like the detector's (``models.oom``)
and the ceiling stays down for the rest of the run. A single frame that still runs out has its boxes split in
halves (the segmenter decodes boxes in chunks itself, so this is for what remains: a frame's encoder, say); where
one box alone does not fit, that frame's remaining boxes are kept without masks, with a warning, rather than
failing the run. A frame without boxes never reaches the model.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)


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
        """``detections`` (one per image, in its pixels) with a mask per row (an empty one where the device had
        no room for it); frames without rows come back as they are."""
        masks: list[Masks] = []

        def run(chunk: Sequence[int]) -> None:
            out = self.segmenter.segment([images[k] for k in chunk], [detections[k].xyxy for k in chunk])
            if len(out) != len(chunk):
                raise RuntimeError(f"the segmenter returned {len(out)} results for {len(chunk)} frames")
            masks.extend(out)

        def by_boxes(k: int, error: DeviceOutOfMemoryError) -> None:
            masks.append(self._segment_by_boxes(images[k], detections[k].xyxy))

        run_splitting_on_oom(range(len(images)), run, self._ceiling, fail_one=by_boxes)
        return [dets.with_masks(m) if len(dets) else dets for dets, m in zip(detections, masks, strict=True)]

    def _segment_by_boxes(self, image: RGBImage, boxes_xyxy: NDArray[np.float32]) -> Masks:
        """One frame that ran out of device memory with all its boxes, segmented a half of its boxes at a time
        (halved again on OOM); from a box that alone does not fit on, its boxes get empty masks."""
        parts: list[Masks] = []
        gave_up_at: list[int] = []

        def run(chunk: Sequence[int]) -> None:
            if gave_up_at:  # the same frame again would only run out again
                parts.append(Masks.empty(len(chunk)))
                return
            (out,) = self.segmenter.segment([image], [boxes_xyxy[np.asarray(chunk, np.intp)]])
            parts.append(out)

        def give_up(i: int, error: DeviceOutOfMemoryError) -> None:
            gave_up_at.append(i)
            parts.append(Masks.empty(1))

        n = len(boxes_xyxy)
        if n > 1:  # all n together already ran out
            run_splitting_on_oom(
                range(n), run, BatchCeiling((n + 1) // 2, name=self.segmenter.info.name), fail_one=give_up
            )
        else:
            gave_up_at.append(0)
            parts.append(Masks.empty(1))
        if gave_up_at:
            log.warning(
                "segmenter %s: out of device memory on a single box; %d of a frame's %d boxes are kept without masks",
                self.segmenter.info.name,
                n - gave_up_at[0],
                n,
            )
        return Masks.concat(parts)
