"""The JSON shapes of the exports the loaders read (COCO, Darwin JSON 2.0, Encord label rows, Label Studio).

TypedDicts, not pydantic models: they describe a well-formed export so that mypy sees every field the loaders
read, at no cost on a 100k-annotation file. The loaders still check each value where they read it (an
export is user input): that is where a malformed file gets its message, which names the item and field.
Only the fields the loaders read are listed; the rest of an export is carried untouched and ignored.
"""

from __future__ import annotations

from typing import Literal, NotRequired, Required, TypedDict

from pydantic import JsonValue

from service.evaluate.types import CocoRle

# --- COCO ------------------------------------------------------------------------------------------------


class CocoImage(TypedDict, total=False):
    """``images[]``; ``item``, ``slot``, ``frame_index`` and ``timestamp_s`` are ours (``preannotate run``)."""

    id: Required[int]
    file_name: str
    width: int
    height: int
    item: str
    slot: str
    frame_index: int
    timestamp_s: float


class CocoCategory(TypedDict, total=False):
    id: Required[int]
    name: str


class CocoAnnotation(TypedDict, total=False):
    """``annotations[]`` of a COCO file, or one entry of a COCO results list (``score``, no ``id``)."""

    id: int
    image_id: int
    category_id: int
    bbox: list[float]
    segmentation: list[list[float]] | CocoRle
    area: float
    iscrowd: int
    score: float
    track_id: int


class CocoInfo(TypedDict, total=False):
    """``info``; ``model_version`` is ours (``preannotate run``)."""

    model_version: str


class CocoDocument(TypedDict, total=False):
    info: CocoInfo
    images: Required[list[CocoImage]]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]


# --- Darwin JSON 2.0 ---------------------------------------------------------------------------------------


class DarwinPoint(TypedDict):
    x: float
    y: float


class DarwinBox(TypedDict):
    x: float
    y: float
    w: float
    h: float


class DarwinPolygon(TypedDict, total=False):
    """``{"paths": [[{x, y}, ...], ...]}``, or the legacy ``{"path": [...]}``."""

    paths: list[list[DarwinPoint]]
    path: list[DarwinPoint]


class DarwinInferenceModel(TypedDict, total=False):
    """``inference.model``: ours writes ``name`` as ``SPEC@VERSION`` (Darwin has no version field)."""

    id: str
    name: str
    type: str


class DarwinInference(TypedDict, total=False):
    confidence: float
    model: DarwinInferenceModel


class DarwinAnnotator(TypedDict, total=False):
    email: str


class DarwinRasterLayer(TypedDict, total=False):
    """A slot's raster layer: ``dense_rle`` runs of ``[value, count, ...]`` over the pixels, row by row."""

    dense_rle: list[int]
    mask_annotation_ids_mapping: dict[str, int]


class DarwinFrame(TypedDict, total=False):
    """What an annotation holds on one frame (a still's annotation holds it at its top level)."""

    keyframe: bool
    bounding_box: DarwinBox
    polygon: DarwinPolygon
    inference: DarwinInference
    attributes: list[str]
    raster_layer: DarwinRasterLayer


class DarwinAnnotation(DarwinFrame, total=False):
    id: str
    name: str
    slot_names: list[str]
    frames: dict[str, DarwinFrame]
    ranges: list[list[int]]
    segments: list[list[int]]
    interpolated: bool
    annotators: list[DarwinAnnotator]


class DarwinSlot(TypedDict, total=False):
    slot_name: Required[str]
    type: str
    width: int
    height: int
    fps: float | str


class DarwinSourceInfo(TypedDict, total=False):
    item_id: str


class DarwinItem(TypedDict, total=False):
    name: str
    path: str
    slots: list[DarwinSlot]
    source_info: DarwinSourceInfo


class DarwinDocument(TypedDict, total=False):
    version: str
    item: Required[DarwinItem]
    annotations: list[DarwinAnnotation]


