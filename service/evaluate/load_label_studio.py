"""Label Studio JSON export -> Dataset(s): a task's annotations (human) or its predictions (per model version).

Video frames: LS counts a video's frames at its project's ``<Video framerate>`` (a number, or ``$key`` read
from the task's data; 24 when missing), not at the file's rate, and shows LS frame N from (N - 1) / fps on.
A ``videorectangle`` is therefore a track in time. Its frames are keyed N - 1 at that rate (``Unit.fps``),
and when the other side of a comparison knows its own rate, pairing re-samples the track at the times of
that side's frames (``Unit.retime``): a 30 fps file labelled in a 24 fps project is scored frame by frame
of the file. The rate is known from the labeling config given with the export, else from the task data's
``fps`` (the key label_studio.md §5 and our own default config use). With neither, LS frame N is taken to
be source frame N - 1, as before: the project is assumed to play at the file's rate.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TypedDict
from urllib.parse import parse_qs, urlsplit

from pydantic import JsonValue

from service.convert.label_studio import LabelConfig, LsObject, ls_frame_rate, ls_number
from service.evaluate.exports import LsBox, LsKeyframe, LsLabelSet, LsLabelsKey, LsRegion, LsTask, LsValue
from service.evaluate.geometry import ls_brush_rle_to_mask, mask_to_coco_rle, polygon_to_xyxy, rotated_box_to_polygon
from service.evaluate.tracks import FrameBudget, lerp
from service.evaluate.types import (
    Dataset,
    FormatError,
    Shape,
    ShapeKind,
    Unit,
    Units,
    frame_rate,
    normalise_item_key,
)

ANNOTATIONS = "annotations"
PREDICTIONS = "predictions"
_MEDIA_KEYS = ("image", "video", "url", "img", "audio")
FPS_KEY = "fps"
"""The task data key read for a video's frame rate when no labeling config is given."""
_FRAME_TOLERANCE = 1e-3
"""Of an LS frame: a time this close before a frame's start is on that frame (float error, not motion)."""


def ls_url_to_item(url: str) -> str:
    """A task's media reference as an item key: ``/data/local-files/?d=a/b.jpg`` -> ``a/b.jpg``;
    ``https://host/a/b.jpg?sig=...`` -> ``a/b.jpg`` (hosts and signatures change, paths do not)."""
    parts = urlsplit(url)
    local = parse_qs(parts.query).get("d")
    if local:
        return normalise_item_key(local[0])
    return normalise_item_key(parts.path or url)


def _task_item(task: LsTask) -> str:
    data = task.get("data")
    if not isinstance(data, dict):
        raise FormatError(f"task {task.get('id')}: no data")
    to_names = [
        str(r.get("to_name"))
        for s in (*task.get("annotations", []), *task.get("predictions", []))
        for r in s.get("result") or []
    ]
    for key in (*to_names, *_MEDIA_KEYS):
        media = data.get(key)
        if isinstance(media, str) and media:
            return ls_url_to_item(media)
    value = next((v for v in data.values() if isinstance(v, str) and v), None)
    return ls_url_to_item(value) if value else f"task-{task.get('id')}"


_LABEL_KEYS: dict[str, LsLabelsKey] = {k: k for k in ("rectanglelabels", "polygonlabels", "brushlabels")}
"""Region types whose labels are under their own key; others' (``rectangle``, ``videorectangle``) under ``labels``."""


def _label(value: LsValue, type_: str) -> str:
    labels = value.get(_LABEL_KEYS.get(type_, "labels")) or value.get("labels") or []
    if not labels:
        raise FormatError(f"a {type_} region has no label")
    return str(labels[0])


class _Common(TypedDict):
    """The Shape fields a rectangle has whether or not it is rotated."""

    score: float | None
    class_key: str
    box_src: tuple[float, float, float, float]
    created_by: str | None
    track_id: str | None


def _rect_shape(
    rid: str,
    label: str,
    value: LsBox,
    unit: Unit,
    score: float | None,
    by: str | None,
    track_id: str | None = None,
) -> Shape:
    """A percent rectangle as a Shape, in pixels when the unit's size is known; rotated ones as polygons."""
    sx, sy = _scale(unit)
    x, y, w, h = float(value["x"]), float(value["y"]), float(value["width"]), float(value["height"])
    rotation = float(value.get("rotation") or 0.0)
    common: _Common = {
        "score": score,
        "class_key": label,
        "box_src": (x, y, w, h),
        "created_by": by,
        "track_id": track_id,
    }
    if rotation:
        # LS rotates about the top-left corner; score it as the polygon it is.
        ring = rotated_box_to_polygon(x * sx, y * sy, w * sx, h * sy, rotation, about_centre=False)
        return Shape(rid, label, polygon_to_xyxy([ring]), ShapeKind.POLYGON, polygons=(ring,), **common)
    return Shape(rid, label, (x * sx, y * sy, (x + w) * sx, (y + h) * sy), ShapeKind.BOX, **common)


