"""The one normalised label type every loader produces: datasets of item slots, frames of shapes, tags."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

BoxXYXY = tuple[float, float, float, float]
"""x1, y1, x2, y2 in pixels of the frame (or percent of it when the source gave no pixel size)."""

BoxXYWH = tuple[float, float, float, float]
"""Top-left x, y, width, height in the source's own units (see ``Unit.src_units``)."""


class CocoRle(TypedDict):
    """A COCO run-length mask: ``size`` is [height, width]; ``counts`` compressed (a string) or plain runs."""

    size: list[int]
    counts: str | list[int]


class EncodedRle(TypedDict):
    """A COCO RLE as pycocotools takes it for IoU: compressed counts as bytes."""

    size: list[int]
    counts: bytes


class FormatError(ValueError):
    """A document of a known format is malformed; the message says where (``inputs`` adds the file)."""


def normalise_item_key(name: str) -> str:
    """An item's name or path as a matching key: forward slashes, no leading ``/`` or ``./``."""
    key = name.replace("\\", "/")
    while key.startswith(("./", "/")):
        key = key[2:] if key.startswith("./") else key[1:]
    return key


MAX_FPS = 1000.0
"""Frame rates above this are taken as unknown: re-counting a video's frames at them would build millions."""


def frame_rate(value: object) -> float | None:
    """A source's frame rate as a number in (0, ``MAX_FPS``], or None (absent, ``"native"``, nonsense)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0 < value <= MAX_FPS else None


NO_CLASS = "(none)"
"""Confusion-matrix label for "no object": a missed benchmark object or a prediction on background."""


class ShapeKind(enum.StrEnum):
    """How a shape is scored: boxes by box IoU, polygons and masks by mask IoU when both sides have one."""

    BOX = "box"
    POLYGON = "polygon"
    MASK = "mask"


class Units(enum.StrEnum):
    """The unit of a source's coordinates: pixels (COCO, Darwin), 0..1 (Encord) or 0..100 (Label Studio)."""

    PX = "px"
    NORM = "norm"
    PCT = "pct"


@dataclass(frozen=True, slots=True)
class Shape:
    """One object on one frame.

    Attributes:
        object_id: the object's id in its source (Encord objectHash, Darwin/LS region id, COCO annotation id);
            the same id on several frames is one tracked object.
        label: class name; classes are compared by name across formats.
        xyxy: box corners in pixels (in percent when ``Unit.pixel_size_known`` is false); for polygons and
            masks, their enclosing box.
        kind: box, polygon or mask.
        score: model confidence in [0, 1]; None for human labels.
        polygons: rings of flat ``x0, y0, x1, y1, ...`` coordinates in the same units as ``xyxy``.
        rle: a COCO RLE (``{"size": [h, w], "counts": ...}``) in pixels, for masks.
        class_key: what the seed's ``class_score`` compares (Encord featureHash; the label elsewhere).
        box_src: top-left x, y, w, h in the source's own units, for the seed's IoU formula, bit for bit.
        created_by: who made it (Encord createdBy, Darwin annotator email), if known.
        attributes: (name, answer) pairs of the object's attributes, sorted.
        crowd: a COCO crowd region (never a miss; predictions inside it are ignored).
        even_odd: ``polygons`` fill even-odd, so a ring inside another is a hole (Darwin's ``paths``); else their
            union is the shape (COCO, where every list is a part).
        track_id: the track the shape belongs to, when the source says it is tracked (COCO ``track_id``; the
            object id of a Darwin, Label Studio or Encord video object seen on more than one frame); None for
            an untracked shape. Never derived from ``object_id`` alone: COCO annotation ids are no tracks.
    """

    object_id: str
    label: str
    xyxy: BoxXYXY
    kind: ShapeKind = ShapeKind.BOX
    score: float | None = None
    polygons: tuple[tuple[float, ...], ...] = ()
    rle: CocoRle | None = None
    class_key: str = ""
    box_src: BoxXYWH | None = None
    created_by: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    crowd: bool = False
    even_odd: bool = False
    track_id: str | None = None

    @property
    def has_mask(self) -> bool:
        return self.kind is not ShapeKind.BOX