# --- Encord label rows (``LabelRowV2.to_encord_dict()``) ------------------------------------------------------


class EncordBox(TypedDict):
    """Normalised (0..1) top-left x, y, width, height."""

    x: float
    y: float
    w: float
    h: float


class EncordRotatableBox(EncordBox):
    theta: NotRequired[float]


class EncordPoint(TypedDict):
    x: float
    y: float


class EncordBitmask(TypedDict):
    rleString: str


class EncordOption(TypedDict, total=False):
    """One answer of a radio or checklist classification."""

    name: str
    value: str
    featureHash: str


class EncordClassification(TypedDict, total=False):
    name: str
    featureHash: str
    classificationHash: str
    answers: list[EncordOption] | str


class EncordObject(TypedDict, total=False):
    objectHash: Required[str]
    featureHash: str
    name: str
    value: str
    shape: str
    boundingBox: EncordBox
    rotatableBoundingBox: EncordRotatableBox
    polygon: dict[str, EncordPoint]  # older rows: point number -> point
    polygons: list[list[list[float]]]  # since 0.1.211: polygons of rings of flat normalised x, y
    bitmask: EncordBitmask
    manualAnnotation: bool
    confidence: float
    createdBy: str


class EncordFrameLabels(TypedDict, total=False):
    objects: list[EncordObject]
    classifications: list[EncordClassification]


class EncordDataUnit(TypedDict, total=False):
    width: int
    height: int
    data_fps: float
    data_sequence: int | str
    # A still's labels; a video's are ``{frame: EncordFrameLabels}`` (``load_encord._unit_frames`` tells them apart).
    labels: EncordFrameLabels | dict[str, EncordFrameLabels]


class EncordObjectAnswer(TypedDict):
    classifications: list[EncordClassification]


class EncordClassificationAnswer(TypedDict, total=False):
    classifications: list[EncordClassification]
    range: list[list[int]]  # inclusive [start, end] frame spans


class EncordLabelRow(TypedDict, total=False):
    label_hash: str
    data_hash: str
    data_title: str
    data_type: Required[str]
    data_units: Required[dict[str, EncordDataUnit]]
    object_answers: dict[str, EncordObjectAnswer]
    classification_answers: dict[str, EncordClassificationAnswer]


# --- Label Studio -------------------------------------------------------------------------------------------

LsLabelsKey = Literal["rectanglelabels", "polygonlabels", "brushlabels", "labels", "choices", "taxonomy"]
"""The keys of a region's ``value`` that hold its label names (or its choices)."""


class LsBox(TypedDict, total=False):
    """A rectangle in percent (0..100) of the frame, rotated ``rotation`` degrees about its top-left corner."""

    x: float
    y: float
    width: float
    height: float
    rotation: float


class LsKeyframe(LsBox, total=False):
    """One keyframe of a ``videorectangle``'s ``sequence`` (``frame`` is 1-based)."""

    frame: int
    enabled: bool
    time: float


class LsValue(LsBox, total=False):
    rectanglelabels: list[str]
    polygonlabels: list[str]
    brushlabels: list[str]
    labels: list[str]
    choices: list[str]
    taxonomy: list[str]
    points: list[list[float]]
    format: str
    rle: list[int]
    sequence: list[LsKeyframe]
    framesCount: int


class LsRegion(TypedDict, total=False):
    id: str
    type: str
    from_name: str
    to_name: str
    value: LsValue
    score: float
    original_width: int
    original_height: int


class LsUser(TypedDict, total=False):
    id: int
    email: str


class LsLabelSet(TypedDict, total=False):
    """An annotation or a prediction of a task."""

    id: int
    result: list[LsRegion]
    score: float
    was_cancelled: bool
    ground_truth: bool
    completed_by: int | LsUser
    model_version: str


class LsTask(TypedDict, total=False):
    id: int
    data: dict[str, JsonValue]  # the project's own keys: free-form by design
    annotations: list[LsLabelSet]
    predictions: list[LsLabelSet]