def _scale(unit: Unit) -> tuple[float, float]:
    if unit.pixel_size_known and unit.width and unit.height:
        return unit.width / 100.0, unit.height / 100.0
    return 1.0, 1.0


def _between(a: LsKeyframe, b: LsKeyframe, t: float) -> LsKeyframe:
    """A keyframe a fraction ``t`` of the way from ``a`` to ``b``: the editor interpolates every box prop."""
    return {
        **a,
        "x": lerp(float(a["x"]), float(b["x"]), t),
        "y": lerp(float(a["y"]), float(b["y"]), t),
        "width": lerp(float(a["width"]), float(b["width"]), t),
        "height": lerp(float(a["height"]), float(b["height"]), t),
        "rotation": lerp(float(a.get("rotation") or 0.0), float(b.get("rotation") or 0.0), t),
    }


@dataclass(frozen=True, slots=True)
class _Piece:
    """LS frames [start, stop) of a track: ``key`` moving linearly to ``towards`` (reached on its own frame,
    ``stop``), or held when ``towards`` is None."""

    start: int
    stop: int
    key: LsKeyframe
    towards: LsKeyframe | None

    def at(self, position: float) -> LsKeyframe:
        """The keyframe at an LS frame position, fractional between frames (a time between their starts)."""
        if self.towards is None or position == self.start:
            return self.key
        return _between(self.key, self.towards, (position - self.start) / (self.stop - self.start))


def sequence_to_pieces(value: LsValue) -> list[_Piece]:
    """A ``videorectangle``'s spans, as the editor shows them (LS frame numbers, 1-based).

    From an enabled keyframe the box is interpolated linearly up to the next keyframe; past the last one it
    is held to the end of the video (``framesCount``; with none known, only the keyframe itself). A keyframe
    with ``enabled: false`` is shown on its own frame and ends the span; a later keyframe starts a new one.
    ``enabled`` defaults to true, as in the editor. Where two pieces cover a frame, the later one wins.
    """
    keys = sorted(value.get("sequence") or [], key=lambda k: int(k["frame"]))
    count = value.get("framesCount")
    last_frame = int(count) if isinstance(count, int | float) and not isinstance(count, bool) else None
    pieces: list[_Piece] = []
    for i, key in enumerate(keys):
        start = int(key["frame"])
        nxt = keys[i + 1] if i + 1 < len(keys) else None
        if key.get("enabled", True) is False:
            pieces.append(_Piece(start, start + 1, key, None))
        elif nxt is not None:  # the same frame twice: an empty piece, the later keyframe wins
            pieces.append(_Piece(start, int(nxt["frame"]), key, nxt))
        else:
            pieces.append(_Piece(start, max(start, last_frame or start) + 1, key, None))
    return pieces


def sequence_to_frames(value: LsValue, budget: FrameBudget) -> dict[int, LsKeyframe]:
    """A ``videorectangle``'s box on every frame the editor shows it, by LS frame number (1-based); see
    ``sequence_to_pieces``."""
    return _pieces_to_frames(sequence_to_pieces(value), budget)


def _pieces_to_frames(pieces: list[_Piece], budget: FrameBudget) -> dict[int, LsKeyframe]:
    frames: dict[int, LsKeyframe] = {}
    for piece in pieces:
        budget.spend(piece.stop - piece.start)  # spent before expanding: a keyframe is two numbers
        for frame in range(piece.start, piece.stop):
            frames[frame] = piece.at(frame)
    return frames


def pieces_at_rate(pieces: list[_Piece], fps_ls: float, fps: float, budget: FrameBudget) -> dict[int, LsKeyframe]:
    """A track's box on every frame of a video counted at ``fps`` (0-based) whose time the track covers.

    Frame k starts at k / fps, which is LS position k * fps_ls / fps + 1 (LS frame N runs from
    (N - 1) / fps_ls): the box there is the editor's interpolation at that time, so keyframes placed at the
    same time as a source frame give that frame exactly, and frames LS never stops on are interpolated.
    """
    ratio = fps / fps_ls
    frames: dict[int, LsKeyframe] = {}
    for piece in pieces:
        first = max(0, math.ceil((piece.start - 1 - _FRAME_TOLERANCE) * ratio))
        stop = math.ceil((piece.stop - 1 - _FRAME_TOLERANCE) * ratio)
        budget.spend(stop - first)
        for frame in range(first, stop):
            frames[frame] = piece.at(max(float(piece.start), frame / ratio + 1))
    return frames


