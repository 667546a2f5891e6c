"""The one data type that flows decode -> batch -> infer -> convert: a frame and where it came from."""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass

import numpy as np

from models.types import Detections, RGBImage


class MediaKind(enum.StrEnum):
    """What a slot holds (Darwin's slot types, plus image sequences)."""

    IMAGE = "image"
    VIDEO = "video"
    DICOM = "dicom"
    PDF = "pdf"
    SEQUENCE = "sequence"


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """Where a frame came from.

    Attributes:
        item: the item name (e.g. ``patient-17``).
        slot: the slot name inside the item (V7's term; ``0`` when there is one).
        source: the file the pixels came from (for sequences, that frame's own file).
        media: the slot's kind.
        frame_index: index in the source stream, display order, 0-based (0 for still images).
        timestamp_s: presentation time from the first frame, or None when the source has no clock.
        width: frame width in pixels, as displayed (after rotation).
        height: frame height in pixels, as displayed.
    """

    item: str
    slot: str
    source: str
    media: MediaKind
    frame_index: int
    timestamp_s: float | None
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: ``image`` is (height, width, 3) uint8 RGB."""

    info: FrameInfo
    image: RGBImage


def boxes_to_source(dets: Detections, frame: Frame) -> Detections:
    """Map boxes from ``frame.image``'s pixels to the source frame's (``frame.info``'s size).

    The decoder may hand a detector frames scaled down (``SamplingOptions.detector_size_px``); the boxes
    it finds are scaled back per axis (the exact resize ratios) and clipped to the source frame; their masks too.
    Detections of a full-size image are returned as they are.
    """
    height_px, width_px = frame.image.shape[:2]
    if (width_px, height_px) == (frame.info.width, frame.info.height) or len(dets) == 0:
        return dets
    sx, sy = frame.info.width / width_px, frame.info.height / height_px
    scale = np.array([sx, sy] * 2, np.float32)
    xyxy = dets.xyxy * scale
    np.clip(xyxy[:, 0::2], 0, frame.info.width, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, frame.info.height, out=xyxy[:, 1::2])
    masks = None if dets.masks is None else dets.masks.scaled(sx, sy, frame.info.height, frame.info.width)
    return dataclasses.replace(dets, xyxy=xyxy.astype(np.float32, copy=False), masks=masks)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """A frame's detections; the pixels are dropped once the model has seen them."""

    info: FrameInfo
    detections: Detections


@dataclass(frozen=True, slots=True)
class SlotMeta:
    """What a slot is, known after opening it and before decoding its frames.

    Attributes:
        item: item name.
        slot: slot name.
        media: slot kind.
        source_files: the files behind the slot (one, or many for a sequence).
        width: display width in pixels (0 for PDF).
        height: display height in pixels (0 for PDF).
        fps: the source's average frame rate (None for stills, sequences and untimed DICOM).
        frame_count: frames in the source.
        planned_frames: frames the sampler will emit.
        duration_s: the source's duration, when it has a clock.
    """

    item: str
    slot: str
    media: MediaKind
    source_files: tuple[str, ...]
    width: int
    height: int
    fps: float | None
    frame_count: int
    planned_frames: int
    duration_s: float | None = None

    @property
    def playback_duration_s(self) -> float | None:
        """How long the source plays: frames / rate, which counts the last frame's own length.

        ``duration_s`` is the last frame's start (3.96 s for 100 frames at 25 fps); players and annotation
        tools (Label Studio's ``framesCount``, Encord's ``ceil(fps * data_duration)``) count frames from this.
        """
        fps = self.fps if self.fps is not None and math.isfinite(self.fps) and self.fps > 0 else None
        if fps is not None and self.frame_count > 0:
            return self.frame_count / fps
        return self.duration_s
