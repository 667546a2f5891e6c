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
import time
from collections.abc import Sequence
from dataclasses import replace

import anyio
import numpy as np
from numpy.typing import NDArray

from models.base import DetectorOptions, Segmenter
from models.errors import ModelError
from models.masks import Masks
from models.oom import BatchCeiling, run_splitting_on_oom
from models.registry import load_segmenter
from models.types import Detections, RGBImage
from service.errors import ErrorCode, PreannotateError, from_model_error

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
    so two batches never hold the model's activations on the device at once.

    Interactive requests wait for it no longer than their deadline (``until``), on threads of their own
    (``limiter``): one, since the model runs one call at a time anyway, so requests queued behind a job's batch
    wait on the event loop and never take the threads every other blocking call of the API shares.
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self.inner = segmenter
        self.info = segmenter.info
        self._lock = threading.Lock()
        self.limiter = anyio.CapacityLimiter(1)

    def segment(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        return self.segment_by(None, images, boxes_xyxy)

    def segment_by(
        self, deadline_s: float | None, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]
    ) -> list[Masks]:
        """``segment``, waiting for the model until ``deadline_s`` at most (``time.monotonic()``; None: forever).

        Raises:
            PreannotateError: DEADLINE_EXCEEDED (retryable) when another call still holds the model then.
        """
        wait_s = -1.0 if deadline_s is None else max(0.0, deadline_s - time.monotonic())
        if not self._lock.acquire(timeout=wait_s):
            raise PreannotateError(
                ErrorCode.DEADLINE_EXCEEDED, f"segmenter {self.info.name} was busy past the request's deadline"
            )
        try:
            return self.inner.segment(images, boxes_xyxy)
        finally:
            self._lock.release()

    def until(self, deadline_s: float | None) -> Segmenter:
        """This segmenter, for a caller that waits for it until ``deadline_s`` at most (``segment_by``)."""
        return _SegmenterUntil(self, deadline_s)

    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        raise NotImplementedError("SharedSegmenter delegates whole calls (segment)")  # never reached

    def close(self) -> None:
        self.inner.close()


class _SegmenterUntil(Segmenter):
    """A ``SharedSegmenter`` whose every call waits for the model until one deadline at most."""

    def __init__(self, shared: SharedSegmenter, deadline_s: float | None) -> None:
        self.shared, self.deadline_s = shared, deadline_s
        self.info = shared.info

    def segment(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        return self.shared.segment_by(self.deadline_s, images, boxes_xyxy)

    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        raise NotImplementedError("delegates whole calls (segment)")  # never reached

    def close(self) -> None:
        """Nothing: the shared segmenter is its owner's to close."""


class MaskStage:
    """A run's segmenter and its out-of-memory ceiling (frames per ``segment`` call, lowered on OOM only)."""

    def __init__(self, segmenter: Segmenter, *, max_frames: int) -> None:
        self.segmenter = segmenter
        self._ceiling = BatchCeiling(max_frames, name=segmenter.info.name)

    def attach(self, images: Sequence[RGBImage], detections: Sequence[Detections]) -> list[Detections]:
        """``detections`` (one per image, in its pixels) with a mask per row; frames without rows come back as
        they are. A batch that runs out of device memory is split by frames; a segmenter splits one frame's boxes
        itself (``HFSamSegmenter`` halves its decoder calls from the same embedding).

        Raises:
            PreannotateError: DEVICE_OUT_OF_MEMORY when one frame alone does not fit (the item fails, retryably in
                jobs: never stored as if its boxes had no masks); the model's own error, or INTERNAL for any other
                failure (its stack in the log, not in the message).
        """
        masks: list[Masks] = []

        def run(chunk: Sequence[int]) -> None:
            out = self.segmenter.segment([images[k] for k in chunk], [detections[k].xyxy for k in chunk])
            if len(out) != len(chunk):
                raise RuntimeError(f"the segmenter returned {len(out)} results for {len(chunk)} frames")
            masks.extend(out)

        try:
            run_splitting_on_oom(range(len(images)), run, self._ceiling)
        except PreannotateError:
            raise
        except ModelError as exc:
            raise from_model_error(exc) from None
        except Exception as exc:  # torch's RuntimeError and the like: callers answer with a code, not a 500
            log.error("segmenter %s failed on %d frames", self.segmenter.info.name, len(images), exc_info=exc)
            raise PreannotateError(
                ErrorCode.INTERNAL, f"segmenter {self.segmenter.info.name} failed; see the server log"
            ) from None
        return [dets.with_masks(m) if len(dets) else dets for dets, m in zip(detections, masks, strict=True)]