@dataclass(frozen=True, slots=True)
class _Track:
    """A ``videorectangle`` region, kept for re-sampling at another frame rate."""

    rid: str
    label: str
    pieces: list[_Piece]
    score: float | None
    created_by: str | None

    @property
    def track_id(self) -> str | None:
        """The region id, when the region spans more than one frame (a one-frame region is how ``run``
        writes an untracked video detection)."""
        return self.rid if sum(piece.stop - piece.start for piece in self.pieces) > 1 else None


def _retime(
    unit: Unit, fps_ls: float, tracks: list[_Track], still: dict[int, list[Shape]], fps: float
) -> dict[int, list[Shape]]:
    """``unit``'s frames with its tracks sampled at the frames of ``fps`` (``Unit.retime``)."""
    frames = {f: list(shapes) for f, shapes in still.items()}
    budget = FrameBudget()
    for track in tracks:
        for frame, key in pieces_at_rate(track.pieces, fps_ls, fps, budget).items():
            frames.setdefault(frame, []).append(
                _rect_shape(track.rid, track.label, key, unit, track.score, track.created_by, track.track_id)
            )
    return frames


def video_frame_rate(task_data: dict[str, JsonValue], to_name: str, config: LabelConfig | None) -> float | None:
    """The rate LS counts a task's video frames at, or None when nothing says.

    With the labeling config, LS's own rule (``ls_frame_rate``: the ``framerate`` literal or ``$key`` of
    the task data, else 24). Without it (or when it has no video ``to_name``), the task data's ``fps`` when
    that is a positive number, read as LS reads ``framerate="$fps"``.
    """
    video = config.object(to_name) if config is not None else None
    if video is not None and video.kind == "video":
        return frame_rate(ls_frame_rate(video, task_data))
    number = ls_number(task_data.get(FPS_KEY))
    if number is None or number <= 0:
        return None  # not LS's 24: without a config, a missing or bad fps says nothing
    return frame_rate(ls_frame_rate(LsObject(to_name, "video", None, "$" + FPS_KEY), task_data))


def _brush_shape(rid: str, region: LsRegion, score: float | None, by: str | None) -> Shape | None:
    """A ``brushlabels`` region (``format: "rle"``, on its ``original_width`` x ``original_height`` image) as
    a mask; None when it cannot be decoded to any pixel (no size, another format, nothing painted)."""
    value = region.get("value") or {}
    width, height = region.get("original_width"), region.get("original_height")
    if value.get("format", "rle") != "rle" or "rle" not in value or not (isinstance(width, int) and width > 0):
        return None
    if not (isinstance(height, int) and height > 0):
        return None
    encoded = mask_to_coco_rle(ls_brush_rle_to_mask(value["rle"], width, height))
    if encoded is None:
        return None
    rle, xyxy = encoded  # in pixels: the unit has a pixel size, this region's at least (``_size_of``)
    label = _label(value, "brushlabels")
    return Shape(rid, label, xyxy, ShapeKind.MASK, score, rle=rle, class_key=label, created_by=by)


def _add_result(
    region: LsRegion, unit: Unit, score: float | None, created_by: str | None, position: int
) -> _Track | None:
    """Put one region on the unit (a video track is returned instead, to be placed by the caller)."""
    type_ = str(region.get("type", ""))
    value = region.get("value") or {}
    rid = str(region.get("id") or f"#{position}")  # ids are optional in imports; keep regions distinct
    region_score = region.get("score", score)
    score_ = float(region_score) if isinstance(region_score, int | float) else None
    if type_ == "choices" or type_ == "taxonomy":
        chosen = value.get("choices", []) if type_ == "choices" else value.get("taxonomy", [])
        unit.tags.add((-1, str(region.get("from_name")), ",".join(sorted(map(str, chosen)))))
    elif type_ in ("rectanglelabels", "rectangle"):
        unit.add(0, _rect_shape(rid, _label(value, type_), value, unit, score_, created_by))
    elif type_ in ("polygonlabels", "polygon"):
        sx, sy = _scale(unit)
        ring = tuple(v for x, y in value["points"] for v in (float(x) * sx, float(y) * sy))
        label = _label(value, type_)
        shape = Shape(
            rid,
            label,
            polygon_to_xyxy([ring]),
            ShapeKind.POLYGON,
            score_,
            (ring,),
            class_key=label,
            created_by=created_by,
        )
        unit.add(0, shape)
    elif type_ in ("brushlabels", "brush"):
        brush = _brush_shape(rid, region, score_, created_by)
        if brush is None:
            unit.skip(type_)
        else:
            unit.add(0, brush)
    elif type_ == "videorectangle":
        return _Track(rid, _label(value, "labels"), sequence_to_pieces(value), score_, created_by)
    else:
        unit.skip(type_ or "other")
    return None


