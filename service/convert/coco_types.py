"""The COCO detection document ``frame_results_to_coco`` builds (TypedDicts: typed, and the JSON is unchanged).

Beyond COCO's own fields, every image names its ``item`` and ``slot``; frames of videos, DICOM and image
sequences carry ``frame_index``, ``timestamp_s`` and ``video``; a box in a track carries ``track_id``.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


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
    """``annotations[]``: ``bbox`` is x, y, width, height in pixels; ``track_id`` is unique within the item."""

    id: int
    image_id: int
    category_id: int
    bbox: list[float]
    area: float
    score: float
    iscrowd: int
    track_id: NotRequired[int]


class CocoCategory(TypedDict):
    id: int
    name: str
    supercategory: str


class CocoDocument(TypedDict):
    info: CocoInfo
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]
