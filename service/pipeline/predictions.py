"""One item's predictions (what the pipeline produces and converters, backends and jobs consume), and the JSON
the job store keeps them as: slot metadata plus one compact record per frame, tracker ids in it when tracked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from models.masks import Masks
from models.types import Detections
from service.pipeline.frames import FrameInfo, FrameResult, MediaKind, SlotMeta
from service.pipeline.tracks import TRACKED_MEDIA, TrackerOptions, assign_tracker_ids

XYXY_DECIMALS = 2
"""Box corners are stored to 1/100 px."""
CONFIDENCE_DECIMALS = 5


@dataclass(frozen=True, slots=True)
class ItemPredictions:
    """One item: its slots (every slot, PDFs too) and the frame results of all of them, in time order
    within each slot; tracker ids (when tracked) inside the detections."""

    name: str
    slots: tuple[SlotMeta, ...]
    frames: tuple[FrameResult, ...]

    def frames_of_slot(self, slot: str) -> list[FrameResult]:
        return [f for f in self.frames if f.info.slot == slot]


def at_stored_precision(result: FrameResult) -> FrameResult:
    """The frame as the store keeps it (corners to 1/100 px, scores to 5 decimals): a worker tracks and pushes
    exactly what it stores, so a push and a later ``GET /result`` agree."""
    dets = result.detections
    rounded = Detections(
        np.round(dets.xyxy, XYXY_DECIMALS),
        np.round(dets.confidence, CONFIDENCE_DECIMALS),
        dets.class_id,
        dets.tracker_id,
        dets.appearance,
        dets.masks,
    )
    return replace(result, detections=rounded)


def frame_result_to_json(result: FrameResult) -> dict[str, Any]:
    info, dets = result.info, result.detections
    record: dict[str, Any] = {
        "slot": info.slot,
        "source": info.source,
        "media": info.media.value,
        "frame_index": info.frame_index,
        "timestamp_s": info.timestamp_s,
        "width": info.width,
        "height": info.height,
        "xyxy": np.round(dets.xyxy, XYXY_DECIMALS).tolist(),
        "confidence": np.round(dets.confidence, CONFIDENCE_DECIMALS).tolist(),
        "class_id": dets.class_id.tolist(),
    }
    if dets.tracker_id is not None:
        record["tracker_id"] = dets.tracker_id.tolist()
    if dets.masks is not None:
        record["masks"] = dets.masks.to_json()  # [x, y, h, w, COCO RLE counts of the crop] per row
    return record


def frame_result_from_json(item: str, record: Mapping[str, Any]) -> FrameResult:
    info = FrameInfo(
        item=item,
        slot=record["slot"],
        source=record["source"],
        media=MediaKind(record["media"]),
        frame_index=record["frame_index"],
        timestamp_s=record["timestamp_s"],
        width=record["width"],
        height=record["height"],
    )
    tracker_id = record.get("tracker_id")
    masks = record.get("masks")
    dets = Detections.from_arrays(
        np.asarray(record["xyxy"], np.float32),
        np.asarray(record["confidence"]),
        np.asarray(record["class_id"]),
        None if tracker_id is None else np.asarray(tracker_id, np.int64),
        None if masks is None else Masks.from_json(masks),
    )
    return FrameResult(info=info, detections=dets)


def slot_meta_to_json(meta: SlotMeta) -> dict[str, Any]:
    record = asdict(meta)
    record["media"] = meta.media.value
    record["source_files"] = list(meta.source_files)
    return record


def slot_meta_from_json(meta: Mapping[str, Any]) -> SlotMeta:
    return SlotMeta(**{**meta, "media": MediaKind(meta["media"]), "source_files": tuple(meta["source_files"])})


def item_predictions_to_json(item: ItemPredictions) -> dict[str, Any]:
    """``{"slots": [...], "frames": [...]}``: what a job worker stores for a succeeded item."""
    return {
        "slots": [slot_meta_to_json(m) for m in item.slots],
        "frames": [frame_result_to_json(f) for f in item.frames],
    }


def item_predictions_from_json(
    name: str, result: Mapping[str, Any], tracker: TrackerOptions | None = None
) -> ItemPredictions:
    """An item back from what a worker stored.

    Args:
        name: the item's name.
        result: the stored JSON (``item_predictions_to_json``; extra keys such as ``warnings`` are ignored).
        tracker: the job's tracker. Used only for a result stored by an older release, whose video-like
            frames carry no tracker ids: they are linked here, once. None: tracking off.
    """
    slots = tuple(slot_meta_from_json(meta) for meta in result.get("slots", []))
    frames: Sequence[FrameResult] = [frame_result_from_json(name, record) for record in result.get("frames", [])]
    if tracker is not None and _stored_untracked(result):
        frames = assign_tracker_ids(frames, tracker)
    return ItemPredictions(name=name, slots=slots, frames=tuple(frames))


def _stored_untracked(result: Mapping[str, Any]) -> bool:
    return any(
        MediaKind(record["media"]) in TRACKED_MEDIA and "tracker_id" not in record
        for record in result.get("frames", [])
    )