@dataclass(slots=True)
class Unit:
    """One slot of one item: the thing whose frames are compared (an Encord data unit, a Darwin slot, an image).

    Attributes:
        item: the item's name or path, the key items are matched by (``folder/name.jpg``).
        slot: the slot name (``"0"`` for single-file items).
        title: a display name (Encord data_title; the item name elsewhere).
        item_id: the source's id for the item (Encord data_hash, Darwin item_id, LS task id), if any.
        label_id: the label set's id (Encord label_hash), if any.
        width: frame width in pixels, if known.
        height: frame height in pixels, if known.
        src_units: the unit of ``Shape.box_src``.
        pixel_size_known: false when shapes are in percent because the source gave no pixel size.
        frames: frame index (0-based) -> shapes on it; listed frames may be empty (they were looked at).
        tags: (frame index, question, answer); frame -1 is a tag on the whole slot.
        object_order: object ids in order of first appearance (the order the Encord SDK lists instances in).
        skipped: shapes not scored (keypoints, lines, ...), by kind.
        fps: the rate its frame indices count at, when the source says (a Darwin video slot's ``fps``, an
            Encord video's ``data_fps``, COCO frames' ``frame_index`` / ``timestamp_s``; for Label Studio, the
            project's ``framerate``, which need not be the file's).
        retime: Label Studio video only: its frames re-counted at another rate by time (the tracks sampled at
            the times of that rate's frames); pairing calls it with the other side's ``fps``.
        in_seed: whether the seed CSV reads this unit (an Encord image group's script reads image 0 only).
        keyframes: the frames the source itself lists shapes on, when ``frames`` also holds frames filled in
            between them (Darwin and Label Studio video tracks); None: every frame of ``frames`` is listed.
            What a preview draws: the frames a run sampled, not every frame a track spans.
    """

    item: str
    slot: str = "0"
    title: str = ""
    item_id: str | None = None
    label_id: str | None = None
    width: int | None = None
    height: int | None = None
    src_units: Units = Units.PX
    pixel_size_known: bool = True
    frames: dict[int, list[Shape]] = field(default_factory=dict)
    tags: set[tuple[int, str, str]] = field(default_factory=set)
    object_order: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    fps: float | None = None
    retime: Callable[[float], dict[int, list[Shape]]] | None = field(default=None, repr=False, compare=False)
    in_seed: bool = True
    keyframes: set[int] | None = None
    _seen_ids: set[str] = field(default_factory=set, repr=False, compare=False)

    def add(self, frame: int, shape: Shape) -> None:
        """Put a shape on a frame, remembering the object's first appearance."""
        self.frames.setdefault(frame, []).append(shape)
        if shape.object_id not in self._seen_ids:
            self._seen_ids.add(shape.object_id)
            self.object_order.append(shape.object_id)

    def skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1


@dataclass(slots=True)
class Dataset:
    """Everything one side of the comparison holds (the benchmark, or one candidate).

    Attributes:
        name: candidate name (``alice``, ``yolo-v2``) or ``benchmark``.
        source: where it came from (a path, ``upload:NAME`` or ``body``), for messages.
        format: ``coco``, ``coco_results``, ``darwin``, ``label_studio`` or ``encord``.
        units: item slots, in source order.
        coco_images: for COCO benchmarks, image id -> (item, slot, frame), so a results file can refer to it.
        coco_categories: for COCO benchmarks, category id -> name, for the same reason.
        model_version: the model that made the labels, when the source says (COCO ``info.model_version``, a
            Label Studio prediction's ``model_version``, one Darwin ``inference.model`` name); None otherwise.
    """

    name: str
    source: str
    format: str
    units: list[Unit] = field(default_factory=list)
    coco_images: dict[int, tuple[str, str, int]] = field(default_factory=dict)
    coco_categories: dict[int, str] = field(default_factory=dict)
    model_version: str | None = None

    def has_scores(self) -> bool:
        """Whether every shape carries a score (and there is at least one): then COCO mAP is meaningful."""
        shapes = [s for u in self.units for f in u.frames.values() for s in f]
        return bool(shapes) and all(s.score is not None for s in shapes)
