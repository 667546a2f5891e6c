"""What every converter takes: one item's predictions, the model that made them, and video tracks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.jobs.results import frames_of
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta


class UnsupportedByFormatError(ValueError):
    """A format cannot hold this item (e.g. an Encord label row with a video and stills): the item is skipped
    with ``unsupported_by_format``. Any other exception from a converter is a bug, logged as ``output_failed``."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """The model behind a set of predictions (converters write it as provenance)."""

    spec: str
    version: str
    class_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ItemPredictions:
    """One item: its slots (every slot, PDFs too) and the frame results of all of them, in time order
    within each slot."""

    name: str
    slots: tuple[SlotMeta, ...]
    frames: tuple[FrameResult, ...]

    def frames_of_slot(self, slot: str) -> list[FrameResult]:
        return [f for f in self.frames if f.info.slot == slot]

    @classmethod
    def from_result_json(cls, name: str, result: dict[str, Any]) -> ItemPredictions:
        """From what a job worker stored (see ``service.jobs.results``)."""
        slots = tuple(
            SlotMeta(**{**meta, "media": MediaKind(meta["media"]), "source_files": tuple(meta["source_files"])})
            for meta in result.get("slots", [])
        )
        return cls(name=name, slots=slots, frames=tuple(frames_of(name, result)))


@dataclass(frozen=True, slots=True)
class TrackBox:
    """A track's box on one sampled frame."""

    frame_index: int
    timestamp_s: float | None
    xyxy: tuple[float, float, float, float]
    confidence: float


@dataclass(frozen=True, slots=True)
class Track:
    """One object followed across a video's sampled frames: one class, boxes in frame order.

    Attributes:
        track_id: unique within the item, from 1.
        slot: the slot the frames came from.
        class_id: index into the model's class names.
        boxes: one per sampled frame the object was detected on, in frame order (gaps possible).
    """

    track_id: int
    slot: str
    class_id: int
    boxes: tuple[TrackBox, ...]

    @property
    def confidence(self) -> float:
        """Mean box confidence: the track's score."""
        return sum(b.confidence for b in self.boxes) / len(self.boxes)
