"""Item predictions -> an Encord label row (encord.md §1), merged into an existing row without touching human work.

Pure: no I/O. The row is what ``LabelRowV2.to_encord_dict()`` (encord 0.1.211) writes and ``save()`` posts.

Which objects are ours. An object (one ``objectHash``, all its frames) is this model's, and is replaced on a
re-run, only when **every** frame entry of it has

- ``createdBy`` == our ``created_by`` (the service account), ``manualAnnotation`` false, and ``lastEditedBy``
  absent or ours: nobody edited it since we wrote it; and
- an ``objectHash`` starting with this model's 2-character tag (12 bits of SHA-256 of ``model.spec``): other
  models pushed by the same service account are left alone.

Everything else is kept as it is: human objects, other models' objects, and objects of ours a person has
edited. When a kept object has the hash we would write (a person edited our track), ours is skipped so the
edit wins. Our hashes are deterministic (model version + item + slot + track), so a re-run writes the same ones.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import math
import mimetypes
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import cast

from models.masks import Masks
from service.convert.encord_ontology import (
    BOUNDING_BOX,
    EncordOntology,
    OntologyObject,
    b64_hash,
    default_ontology,
)
from service.convert.encord_shapes import BITMASK, POLYGON, bitmask_of, polygons_of
from service.convert.encord_types import (
    EncordBoundingBox,
    EncordDataUnit,
    EncordFrameLabels,
    EncordLabelRowJson,
    EncordLabels,
    EncordObject,
    EncordObjectEntry,
)
from service.convert.label_studio_masks import row_mask
from service.convert.types import ModelRef, UnsupportedByFormatError
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, is_tracked, tracks_of

__all__ = ["BOUNDING_BOX", "EncordOntology", "OntologyObject", "default_ontology"]  # their home was this module

ZERO_UUID = str(uuid.UUID(int=0))
DEFAULT_CREATED_BY = "preannotate@example.com"
# One data unit whose labels are keyed by frame number (encord.md §1.1).
FRAME_KEYED_TYPES = frozenset({"video", "dicom", "nifti"})
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class EncordRowStats:
    """What one conversion did.

    Attributes:
        objects: Object instances written (a track is one, on all its frames).
        object_frames: Per-frame object entries written.
        unmapped: Model class name -> boxes dropped because no ontology object matches it.
        degenerate: Boxes dropped because nothing of them is left inside the frame.
        replaced: Our earlier objects removed from the existing row.
        kept: Objects of the existing row kept as they were (people's, other models', edited ones).
        edited_skipped: Our objects not written because a kept (edited) object already has their hash.
    """

    objects: int = 0
    object_frames: int = 0
    unmapped: Mapping[str, int] = field(default_factory=dict)
    degenerate: int = 0
    replaced: int = 0
    kept: int = 0
    edited_skipped: int = 0


@dataclass(frozen=True, slots=True)
class EncordLabelRow:
    """A label row ready to save, and the counts behind it."""

    row: EncordLabelRowJson
    stats: EncordRowStats


def item_to_encord_label_row(
    item: ItemPredictions,
    model: ModelRef,
    ontology: EncordOntology,
    *,
    existing_row: Mapping[str, object] | None = None,
    created_by: str = DEFAULT_CREATED_BY,
    created_at: datetime | None = None,
) -> EncordLabelRowJson:
    """The label row for one item; see :func:`build_encord_label_row` (this drops the stats)."""
    return build_encord_label_row(
        item, model, ontology, existing_row=existing_row, created_by=created_by, created_at=created_at
    ).row


def build_encord_label_row(
    item: ItemPredictions,
    model: ModelRef,
    ontology: EncordOntology,
    *,
    existing_row: Mapping[str, object] | None = None,
    created_by: str = DEFAULT_CREATED_BY,
    created_at: datetime | None = None,
) -> EncordLabelRow:
    """Write this model's boxes for ``item`` as an Encord label row.

    Boxes become ``boundingBox {h, w, x, y}``: top-left corner and size as fractions (0..1) of the frame,
    clipped to it. A row with a mask (``Detections.masks``; a track's ``TrackBox.mask``) goes to a polygon or
    bitmask object of its class when the ontology has one (``encord_shapes``: every part and hole, or the
    frame-sized mask), else to its bounding-box object as its box; a track with a mask on any frame is one such
    object, its frames without a mask drawn as their box in that shape.

    Image slots give one object per box. Video, DICOM and image-sequence slots give one object
    per track (one ``objectHash`` on every frame it was seen) when the slot is tracked (``Detections.tracker_id``),
    else one per box; a detection in no kept track is left out.

    Args:
        item: The item's slots and frame results. An image group (several image slots) maps slot ``i`` to the
            group's ``i``-th image; anything else must have one slot with pixels.
        model: The model; its version goes into the object hashes, its spec into their 2-character tag.
        ontology: Maps class names to ``featureHash`` (unmapped boxes are dropped and counted).
        existing_row: The row as Encord returned it (initialised). Its data units and everything not ours are
            kept; our earlier objects are replaced (module docstring). None builds a new detached row with
            the SDK's placeholder (zero) UUIDs, to be attached or filled in by the caller.
        created_by: ``createdBy``/``lastEditedBy`` of our objects: the service account's email.
        created_at: ``createdAt``/``lastEditedAt``; None means now.

    Returns:
        The row and its :class:`EncordRowStats`.

    Raises:
        UnsupportedByFormatError: The item's slots do not fit one row, or not ``existing_row`` (count or media).
        ValueError: ``existing_row`` is malformed.
    """
    when = format_encord_time(created_at or datetime.now(UTC))
    row = _new_row(item, when) if existing_row is None else _copied_row(existing_row)
    writer = _Writer(ontology, model, item.name, created_by, when)
    frame_keyed = row.get("data_type") in FRAME_KEYED_TYPES
    units = _units_for_slots(item, row)

    kept_hashes, replaced = _remove_ours(row, frame_keyed, model_tag(model), created_by)
    for slot, unit in units:
        frames = item.frames_of_slot(slot.slot)
        if frame_keyed and is_tracked(frames):
            writer.add_tracks(unit, tracks_of(frames), slot)
        else:
            writer.add_boxes(unit, frames, frame_keyed)
    edited_skipped = writer.commit(row, frame_keyed, kept_hashes)
    stats = EncordRowStats(
        objects=writer.objects_written,
        object_frames=writer.frames_written,
        unmapped=dict(writer.unmapped),
        degenerate=writer.degenerate,
        replaced=replaced,
        kept=len(kept_hashes),
        edited_skipped=edited_skipped,
    )
    return EncordLabelRow(row, stats)


def model_tag(model: ModelRef) -> str:
    """The first 2 characters of every object hash this model writes (12 bits of SHA-256 of its spec)."""
    return b64_hash(b"preannotate-model:" + model.spec.encode())[:2]


def object_hash(model: ModelRef, item_name: str, key: str) -> str:
    """An 8-character ``objectHash`` (6 bytes, standard base64, like the SDK's ``short_uuid_str``): 12 bits of
    model tag, then 36 bits of SHA-256 of model version, item and ``key`` (slot, track or box, account)."""
    tag = int.from_bytes(hashlib.sha256(b"preannotate-model:" + model.spec.encode()).digest()[:2]) >> 4
    body = int.from_bytes(hashlib.sha256(f"{model.version}\0{item_name}\0{key}".encode()).digest()[:5]) >> 4
    return base64.b64encode(((tag << 36) | body).to_bytes(6)).decode("ascii")


def format_encord_time(when: datetime) -> str:
    """``Sun, 01 Jun 2025 12:00:00 UTC``, whatever the process locale (``%a``/``%b`` would follow it)."""
    utc = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return f"{_DAYS[utc.weekday()]}, {utc.day:02d} {_MONTHS[utc.month - 1]} {utc:%Y %H:%M:%S} UTC"


def iter_object_entries(row: EncordLabelRowJson) -> Iterable[tuple[str | None, EncordObjectEntry]]:
    """Every object entry of a row, with its frame key (None for image units)."""
    frame_keyed = row.get("data_type") in FRAME_KEYED_TYPES
    for unit in (row.get("data_units") or {}).values():
        if frame_keyed:
            for frame, frame_labels in (_frame_labels(unit) or {}).items():
                for entry in frame_labels.get("objects", []):
                    yield frame, entry
        else:
            for entry in (_image_labels(unit) or {}).get("objects", []):
                yield None, entry


# -- internals ------------------------------------------------------------------------------------------------------


def _copied_row(existing: Mapping[str, object]) -> EncordLabelRowJson:
    """A deep copy of a row read from Encord, to merge into; ValueError when it has no data units."""
    row = copy.deepcopy(existing)
    units = row.get("data_units")
    if not isinstance(units, dict) or not units:
        raise ValueError("existing label row has no data_units")
    # Encord's own shape: the keys we read are read defensively below, everything else is carried as it is.
    return cast(EncordLabelRowJson, row)


def _frame_labels(unit: EncordDataUnit) -> EncordFrameLabels:
    """A frame-keyed unit's labels (the row's ``data_type`` says which kind a unit holds)."""
    return cast(EncordFrameLabels, unit.get("labels"))


def _image_labels(unit: EncordDataUnit) -> EncordLabels:
    """An image unit's labels (the row's ``data_type`` says which kind a unit holds)."""
    return cast(EncordLabels, unit.get("labels"))


def _mime(slot: SlotMeta, fallback: str) -> str:
    guessed = mimetypes.guess_type(slot.source_files[0])[0] if slot.source_files else None
    return guessed or fallback


def _pixel_slots(item: ItemPredictions) -> list[SlotMeta]:
    return [s for s in item.slots if s.media is not MediaKind.PDF]


def _data_type_for(slots: Sequence[SlotMeta]) -> str:
    kinds = {s.media for s in slots}
    if len(slots) == 1:
        return {
            MediaKind.IMAGE: "image",
            MediaKind.VIDEO: "video",
            MediaKind.SEQUENCE: "video",  # Encord encodes an image sequence to a video (createVideo: true)
            MediaKind.DICOM: "dicom",
        }[slots[0].media]
    if slots and kinds == {MediaKind.IMAGE}:
        return "img_group"
    raise UnsupportedByFormatError(
        f"an Encord label row holds one media or one image group, not {[s.media.value for s in slots]}"
    )


def _new_unit(slot: SlotMeta, data_hash: str, sequence: int | str, frame_keyed: bool) -> EncordDataUnit:
    unit: EncordDataUnit = {
        "data_hash": data_hash,
        "data_title": PurePath(slot.source_files[0]).name if slot.source_files else slot.slot,
        "data_link": "",
        "data_type": _mime(slot, "video/mp4" if frame_keyed else "image/jpeg"),
        "data_sequence": sequence,
        "width": slot.width,
        "height": slot.height,
        "labels": {} if frame_keyed else {"objects": [], "classifications": []},
    }
    if frame_keyed and slot.media is not MediaKind.DICOM:
        unit["data_duration"] = encord_duration_s(slot)
        unit["data_fps"] = slot.fps
    return unit


def encord_duration_s(slot: SlotMeta) -> float | None:
    """``data_duration`` such that the SDK's frame count, ``ceil(fps * data_duration)``, is the slot's frame count.

    ``frames / fps`` can land a float step above it (7 / 25 = 0.28, and 25 * 0.28 = 7.000000000000001: 8 frames),
    so it is stepped down while the SDK would count one frame too many, never so far that it drops the last one.
    """
    duration, fps, frames = slot.playback_duration_s, slot.fps, slot.frame_count
    if duration is None or fps is None or not math.isfinite(fps) or fps <= 0 or frames <= 0:
        return duration
    while math.ceil(fps * duration) > frames and fps * math.nextafter(duration, 0) > frames - 1:
        duration = math.nextafter(duration, 0)
    return duration


def _new_row(item: ItemPredictions, when: str) -> EncordLabelRowJson:
    """A detached row shaped like ``LabelRowV2.from_media_metadata(...).to_encord_dict()``."""
    slots = _pixel_slots(item)
    data_type = _data_type_for(slots)
    frame_keyed = data_type in FRAME_KEYED_TYPES
    if data_type == "img_group":
        units = {str(uuid.UUID(int=i)): _new_unit(s, str(uuid.UUID(int=i)), str(i), False) for i, s in enumerate(slots)}
    else:
        units = {ZERO_UUID: _new_unit(slots[0], ZERO_UUID, 0, frame_keyed)}
    return {
        "label_hash": ZERO_UUID,
        "branch_name": "main",
        "created_at": when,
        "last_edited_at": when,
        "data_hash": ZERO_UUID,
        "dataset_hash": ZERO_UUID,
        "dataset_title": "",
        "data_title": item.name,
        "data_type": data_type,
        "annotation_task_status": "QUEUED",
        "is_shadow_data": False,
        "object_answers": {},
        "classification_answers": {},
        "object_actions": {},
        "label_status": "LABEL_IN_PROGRESS",
        "data_units": units,
        "spaces": {},
    }


def _units_for_slots(item: ItemPredictions, row: EncordLabelRowJson) -> list[tuple[SlotMeta, EncordDataUnit]]:
    """Pair each pixel slot with its data unit: by order for image groups (``data_sequence``), else the one unit."""
    slots = _pixel_slots(item)
    units = list(row["data_units"].values())
    data_type = row.get("data_type")
    if data_type == "img_group":
        units.sort(key=lambda u: int(u.get("data_sequence", 0)))
        if len(units) != len(slots) or any(s.media is not MediaKind.IMAGE for s in slots):
            raise UnsupportedByFormatError(
                f"image group of {len(units)} images, item {item.name!r} has {len(slots)} image slots"
            )
        return list(zip(slots, units, strict=True))
    if data_type not in FRAME_KEYED_TYPES | {"image"}:
        raise UnsupportedByFormatError(
            f"label rows of data_type {data_type!r} are not supported (image, img_group, video, dicom)"
        )
    if len(slots) != 1 or len(units) != 1:
        raise UnsupportedByFormatError(
            f"a {data_type} row has one data unit; item {item.name!r} has {len(slots)} slots"
        )
    if (data_type == "image") != (slots[0].media is MediaKind.IMAGE):
        raise UnsupportedByFormatError(f"a {data_type} row cannot take a {slots[0].media.value} slot")
    return [(slots[0], units[0])]


def _is_ours(entry: EncordObjectEntry, tag: str, created_by: str) -> bool:
    return (
        entry.get("createdBy") == created_by
        and entry.get("manualAnnotation") is False
        and entry.get("lastEditedBy") in (None, created_by)
        and str(entry.get("objectHash", "")).startswith(tag)
    )


def _remove_ours(row: EncordLabelRowJson, frame_keyed: bool, tag: str, created_by: str) -> tuple[set[str], int]:
    """Drop our earlier objects (every frame of them); return the hashes kept and how many objects went."""
    verdict: dict[str, bool] = {}
    for _, entry in iter_object_entries(row):
        h = str(entry.get("objectHash"))
        verdict[h] = verdict.get(h, True) and _is_ours(entry, tag, created_by)
    ours = {h for h, mine in verdict.items() if mine}
    for unit in row["data_units"].values():
        if frame_keyed:
            unit.setdefault("labels", {})
            frames = _frame_labels(unit)
            for frame in list(frames):
                frames[frame]["objects"] = [
                    e for e in frames[frame].get("objects", []) if e.get("objectHash") not in ours
                ]
                if not frames[frame]["objects"] and not frames[frame].get("classifications"):
                    del frames[frame]  # only frames that carry labels appear
        else:
            unit.setdefault("labels", {"objects": [], "classifications": []})
            labels = _image_labels(unit)
            labels["objects"] = [e for e in labels.get("objects", []) if e.get("objectHash") not in ours]
    row["object_answers"] = {h: v for h, v in (row.get("object_answers") or {}).items() if h not in ours}
    row["object_actions"] = {h: v for h, v in (row.get("object_actions") or {}).items() if h not in ours}
    return set(verdict) - ours, len(ours)


@dataclass(slots=True)
class _Pending:
    """One object to write: its entries per (unit, frame key)."""

    hash: str
    entries: list[tuple[EncordDataUnit, str | None, EncordObject]] = field(default_factory=list)


class _Writer:
    """Collects our objects, then writes them into the row in one go (after the kept hashes are known)."""

    def __init__(self, ontology: EncordOntology, model: ModelRef, item_name: str, created_by: str, when: str) -> None:
        self.ontology = ontology
        self.model = model
        self.item_name = item_name
        self.created_by = created_by
        self.when = when
        self.pending: list[_Pending] = []
        self.used: set[str] = set()
        self.unmapped: Counter[str] = Counter()
        self.degenerate = 0
        self.objects_written = 0
        self.frames_written = 0

    def add_boxes(self, unit: EncordDataUnit, frames: Iterable[FrameResult], frame_keyed: bool) -> None:
        for frame in frames:
            info, dets = frame.info, frame.detections
            for n, (xyxy, score, class_id) in enumerate(
                zip(dets.xyxy.tolist(), dets.confidence.tolist(), dets.class_id.tolist(), strict=True)
            ):
                key = f"{info.slot}/frame/{info.frame_index}/box/{n}"
                obj = self._pending(key)
                mask = row_mask(dets.masks, n)
                target = self._target(int(class_id), mask is not None)
                entry = self._entry(obj.hash, target, xyxy, float(score), info.width, info.height, mask)
                if entry is not None:
                    obj.entries.append((unit, str(info.frame_index) if frame_keyed else None, entry))

    def add_tracks(self, unit: EncordDataUnit, tracks: Sequence[Track], slot: SlotMeta) -> None:
        for track in tracks:
            obj = self._pending(f"{track.slot}/track/{track.track_id}")
            masks = [row_mask(box.mask, 0) for box in track.boxes]
            # One object has one ontology object on every frame: a track with a mask anywhere is a masked one.
            target = self._target(track.class_id, any(m is not None for m in masks))
            for box, mask in zip(track.boxes, masks, strict=True):
                entry = self._entry(obj.hash, target, box.xyxy, box.confidence, slot.width, slot.height, mask)
                if entry is not None:
                    obj.entries.append((unit, str(box.frame_index), entry))

    def commit(self, row: EncordLabelRowJson, frame_keyed: bool, kept: set[str]) -> int:
        skipped = 0
        for obj in self.pending:
            if not obj.entries:
                continue
            if obj.hash in kept:
                skipped += 1  # a person edited this object of ours: their version stays
                continue
            for unit, frame, entry in obj.entries:
                # A frame key is there exactly when the row is frame-keyed (add_boxes, add_tracks).
                if frame is None:
                    target = _image_labels(unit)
                else:
                    target = _frame_labels(unit).setdefault(frame, {"objects": [], "classifications": []})
                target.setdefault("objects", []).append(entry)
            row.setdefault("object_answers", {})[obj.hash] = {"classifications": [], "objectHash": obj.hash}
            self.objects_written += 1
            self.frames_written += len(obj.entries)
        if frame_keyed:
            for unit in row["data_units"].values():
                # Frame keys in numeric order, as the SDK writes them.
                unit["labels"] = dict(sorted(_frame_labels(unit).items(), key=lambda kv: int(kv[0])))
        return skipped

    def _pending(self, key: str) -> _Pending:
        # The account is in the key: the same model pushed by two service accounts must not collide.
        key = f"{key}@{self.created_by}"
        h = object_hash(self.model, self.item_name, key)
        salt = 0
        while h in self.used:  # 36 bits per item: rare, but two objects must never share a hash
            salt += 1
            h = object_hash(self.model, self.item_name, f"{key}#{salt}")
        self.used.add(h)
        obj = _Pending(h)
        self.pending.append(obj)
        return obj

    def _target(self, class_id: int, masked: bool) -> OntologyObject | str:
        """The ontology object for the class, or the class name when none takes it."""
        names = self.model.class_names
        class_name = names[class_id] if 0 <= class_id < len(names) else str(class_id)
        return self.ontology.resolve_row(class_name, masked) or class_name

    def _entry(
        self,
        obj_hash: str,
        target: OntologyObject | str,
        xyxy: Sequence[float],
        score: float,
        width: int,
        height: int,
        mask: Masks | None,
    ) -> EncordObject | None:
        if isinstance(target, str):
            self.unmapped[target] += 1
            return None
        entry = self._head(obj_hash, target, score)
        if not _add_geometry(entry, target.shape, tuple(xyxy), width, height, mask):
            self.degenerate += 1
            return None
        return entry

    def _head(self, obj_hash: str, target: OntologyObject, score: float) -> EncordObject:
        return {
            "name": target.name,
            "color": target.color,
            "shape": target.shape,
            "value": target.value,
            "createdAt": self.when,
            "createdBy": self.created_by,
            "confidence": round(min(max(score, 0.0), 1.0), 6),
            "objectHash": obj_hash,
            "featureHash": target.feature_hash,
            "manualAnnotation": False,
            "lastEditedAt": self.when,
            "lastEditedBy": self.created_by,
        }


def _add_geometry(
    entry: EncordObject, shape: str, xyxy: tuple[float, ...], width: int, height: int, mask: Masks | None
) -> bool:
    """Put the row's geometry in ``shape`` into ``entry``; False when nothing of it is inside the frame."""
    if shape == POLYGON:
        polygons = polygons_of(mask, xyxy, width, height) if width > 0 and height > 0 else None
        if polygons is not None:
            entry["polygon"], entry["polygons"] = polygons
        return polygons is not None
    if shape == BITMASK:
        bitmask = bitmask_of(mask, xyxy, width, height) if width > 0 and height > 0 else None
        if bitmask is not None:
            entry["bitmask"] = bitmask
        return bitmask is not None
    box = _normalised_box(xyxy, width, height)
    if box is not None:
        entry["boundingBox"] = box
    return box is not None


def _normalised_box(xyxy: Sequence[float], width: int, height: int) -> EncordBoundingBox | None:
    """Pixel corners -> ``{h, w, x, y}`` fractions of the frame, clipped to it; None if nothing is left."""
    if width <= 0 or height <= 0:
        return None
    fractions = (xyxy[0] / width, xyxy[1] / height, xyxy[2] / width, xyxy[3] / height)
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in fractions)
    if x2 <= x1 or y2 <= y1:
        return None
    return {"h": round(y2 - y1, 6), "w": round(x2 - x1, 6), "x": round(x1, 6), "y": round(y1, 6)}
