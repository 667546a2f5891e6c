"""Label Studio JSON export -> Dataset(s): a task's annotations (human) or its predictions (per model version)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from service.evaluate.geometry import polygon_to_xyxy, rotated_box_to_polygon
from service.evaluate.tracks import FrameBudget, lerp
from service.evaluate.types import Dataset, FormatError, Shape, ShapeKind, Unit, Units, normalise_item_key

ANNOTATIONS = "annotations"
PREDICTIONS = "predictions"
_MEDIA_KEYS = ("image", "video", "url", "img", "audio")


def ls_url_to_item(url: str) -> str:
    """A task's media reference as an item key: ``/data/local-files/?d=a/b.jpg`` -> ``a/b.jpg``;
    ``https://host/a/b.jpg?sig=...`` -> ``a/b.jpg`` (hosts and signatures change, paths do not)."""
    parts = urlsplit(url)
    local = parse_qs(parts.query).get("d")
    if local:
        return normalise_item_key(local[0])
    return normalise_item_key(parts.path or url)


def _task_item(task: dict[str, Any]) -> str:
    data = task.get("data")
    if not isinstance(data, dict):
        raise FormatError(f"task {task.get('id')}: no data")
    to_names = [
        str(r.get("to_name"))
        for s in (*task.get(ANNOTATIONS, []), *task.get(PREDICTIONS, []))
        for r in s.get("result") or []
    ]
    for key in (*to_names, *_MEDIA_KEYS):
        if isinstance(data.get(key), str) and data[key]:
            return ls_url_to_item(data[key])
    value = next((v for v in data.values() if isinstance(v, str) and v), None)
    return ls_url_to_item(value) if value else f"task-{task.get('id')}"


def _label(value: dict[str, Any], type_: str) -> str:
    labels = value.get(type_) or value.get("labels") or []
    if not labels:
        raise FormatError(f"a {type_} region has no label")
    return str(labels[0])


def _rect_shape(rid: str, label: str, value: dict[str, Any], unit: Unit, score: float | None, by: str | None) -> Shape:
    """A percent rectangle as a Shape, in pixels when the unit's size is known; rotated ones as polygons."""
    sx, sy = _scale(unit)
    x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    rotation = float(value.get("rotation") or 0.0)
    common: dict[str, Any] = {"score": score, "class_key": label, "box_src": (x, y, w, h), "created_by": by}
    if rotation:
        # LS rotates about the top-left corner; score it as the polygon it is.
        ring = rotated_box_to_polygon(x * sx, y * sy, w * sx, h * sy, rotation, about_centre=False)
        return Shape(rid, label, polygon_to_xyxy([ring]), ShapeKind.POLYGON, polygons=(ring,), **common)
    return Shape(rid, label, (x * sx, y * sy, (x + w) * sx, (y + h) * sy), ShapeKind.BOX, **common)


def _scale(unit: Unit) -> tuple[float, float]:
    if unit.pixel_size_known and unit.width and unit.height:
        return unit.width / 100.0, unit.height / 100.0
    return 1.0, 1.0


def _between(a: dict[str, Any], b: dict[str, Any], t: float) -> dict[str, Any]:
    """A keyframe a fraction ``t`` of the way from ``a`` to ``b``: the editor interpolates every box prop."""
    return {
        **a,
        **{k: lerp(float(a[k]), float(b[k]), t) for k in ("x", "y", "width", "height")},
        "rotation": lerp(float(a.get("rotation") or 0.0), float(b.get("rotation") or 0.0), t),
    }


