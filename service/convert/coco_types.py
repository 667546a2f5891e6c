"""The COCO detection document ``frame_results_to_coco`` builds (TypedDicts: typed, and the JSON is unchanged).

Beyond COCO's own fields, every image names its ``item`` and ``slot``; frames of videos, DICOM and image
sequences carry ``frame_index``, ``timestamp_s`` and ``video``; a box in a track carries ``track_id``; a row with a
mask carries ``segmentation``.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

CocoMaskStyle = Literal["rle", "polygon"]
"""How a row's mask is written in ``segmentation``: COCO RLE (the default), or polygons where the mask has no holes."""
COCO_MASK_STYLES: tuple[CocoMaskStyle, ...] = ("rle", "polygon")


class CocoRle(TypedDict):
    """A whole-image compressed RLE as pycocotools' ``encode`` makes it: ``size`` is [height, width]."""

    size: list[int]
    counts: str


class CocoInfo(TypedDict):
    """``info``: who made the file; ``model``/``model_version`` when known, ``job_id`` in a job's result."""

    description: str
    model: NotRequired[str]
    model_version: NotRequired[str]
    job_id: NotRequired[str]


class CocoImage(TypedDict):
    """``images[]``: one image or sampled frame, ``width``/``height`` in pixels."""

    id: int
    file_name: str
    width: int
    height: int
    item: str
    slot: str
    frame_index: NotRequired[int]
    timestamp_s: NotRequired[float | None]
    video: NotRequired[str]


class CocoAnnotation(TypedDict):
    """``annotations[]``: ``bbox`` is x, y, width, height in pixels; ``track_id`` is unique within the item.
    ``segmentation`` (rows with a mask only): an RLE, or polygons as flat ``[x1, y1, x2, y2, ...]`` lists in pixels;
    ``area`` is then the mask's pixel count, not the box's."""

    id: int
    image_id: int
    category_id: int
    bbox: list[float]
    area: float
    score: float
    iscrowd: int
    track_id: NotRequired[int]
    segmentation: NotRequired[CocoRle | list[list[float]]]


class CocoCategory(TypedDict):
    id: int
    name: str
    supercategory: str


class CocoDocument(TypedDict):
    info: CocoInfo
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]