def _size_of(results: list[LsRegion]) -> tuple[int | None, int | None]:
    for r in results:
        if r.get("original_width") and r.get("original_height"):
            return int(r["original_width"]), int(r["original_height"])
    return None, None


def _pick_annotation(task: LsTask) -> LsLabelSet | None:
    """The ground-truth annotation if one is marked, else the first one not cancelled."""
    usable = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    return next((a for a in usable if a.get("ground_truth")), usable[0] if usable else None)


def _completed_by(annotation: LsLabelSet) -> str | None:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id"))
    return None if who is None else str(who)


def _task_unit(
    task: LsTask,
    label_set: LsLabelSet,
    created_by: str | None,
    budget: FrameBudget,
    config: LabelConfig | None,
) -> Unit:
    results = label_set.get("result") or []
    width, height = _size_of(results)
    item = _task_item(task)
    unit = Unit(
        item=item,
        title=item,
        item_id=str(task.get("id")) if task.get("id") is not None else None,
        label_id=str(label_set.get("id")) if label_set.get("id") is not None else None,
        width=width,
        height=height,
        src_units=Units.PCT,
        pixel_size_known=width is not None,
    )
    if not any(r.get("type") == "videorectangle" for r in results):
        unit.frames[0] = []
    score = label_set.get("score")
    set_score = float(score) if isinstance(score, int | float) else None
    tracks: list[tuple[_Track, str]] = []
    for position, region in enumerate(results):
        track = _add_result(region, unit, set_score, created_by, position)
        if track is not None:
            tracks.append((track, str(region.get("to_name"))))
    if not tracks:
        return unit
    still = {f: list(shapes) for f, shapes in unit.frames.items()}
    unit.keyframes = set(still) | {piece.start - 1 for track, _ in tracks for piece in track.pieces}
    for track, _ in tracks:
        for frame, key in _pieces_to_frames(track.pieces, budget).items():
            # LS frame N is the decoder's frame N - 1 when the project plays at the file's rate.
            shape = _rect_shape(track.rid, track.label, key, unit, track.score, track.created_by, track.track_id)
            unit.add(frame - 1, shape)
    data = task.get("data")
    data = data if isinstance(data, dict) else {}
    rates = {video_frame_rate(data, to_name, config) for _, to_name in tracks}
    fps = rates.pop() if len(rates) == 1 else None  # one video per task; two rates would be two clocks
    if fps is not None:
        unit.fps = fps
        unit.retime = functools.partial(_retime, unit, fps, [t for t, _ in tracks], still)
    return unit


def label_studio_to_datasets(
    tasks: list[LsTask],
    *,
    name: str,
    source: str,
    side: str,
    model_version: str | None = None,
    label_config: LabelConfig | None = None,
) -> list[Dataset]:
    """A Label Studio export as one Dataset per label source.

    Args:
        tasks: the export (``[{"id", "data", "annotations", "predictions"}, ...]``).
        name: the dataset's name; with several model versions each becomes ``name:version``.
        source: where it came from, for messages.
        side: ``annotations`` (one per task: the ground-truth one, else the first not cancelled) or
            ``predictions`` (one dataset per ``model_version``, or only ``model_version`` when given).
        model_version: keep only this model version's predictions.
        label_config: the project's labeling config, for the rate LS counts video frames at (see the module
            docstring); None when not given.

    Returns:
        Datasets in order of first appearance; tasks without a usable label set are left out.
    """
    budget = FrameBudget()
    if side == ANNOTATIONS:
        dataset = Dataset(name=name, source=source, format="label_studio")
        for task in tasks:
            annotation = _pick_annotation(task)
            if annotation is not None:
                dataset.units.append(_task_unit(task, annotation, _completed_by(annotation), budget, label_config))
        return [dataset]
    by_version: dict[str, Dataset] = {}
    for task in tasks:
        for prediction in task.get("predictions") or []:
            version = str(prediction.get("model_version") or "")
            if model_version is not None and version != model_version:
                continue
            dataset = by_version.setdefault(
                version, Dataset(name=name, source=source, format="label_studio", model_version=version or None)
            )
            dataset.units.append(_task_unit(task, prediction, None, budget, label_config))
    if model_version is not None and not by_version:
        raise FormatError(f"no predictions with model_version {model_version!r}")
    if len(by_version) > 1:
        for version, dataset in by_version.items():
            dataset.name = f"{name}:{version}"
    return list(by_version.values())
