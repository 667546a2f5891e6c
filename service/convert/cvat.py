"""An item's predictions as CVAT annotations: shapes on images, tracks on videos (docs: ``cvat_types``).

A video's objects become ``tracks``: one keyframe per sampled frame the object was seen on, ``outside: true`` on the
first sampled frame it was missed (CVAT interpolates between keyframes, and would otherwise carry the last box on to
the end of the task). Images, and detections no tracker linked, become ``shapes``. Every object is ``source: auto``
and carries the model's marker (``MARKER_ATTRIBUTE``), so a re-run can tell its own objects from people's.

Frame numbers are the task's: each slot comes with a function from its ``frame_index`` (a source video's frame, or a
position in the frames fetched from CVAT) to the task frame, and frames the task does not hold are counted, not
written. Model classes map to the task's labels by name, case-insensitively, or through ``aliases``; a class no label
takes is counted in ``dropped``. Masks become polygons (the largest part of each) where the label takes polygons; a
box whose mask has no pixel (the segmenter found nothing) is its rectangle, or in a polygon track (one shape type per
track) its rectangle as a polygon, as Darwin draws it. Two samples on one task frame (a source sampled finer than the
task's step) are drawn once: the first.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from service.convert.cvat_types import (
    SOURCE_AUTO,
    CvatAnnotations,
    CvatAttributeValue,
    CvatLabel,
    CvatShape,
    CvatShapeType,
    CvatTrack,
    CvatTrackedShape,
    empty_annotations,
)
from service.convert.darwin_masks import has_mask
from service.convert.masks import mask_to_polygons
from service.convert.types import ModelRef
from service.pipeline.frames import FrameResult
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import TRACKED_MEDIA, Track, TrackBox, tracks_of

TaskFrameOf = Callable[[int], int | None]
"""A slot's ``frame_index`` -> the task frame it is, or None when the task does not hold it."""
POINT_DECIMALS = 2


def model_marker(model: ModelRef) -> str:
    """The marker our objects carry: ``<spec>@<version>`` (a re-run of the same spec replaces older versions'),
    then ``#<digest>`` of what one push wrote (``stamp_marker``)."""
    return f"{model.spec}@{model.version}"


def marker_spec(marker: str) -> str:
    """The model spec a marker names (``model_marker``'s inverse, for the part before the version)."""
    return marker_version(marker).rpartition("@")[0]


@dataclass(frozen=True, slots=True)
class Stamp:
    """A stamped marker's parts: ``<spec>@<version>#<digest>/<index>/<total>``.

    Attributes:
        version: ``<spec>@<version>``.
        push: ``<spec>@<version>#<digest>``: the same on every object one push wrote.
        index: The object's place in that push (a track keeps it in every job it is split into); None unstamped.
        total: How many objects that push wrote; None unstamped.
    """

    version: str
    push: str
    index: int | None
    total: int | None = None


def read_marker(marker: str) -> Stamp:
    """A marker's parts; one without a digest (another tool's, or written by hand) is its own version."""
    version, sep, rest = marker.rpartition("#")
    if not sep:
        return Stamp(marker, marker, None)
    digest, _, place = rest.partition("/")
    index, _, total = place.partition("/")
    return Stamp(
        version,
        f"{version}#{digest}",
        int(index) if index.isdigit() else None,
        int(total) if total.isdigit() else None,
    )


def marker_version(marker: str) -> str:
    """``<spec>@<version>``: a marker without its digest and index."""
    return read_marker(marker).version