def sequence_to_frames(value: dict[str, Any], budget: FrameBudget) -> dict[int, dict[str, Any]]:
    """A ``videorectangle``'s box on every frame the editor shows it, by LS frame number (1-based).

    From an enabled keyframe the box is interpolated linearly up to the next keyframe; past the last one it
    is held to the end of the video (``framesCount``; with none known, only the keyframe itself). A keyframe
    with ``enabled: false`` is shown on its own frame and ends the span; a later keyframe starts a new one.
    ``enabled`` defaults to true, as in the editor.
    """
    keys = sorted(value.get("sequence") or [], key=lambda k: int(k["frame"]))
    count = value.get("framesCount")
    last_frame = int(count) if isinstance(count, int | float) and not isinstance(count, bool) else None
    frames: dict[int, dict[str, Any]] = {}
    for i, key in enumerate(keys):
        start = int(key["frame"])
        nxt = keys[i + 1] if i + 1 < len(keys) else None
        if key.get("enabled", True) is False:
            stop = start + 1
        elif nxt is not None:
            stop = int(nxt["frame"])  # the same frame twice: the later keyframe wins
        else:
            stop = max(start, last_frame or start) + 1
        budget.spend(stop - start)
        for frame in range(start, stop):
            frames[frame] = (
                key
                if frame == start or nxt is None
                else _between(key, nxt, (frame - start) / (int(nxt["frame"]) - start))
            )
    return frames


def _add_result(
    region: dict[str, Any], unit: Unit, score: float | None, created_by: str | None, position: int, budget: FrameBudget
) -> None:
    type_ = str(region.get("type", ""))
    value = region.get("value") or {}
    rid = str(region.get("id") or f"#{position}")  # ids are optional in imports; keep regions distinct
    region_score = region.get("score", score)
    score_ = float(region_score) if isinstance(region_score, int | float) else None
    if type_ == "choices" or type_ == "taxonomy":
        unit.tags.add((-1, str(region.get("from_name")), ",".join(sorted(map(str, value.get(type_, []))))))
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
    elif type_ == "videorectangle":
        label = _label(value, "labels")
        for frame, key in sequence_to_frames(value, budget).items():
            # LS frames are 1-based (frame N is decoder index N - 1).
            unit.add(frame - 1, _rect_shape(rid, label, key, unit, score_, created_by))
    else:
        unit.skip(type_ or "other")


def _size_of(results: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    for r in results:
        if r.get("original_width") and r.get("original_height"):
            return int(r["original_width"]), int(r["original_height"])
    return None, None


def _pick_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The ground-truth annotation if one is marked, else the first one not cancelled."""
    usable = [a for a in task.get(ANNOTATIONS) or [] if not a.get("was_cancelled")]
    return next((a for a in usable if a.get("ground_truth")), usable[0] if usable else None)


def _completed_by(annotation: dict[str, Any]) -> str | None:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("id"))
    return None if who is None else str(who)


def _task_unit(task: dict[str, Any], label_set: dict[str, Any], created_by: str | None, budget: FrameBudget) -> Unit:
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
    for position, region in enumerate(results):
        _add_result(region, unit, set_score, created_by, position, budget)
    return unit


def label_studio_to_datasets(
    tasks: list[dict[str, Any]], *, name: str, source: str, side: str, model_version: str | None = None
) -> list[Dataset]:
    """A Label Studio export as one Dataset per label source.

    Args:
        tasks: the export (``[{"id", "data", "annotations", "predictions"}, ...]``).
        name: the dataset's name; with several model versions each becomes ``name:version``.
        source: where it came from, for messages.
        side: ``annotations`` (one per task: the ground-truth one, else the first not cancelled) or
            ``predictions`` (one dataset per ``model_version``, or only ``model_version`` when given).
        model_version: keep only this model version's predictions.

    Returns:
        Datasets in order of first appearance; tasks without a usable label set are left out.
    """
    budget = FrameBudget()
    if side == ANNOTATIONS:
        dataset = Dataset(name=name, source=source, format="label_studio")
        for task in tasks:
            annotation = _pick_annotation(task)
            if annotation is not None:
                dataset.units.append(_task_unit(task, annotation, _completed_by(annotation), budget))
        return [dataset]
    by_version: dict[str, Dataset] = {}
    for task in tasks:
        for prediction in task.get(PREDICTIONS) or []:
            version = str(prediction.get("model_version") or "")
            if model_version is not None and version != model_version:
                continue
            dataset = by_version.setdefault(version, Dataset(name=name, source=source, format="label_studio"))
            dataset.units.append(_task_unit(task, prediction, None, budget))
    if model_version is not None and not by_version:
        raise FormatError(f"no predictions with model_version {model_version!r}")
    if len(by_version) > 1:
        for version, dataset in by_version.items():
            dataset.name = f"{name}:{version}"
    return list(by_version.values())
