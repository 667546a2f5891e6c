"""The Darwin JSON 2.0 document ``item_to_darwin`` builds (TypedDicts: typed, and the JSON is unchanged).

Shapes of docs ``darwin_v2.md``: boxes in pixels of their slot's media; video annotations hold ``frames``
keyed by the 0-based source frame index and ``ranges`` with an exclusive end.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from pydantic import JsonValue

DarwinSlotType = Literal["image", "video", "dicom", "pdf"]


class DarwinSourceFile(TypedDict):
    """A file behind a slot: its name, and its ``url`` when it is remote."""

    file_name: str
    url: NotRequired[str]


class DarwinSlotHead(TypedDict):
    """A slot's keys before ``source_files``: size in pixels (not for PDFs); ``fps`` (None for DICOM) and
    ``frame_count`` for video-like slots."""

    type: DarwinSlotType
    slot_name: str
    width: NotRequired[int]
    height: NotRequired[int]
    fps: NotRequired[float | None]
    frame_count: NotRequired[int]


class DarwinSlot(DarwinSlotHead):
    """``item.slots[]``: the slot and the files behind it."""

    source_files: list[DarwinSourceFile]


class DarwinItem(TypedDict):
    name: str
    path: str
    slots: list[DarwinSlot]


class DarwinBox(TypedDict):
    """Top-left corner and size, in pixels."""

    x: float
    y: float
    w: float
    h: float


class DarwinModel(TypedDict):
    id: str
    name: str
    type: Literal["external"]


class DarwinInference(TypedDict):
    """Model provenance of an annotation (darwin-fiftyone's shape); ``confidence`` in 0..1."""

    confidence: float
    model: DarwinModel


class DarwinKeyframe(TypedDict):
    """A video annotation on one frame."""

    bounding_box: DarwinBox
    inference: DarwinInference
    keyframe: bool


class DarwinImageAnnotation(TypedDict):
    """A box on an image slot."""

    id: str
    name: str
    slot_names: list[str]
    bounding_box: DarwinBox
    inference: DarwinInference


class DarwinVideoAnnotation(TypedDict):
    """A box, or a track of boxes, on a video-like slot; the interpolation keys only on tracks."""

    id: str
    name: str
    slot_names: list[str]
    frames: dict[str, DarwinKeyframe]
    ranges: list[list[int]]
    interpolated: bool
    interpolate_algorithm: NotRequired[str]
    hidden_areas: NotRequired[list[list[int]]]
    global_sub_types: NotRequired[dict[str, JsonValue]]


DarwinAnnotation = DarwinImageAnnotation | DarwinVideoAnnotation


class DarwinDocument(TypedDict):
    version: str
    schema_ref: str
    item: DarwinItem
    annotations: list[DarwinAnnotation]
    properties: list[JsonValue]
