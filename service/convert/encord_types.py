"""The Encord label row ``build_encord_label_row`` writes: what ``LabelRowV2.to_encord_dict()`` (encord 0.1.211)
writes and ``save()`` posts (encord.md §1). TypedDicts: typed, and the JSON is unchanged.

A row read back from Encord also holds what others wrote (people's objects, polygons, classifications, actions):
those parts are typed as far as we read them and otherwise kept as ``JsonValue``, untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NotRequired, TypedDict

from pydantic import JsonValue


class EncordBoundingBox(TypedDict):
    """Top-left corner and size, as fractions (0..1) of the frame."""

    h: float
    w: float
    x: float
    y: float


class EncordPoint(TypedDict):
    """A polygon vertex, as fractions (0..1) of the frame."""

    x: float
    y: float


class EncordBitmask(TypedDict):
    """A mask on the whole frame: ``rleString`` holds its runs row by row (``convert.encord_shapes``)."""

    top: int
    left: int
    height: int
    width: int
    rleString: str


class EncordObject(TypedDict):
    """One of our objects on one frame (or on an image): exactly one geometry, as its ontology shape says."""

    name: str
    color: str
    shape: str
    value: str
    createdAt: str
    createdBy: str
    confidence: float
    objectHash: str
    featureHash: str
    manualAnnotation: bool
    lastEditedAt: str
    lastEditedBy: str
    boundingBox: NotRequired[EncordBoundingBox]
    polygon: NotRequired[dict[str, EncordPoint]]
    polygons: NotRequired[list[list[list[float]]]]
    bitmask: NotRequired[EncordBitmask]


EncordObjectEntry = EncordObject | Mapping[str, JsonValue]
"""An object entry of a row: ours, or anyone's as Encord returned it (read by key, kept as it is)."""


class EncordLabels(TypedDict):
    """The labels of an image data unit, or of one frame of a frame-keyed one."""

    objects: list[EncordObjectEntry]
    classifications: list[JsonValue]


EncordFrameLabels = dict[str, EncordLabels]
"""A frame-keyed data unit's labels (video, DICOM): frame number -> labels; only frames with labels appear."""


class EncordDataUnit(TypedDict):
    """One medium of a row. ``labels`` is :data:`EncordFrameLabels` in a frame-keyed row (video, DICOM), else
    :class:`EncordLabels`; ``data_duration`` (seconds) and ``data_fps`` only on videos."""

    data_hash: str
    data_title: str
    data_link: str
    data_type: str
    data_sequence: int | str
    width: int
    height: int
    labels: EncordFrameLabels | EncordLabels
    data_duration: NotRequired[float | None]
    data_fps: NotRequired[float | None]


class EncordObjectAnswer(TypedDict):
    """An object's answers to its ontology's nested classifications (ours have none)."""

    classifications: list[JsonValue]
    objectHash: str


class EncordLabelRowJson(TypedDict):
    """A label row, keyed and ordered as the SDK writes it."""

    label_hash: str
    branch_name: str
    created_at: str
    last_edited_at: str
    data_hash: str
    dataset_hash: str
    dataset_title: str
    data_title: str
    data_type: str
    annotation_task_status: str
    is_shadow_data: bool
    object_answers: dict[str, EncordObjectAnswer | JsonValue]
    classification_answers: dict[str, JsonValue]
    object_actions: dict[str, JsonValue]
    label_status: str
    data_units: dict[str, EncordDataUnit]
    spaces: dict[str, JsonValue]


class EncordOntologyObjectJson(TypedDict):
    id: str
    name: str
    color: str
    shape: str
    featureNodeHash: str


class EncordOntologyJson(TypedDict):
    """An ontology structure as Encord's editor and SDK (``OntologyStructure.from_dict``) read it."""

    objects: list[EncordOntologyObjectJson]
    classifications: list[JsonValue]
