"""Small builders for test data."""

from __future__ import annotations

from collections.abc import Sequence

from models.types import Detections
from service.convert.types import ModelRef
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


# A car/person detector and the Encord ontology that labels its classes (backend and push tests).
CAR_PERSON_MODEL = ModelRef(spec="onnx:/m/yolo.onnx", version="v1", class_names=("car", "person"))
CAR_PERSON_ONTOLOGY_JSON = {
    "objects": [
        {"id": "1", "name": "Car", "color": "#D33115", "shape": "bounding_box", "featureNodeHash": "carBBox1"},
        {"id": "2", "name": "Person", "color": "#FCDC00", "shape": "bounding_box", "featureNodeHash": "persBBx1"},
    ],
    "classifications": [],
}