def stamp_marker(annotations: CvatAnnotations) -> str:
    """Stamp every object of ``annotations`` (in place) with ``<spec>@<version>#<digest>/<index>/<total>``: the digest
    of the push's content, the object's place in it and the push's size; returns the push's part
    (``<spec>@<version>#<digest>``).

    That is what tells a later push that a job holds exactly its objects already: CVAT adds keyframes of its own to a
    track at a job's ends, so stored objects cannot be compared with ours field by field, but each keeps its stamp.
    An index found twice is a duplicate; an index missing is an object a person deleted, which stays deleted.
    """
    digest = hashlib.sha256(json.dumps(annotations, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    stamped = ""
    objects = (*annotations["shapes"], *annotations["tracks"])
    for index, obj in enumerate(objects):
        for value in obj["attributes"]:
            stamped = f"{marker_version(value['value'])}#{digest}"
            value["value"] = f"{stamped}/{index}/{len(objects)}"
    return stamped


@dataclass(frozen=True, slots=True)
class CvatConversion:
    """What an item became.

    Attributes:
        annotations: The shapes and tracks to create.
        frames: Every task frame the item's sampled frames are (what a push replaces our objects on).
        dropped: Detections per model class that no label takes (by name, alias or shape type).
        off_task: Sampled frames that are no frame of the task (before its start, after its stop).
    """

    annotations: CvatAnnotations
    frames: frozenset[int]
    dropped: Counter[str]
    off_task: int = 0


@dataclass(frozen=True, slots=True)
class LabelTable:
    """Which of a task's labels takes a model class: the alias's, else the class's own name, case-insensitively."""

    by_name: Mapping[str, CvatLabel]
    aliases: Mapping[str, str]

    @classmethod
    def of(cls, labels: Sequence[CvatLabel], aliases: Mapping[str, str] | None = None) -> LabelTable:
        return cls(
            by_name={label.name.strip().lower(): label for label in labels},
            aliases={k.strip().lower(): v for k, v in (aliases or {}).items()},
        )

    def for_class(self, class_name: str) -> CvatLabel | None:
        key = class_name.strip().lower()
        target = self.aliases.get(key, class_name).strip().lower()
        return self.by_name.get(target)


def item_to_cvat(
    predictions: ItemPredictions,
    task_frames: Mapping[str, TaskFrameOf],
    labels: Sequence[CvatLabel],
    model: ModelRef,
    *,
    aliases: Mapping[str, str] | None = None,
) -> CvatConversion:
    """The item's objects on the task.

    Args:
        predictions: The item (tracker ids in its video detections: tracks; none: shapes).
        task_frames: Each slot's frame numbering; a slot missing here is not written.
        labels: The task's labels, each with its ``marker_id`` (the push adds the attribute first).
        model: Whose predictions these are (class names, the marker).
        aliases: Model class -> label name, case-insensitive; wins over the class's own name.

    Raises:
        ValueError: A label without its marker attribute (a push must add it before converting).
    """
    missing = [label.name for label in labels if label.marker_id is None]
    if missing:
        raise ValueError(f"labels {missing} have no marker attribute")
    table = LabelTable.of(labels, aliases)
    out = empty_annotations()
    dropped: Counter[str] = Counter()
    covered: set[int] = set()
    off_task = 0
    marker = model_marker(model)
    for meta in predictions.slots:
        to_task = task_frames.get(meta.slot)
        frames = predictions.frames_of_slot(meta.slot)
        if to_task is None or not frames:
            continue
        numbered = [(f, to_task(f.info.frame_index)) for f in sorted(frames, key=lambda r: r.info.frame_index)]
        off_task += sum(1 for _, n in numbered if n is None)
        kept = [(f, n) for f, n in numbered if n is not None]
        covered.update(n for _, n in kept)
        tracked = meta.media in TRACKED_MEDIA and any(f.detections.tracker_id is not None for f, _ in kept)
        if tracked:
            sampled = sorted({n for _, n in kept})
            by_index = {f.info.frame_index: n for f, n in kept}
            for track in tracks_of([f for f, _ in kept]):
                made = _track(track, by_index, sampled, table, model, marker, dropped)
                if made is not None:
                    out["tracks"].append(made)
        else:
            drawn: set[int] = set()
            for result, frame in kept:
                if frame not in drawn:  # later samples on the same task frame would stack copies of each object
                    drawn.add(frame)
                    out["shapes"] += _shapes(result, frame, table, model, marker, dropped)
    return CvatConversion(out, frozenset(covered), dropped, off_task)


def _marker(label: CvatLabel, marker: str) -> list[CvatAttributeValue]:
    assert label.marker_id is not None  # checked in item_to_cvat
    return [{"spec_id": label.marker_id, "value": marker}]


def _shapes(
    result: FrameResult,
    frame: int,
    labels: LabelTable,
    model: ModelRef,
    marker: str,
    dropped: Counter[str],
) -> list[CvatShape]:
    dets = result.detections
    shapes: list[CvatShape] = []
    for row in range(len(dets)):
        name = model.class_names[int(dets.class_id[row])]
        label = labels.for_class(name)
        box = TrackBox(result.info.frame_index, result.info.timestamp_s, _xyxy(dets.xyxy[row]), 0.0)
        if dets.masks is not None:
            box = TrackBox(box.frame_index, box.timestamp_s, box.xyxy, 0.0, dets.masks[row : row + 1])
        kind = None if label is None else _shape_type(label, [box])
        if label is None or kind is None:
            dropped[name] += 1
            continue
        shapes.append(
            {
                "type": kind,
                "frame": frame,
                "label_id": label.id,
                "points": _points(kind, box),
                "occluded": False,
                "outside": False,
                "z_order": 0,
                "rotation": 0.0,
                "group": 0,
                "source": SOURCE_AUTO,
                "attributes": _marker(label, marker),
            }
        )
    return shapes


def _track(
    track: Track,
    task_frame: Mapping[int, int],
    sampled: Sequence[int],
    labels: LabelTable,
    model: ModelRef,
    marker: str,
    dropped: Counter[str],
) -> CvatTrack | None:
    name = model.class_names[track.class_id]
    label = labels.for_class(name)
    kind = None if label is None else _shape_type(label, track.boxes)
    if label is None or kind is None:
        dropped[name] += len(track.boxes)
        return None
    position = {frame: n for n, frame in enumerate(sampled)}
    shapes: list[CvatTrackedShape] = []
    last: tuple[int, list[float]] | None = None  # (position, points) of the previous keyframe
    for box in track.boxes:
        frame = task_frame[box.frame_index]
        if last is not None and position[frame] == last[0]:
            continue  # two sampled frames on one task frame (a source finer than the task's step)
        points = _points(kind, box)
        if last is not None and position[frame] > last[0] + 1:  # missed on the samples between
            shapes.append(_keyframe(kind, sampled[last[0] + 1], last[1], outside=True))
        shapes.append(_keyframe(kind, frame, points, outside=False))
        last = (position[frame], points)
    if last is None:  # a track without boxes (tracks_of makes none)
        return None
    if last[0] + 1 < len(sampled):  # gone by the next sample: hide it from there on
        shapes.append(_keyframe(kind, sampled[last[0] + 1], last[1], outside=True))
    return {
        "frame": shapes[0]["frame"],
        "label_id": label.id,
        "group": 0,
        "source": SOURCE_AUTO,
        "attributes": _marker(label, marker),
        "shapes": shapes,
    }


def _keyframe(kind: CvatShapeType, frame: int, points: list[float], *, outside: bool) -> CvatTrackedShape:
    return {
        "type": kind,
        "frame": frame,
        "points": points,
        "occluded": False,
        "outside": outside,
        "z_order": 0,
        "rotation": 0.0,
        "attributes": [],
    }


def _shape_type(label: CvatLabel, boxes: Sequence[TrackBox]) -> CvatShapeType | None:
    """Polygons where a box has mask pixels and the label takes them, else rectangles where it takes those."""
    if label.takes("polygon") and any(has_mask(b) for b in boxes):
        return "polygon"
    return "rectangle" if label.takes("rectangle") else None


def _points(kind: CvatShapeType, box: TrackBox) -> list[float]:
    x1, y1, x2, y2 = (round(v, POINT_DECIMALS) for v in box.xyxy)
    parts = mask_to_polygons(box.mask, 0) if kind == "polygon" and box.mask is not None else []
    if parts:
        return [round(float(v), POINT_DECIMALS) for v in parts[0].outer_xy.reshape(-1)]
    if kind == "polygon":  # a keyframe of a polygon track the segmenter left empty: its box, as a polygon
        return [x1, y1, x2, y1, x2, y2, x1, y2]
    return [x1, y1, x2, y2]


def _xyxy(row: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in row)
    return x1, y1, x2, y2


def annotations_in_frames(annotations: CvatAnnotations, start: int, stop: int) -> CvatAnnotations:
    """The part of ``annotations`` on task frames ``start..stop`` (one job's), for a job-level write.

    Shapes outside are left out. A track keeps its keyframes inside; where it is visible as the range begins (a
    keyframe before it, not ``outside``) it gets a keyframe at ``start``, and where it moves on past the range, one at
    ``stop``, each interpolated as CVAT would between the keyframes around it, so the job shows what the task would.
    A track with nothing visible inside is left out; one cannot begin ``outside``.
    """
    part = empty_annotations()
    part["shapes"] = [copy.deepcopy(s) for s in annotations["shapes"] if start <= s["frame"] <= stop]
    for track in annotations["tracks"]:
        keys = sorted(track["shapes"], key=lambda k: k["frame"])
        inside = [copy.deepcopy(k) for k in keys if start <= k["frame"] <= stop]
        before = [k for k in keys if k["frame"] < start]
        after = [k for k in keys if k["frame"] > stop]
        if before and not before[-1]["outside"] and (not inside or inside[0]["frame"] > start):
            following = inside[0] if inside else (after[0] if after else None)
            inside.insert(0, _between(before[-1], following, start))
        if inside and after and not after[0]["outside"] and inside[-1]["frame"] < stop and not inside[-1]["outside"]:
            inside.append(_between(inside[-1], after[0], stop))
        while inside and inside[0]["outside"]:
            inside.pop(0)
        if inside:
            part["tracks"].append({**copy.deepcopy(track), "frame": inside[0]["frame"], "shapes": inside})
    return part


def _between(first: CvatTrackedShape, then: CvatTrackedShape | None, frame: int) -> CvatTrackedShape:
    """A visible keyframe at ``frame`` between two keyframes: rectangles (and polygons of as many points) move
    linearly, as CVAT interpolates them; towards an ``outside`` keyframe or none, the box stays where it was."""
    points = list(first["points"])
    if (
        then is not None
        and not then["outside"]
        and len(then["points"]) == len(points)
        and then["frame"] > first["frame"]
    ):
        t = (frame - first["frame"]) / (then["frame"] - first["frame"])
        points = [round(a + (b - a) * t, POINT_DECIMALS) for a, b in zip(points, then["points"], strict=True)]
    return {**copy.deepcopy(first), "frame": frame, "points": points, "outside": False}
