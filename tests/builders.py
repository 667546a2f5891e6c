"""Small builders for test data."""

from __future__ import annotations

from collections.abc import Sequence

from models.types import Detections
from service.pipeline.frames import FrameInfo, FrameResult, MediaKind


def make_detections(
    xyxy: Sequence[Sequence[float]] = (), confidence: Sequence[float] = (), class_id: Sequence[int] = ()
) -> Detections:
    import numpy as np

    return Detections.from_arrays(np.array(xyxy, np.float32), np.array(confidence), np.array(class_id))


def make_info(
    *,
    item: str = "a.jpg",
    slot: str = "0",
    source: str = "/data/a.jpg",
    media: MediaKind = MediaKind.IMAGE,
    frame_index: int = 0,
    timestamp_s: float | None = None,
    width: int = 640,
    height: int = 480,
) -> FrameInfo:
    return FrameInfo(item, slot, source, media, frame_index, timestamp_s, width, height)


def make_result(detections: Detections | None = None, **info: object) -> FrameResult:
    return FrameResult(info=make_info(**info), detections=detections or make_detections())  # type: ignore[arg-type]
