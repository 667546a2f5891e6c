"""The Darwin JSON 2.0 document ``item_to_darwin`` builds (TypedDicts: typed, and the JSON is unchanged).

Shapes of docs ``darwin_v2.md``: boxes in pixels of their slot's media; video annotations hold ``frames``
keyed by the 0-based source frame index and ``ranges`` with an exclusive end.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from pydantic import JsonValue

DarwinSlotType = Literal["image", "video", "dicom", "pdf"]
DarwinMaskStyle = Literal["polygon", "raster"]
"""How a row's mask is written: a ``polygon`` annotation (the default), or a ``mask`` annotation whose pixels are in
the slot's ``raster_layer`` (``raster``)."""
DARWIN_MASK_STYLES: tuple[DarwinMaskStyle, ...] = ("polygon", "raster")
RASTER_LAYER_NAME = "__raster_layer__"
"""The class of a slot's raster layer annotation: V7's global class, always present."""


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


class DarwinPoint(TypedDict):
    x: float
    y: float


class DarwinPolygon(TypedDict):
    """Outer ring first; further paths are holes or further parts (filled even-odd), points in pixels."""

    paths: list[list[DarwinPoint]]


class DarwinMask(TypedDict):
    """A ``mask`` annotation's shape: V7 exports ``sparse_rle`` null; the pixels are in the slot's raster layer."""

    sparse_rle: None


class DarwinRasterLayer(TypedDict):
    """A slot's (or a video frame's) mask pixels: ``dense_rle`` is ``[value, count, ...]`` row by row over all
    ``total_pixels``; ``mask_annotation_ids_mapping`` gives each ``mask`` annotation's value (0: none)."""

    dense_rle: list[int]
    mask_annotation_ids_mapping: dict[str, int]
    total_pixels: int


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


class DarwinPolygonKeyframe(TypedDict):
    """A polygon on one video frame, with its derived ``bounding_box`` as V7 exports it."""

    polygon: DarwinPolygon
    bounding_box: DarwinBox
    inference: DarwinInference
    keyframe: bool


class DarwinMaskKeyframe(TypedDict):
    """A mask on one video frame (its pixels are in that frame's raster layer)."""

    mask: DarwinMask
    inference: DarwinInference
    keyframe: bool


class DarwinRasterKeyframe(TypedDict):
    raster_layer: DarwinRasterLayer
    keyframe: bool


DarwinFrame = DarwinKeyframe | DarwinPolygonKeyframe | DarwinMaskKeyframe | DarwinRasterKeyframe


class DarwinAnnotationHead(TypedDict):
    """What every annotation starts with: its id, class name and slot."""

    id: str
    name: str
    slot_names: list[str]


class DarwinImageAnnotation(TypedDict):
    """A box on an image slot."""

    id: str
    name: str
    slot_names: list[str]
    bounding_box: DarwinBox
    inference: DarwinInference


class DarwinImagePolygon(DarwinAnnotationHead):
    """A mask on an image slot as a polygon, with its derived ``bounding_box``."""

    polygon: DarwinPolygon
    bounding_box: DarwinBox
    inference: DarwinInference


class DarwinImageMask(DarwinAnnotationHead):
    """A mask on an image slot; its pixels are in the slot's raster layer."""

    mask: DarwinMask
    inference: DarwinInference


class DarwinImageRaster(DarwinAnnotationHead):
    """An image slot's raster layer (``name`` is ``__raster_layer__``)."""

    raster_layer: DarwinRasterLayer


class DarwinVideoAnnotation(TypedDict):
    """A box, or a track of boxes, on a video-like slot; the interpolation keys only on tracks."""

    id: str
    name: str
    slot_names: list[str]
    frames: dict[str, DarwinKeyframe | DarwinPolygonKeyframe]
    ranges: list[list[int]]
    interpolated: bool
    interpolate_algorithm: NotRequired[str]
    hidden_areas: NotRequired[list[list[int]]]
    global_sub_types: NotRequired[dict[str, JsonValue]]


class DarwinVideoMask(DarwinAnnotationHead):
    """Masks (``DarwinMaskKeyframe``) or a raster layer (``DarwinRasterKeyframe``) on a video-like slot's frames:
    V7 exports them with ``only_keyframes`` and no interpolation."""

    frames: dict[str, DarwinMaskKeyframe | DarwinRasterKeyframe]
    ranges: list[list[int]]
    only_keyframes: bool


DarwinAnnotation = (
    DarwinImageAnnotation
    | DarwinImagePolygon
    | DarwinImageMask
    | DarwinImageRaster
    | DarwinVideoAnnotation
    | DarwinVideoMask
)


class DarwinDocument(TypedDict):
    version: str
    schema_ref: str
    item: DarwinItem
    annotations: list[DarwinAnnotation]
    properties: list[JsonValue]
