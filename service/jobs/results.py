"""Item results as stored JSON, and back: slot metadata plus one compact record per frame."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from models.types import Detections
from service.pipeline.frames import FrameInfo, FrameResult, MediaKind, SlotMeta


def frame_result_to_json(result: FrameResult) -> dict[str, Any]:
    info, dets = result.info, result.detections
    return {
        "slot": info.slot,
        "source": info.source,
        "media": info.media.value,
        "frame_index": info.frame_index,
        "timestamp_s": info.timestamp_s,
        "width": info.width,
        "height": info.height,
        "xyxy": np.round(dets.xyxy, 2).tolist(),
        "confidence": np.round(dets.confidence, 5).tolist(),
        "class_id": dets.class_id.tolist(),
    }


def frame_result_from_json(item: str, record: dict[str, Any]) -> FrameResult:
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
    dets = Detections.from_arrays(
        np.asarray(record["xyxy"], np.float32), np.asarray(record["confidence"]), np.asarray(record["class_id"])
    )
    return FrameResult(info=info, detections=dets)


def slot_meta_to_json(meta: SlotMeta) -> dict[str, Any]:
    record = asdict(meta)
    record["media"] = meta.media.value
    record["source_files"] = list(meta.source_files)
    return record


def item_result_to_json(slots: Sequence[SlotMeta], frames: Iterable[FrameResult]) -> dict[str, Any]:
    return {"slots": [slot_meta_to_json(m) for m in slots], "frames": [frame_result_to_json(f) for f in frames]}


def frames_of(item: str, result: dict[str, Any]) -> Iterator[FrameResult]:
    for record in result.get("frames", []):
        yield frame_result_from_json(item, record)
