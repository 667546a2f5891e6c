"""The data types at the infer -> convert boundary: numpy only, no torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.masks import Masks

RGBImage = NDArray[np.uint8]
"""An (H, W, 3) uint8 image in RGB order."""


@dataclass(frozen=True, slots=True)
class Detections:
    """Detections for one frame, as parallel arrays (one row per box).

    Attributes:
        xyxy: (n, 4) float32 box corners in absolute pixels of the source frame.
        confidence: (n,) float32 scores in [0, 1].
        class_id: (n,) int64 indices into the model's ``class_names``.
        tracker_id: (n,) int64 track ids, unique within an item, from 1, filled once by the tracker
            (``service.pipeline.tracks``); -1 marks a row in no kept track. None: not tracked.
        appearance: (n, d) float32 unit-norm descriptors of the boxes' pixels, for the tracker to tell objects
            apart (``service.pipeline.appearance``); None when not computed. The tracker drops them once done,
            and they are never stored or written.
        masks: one instance mask per row (``models.masks``: run-length crops in frame pixels), from an
            instance-segmentation model or a box-prompted segmenter; None when the run makes no masks.
    """

    xyxy: NDArray[np.float32]
    confidence: NDArray[np.float32]
    class_id: NDArray[np.int64]
    tracker_id: NDArray[np.int64] | None = None
    appearance: NDArray[np.float32] | None = None
    masks: Masks | None = None

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4) or self.xyxy.dtype != np.float32:
            raise ValueError(f"xyxy must be float32 of shape (n, 4), got {self.xyxy.dtype} {self.xyxy.shape}")
        if self.confidence.shape != (n,) or self.confidence.dtype != np.float32:
            raise ValueError(
                f"confidence must be float32 of shape ({n},), got {self.confidence.dtype} {self.confidence.shape}"
            )
        if self.class_id.shape != (n,) or self.class_id.dtype != np.int64:
            raise ValueError(f"class_id must be int64 of shape ({n},), got {self.class_id.dtype} {self.class_id.shape}")
        if self.tracker_id is not None and (self.tracker_id.shape != (n,) or self.tracker_id.dtype != np.int64):
            raise ValueError(
                f"tracker_id must be None or int64 of shape ({n},), got {self.tracker_id.dtype} {self.tracker_id.shape}"
            )
        if self.appearance is not None and (
            self.appearance.ndim != 2 or len(self.appearance) != n or self.appearance.dtype != np.float32
        ):
            raise ValueError(
                f"appearance must be None or float32 of shape ({n}, d), got {self.appearance.dtype} "
                f"{self.appearance.shape}"
            )
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"masks must be None or have {n} rows, got {len(self.masks)}")

    @classmethod
    def empty(cls, *, tracked: bool = False) -> Detections:
        """No rows; ``tracked`` gives an empty ``tracker_id`` (a tracked frame with nothing on it)."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int64),
            tracker_id=np.zeros((0,), np.int64) if tracked else None,
        )

    @classmethod
    def from_arrays(
        cls,
        xyxy: NDArray[np.generic],
        confidence: NDArray[np.generic],
        class_id: NDArray[np.generic],
        tracker_id: NDArray[np.generic] | None = None,
        masks: Masks | None = None,
    ) -> Detections:
        """Build from arrays of any numeric dtype (casts, copies only when needed)."""
        return cls(
            xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4),
            confidence=np.asarray(confidence, np.float32).reshape(-1),
            class_id=np.asarray(class_id, np.int64).reshape(-1),
            tracker_id=None if tracker_id is None else np.asarray(tracker_id, np.int64).reshape(-1),
            masks=masks,
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: NDArray[np.bool_] | NDArray[np.intp] | slice) -> Detections:
        """Select rows, e.g. ``dets[dets.confidence > 0.5]``; tracker ids, descriptors and masks follow their rows."""
        tracker_id = None if self.tracker_id is None else self.tracker_id[index]
        appearance = None if self.appearance is None else self.appearance[index]
        masks = None if self.masks is None else self.masks[index]
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index], tracker_id, appearance, masks)

    def with_tracker_id(self, tracker_id: NDArray[np.int64] | None) -> Detections:
        """The same rows with ``tracker_id`` set (None: untracked), their descriptors dropped: tracking is done."""
        return Detections(self.xyxy, self.confidence, self.class_id, tracker_id, None, self.masks)

    def with_appearance(self, appearance: NDArray[np.float32] | None) -> Detections:
        """The same rows with ``appearance`` set (None: none)."""
        return Detections(self.xyxy, self.confidence, self.class_id, self.tracker_id, appearance, self.masks)

    def with_masks(self, masks: Masks | None) -> Detections:
        """The same rows with ``masks`` set (None: none)."""
        return Detections(self.xyxy, self.confidence, self.class_id, self.tracker_id, self.appearance, masks)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a loaded detector is, for outputs and provenance.

    Attributes:
        spec: the spec it was loaded from, e.g. ``builtin:centerface`` or ``onnx:/m/yolo.onnx``.
        name: a short human name.
        version: stable id of the weights (content hash prefix); changes when the weights change.
        class_names: the model's labels, indexed by ``Detections.class_id``.
        runtime: ``onnxruntime`` or ``torch``.
        device: ``cpu`` or ``cuda``.
        batch_size: the batch size the detector was configured for.
        input_size_px: the longest side fed to the network (None = the model's own default).
        dtype: the compute dtype (``float32``, ``float16``).
        keeps_aspect: the model's own resize keeps the frame's aspect ratio (a letterbox, or a long-side fit),
            so frames pre-scaled to fit ``input_size_px`` show it what it would have seen anyway; False for a
            model that stretches every frame to a fixed height x width (RT-DETR's processor), where a pre-scaled
            frame would lose rows it keeps today.
        makes_masks: the detector itself returns an instance mask per row (``Detections.masks``), e.g. an
            Ultralytics ``-seg`` export; no box-prompted segmenter is needed for masks.
        open_vocabulary: the detector finds what text prompts describe (``models.base.PromptableDetector``): it has
            no classes of its own (``class_names`` is empty) until ``prompted`` gives it a prompt set.
    """

    spec: str
    name: str
    version: str
    class_names: tuple[str, ...]
    runtime: str
    device: str
    batch_size: int
    input_size_px: int | None
    dtype: str = "float32"
    keeps_aspect: bool = False
    makes_masks: bool = False
    open_vocabulary: bool = False
