"""Darwin JSON 2.0 -> Dataset: one unit per item slot; boxes, polygons and masks in pixels; tags; video ``frames``."""

from __future__ import annotations

from typing import Final, TypedDict

from service.evaluate.exports import (
    DarwinAnnotation,
    DarwinDocument,
    DarwinFrame,
    DarwinItem,
    DarwinPoint,
    DarwinPolygon,
    DarwinRasterLayer,
)
from service.evaluate.geometry import dense_rle_to_labels, mask_to_coco_rle, polygon_to_xyxy
from service.evaluate.tracks import FrameBudget, fill_between, lerp
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

_UNSCORED = ("keypoint", "line", "ellipse", "cuboid", "skeleton", "directional_vector")
RASTER: Final = "raster_layer"
MASK: Final = "mask"


def darwin_item_key(item: DarwinItem) -> str:
    """``path/name`` without the leading slash: what V7's importer matches items by (``/`` + name -> name)."""
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise FormatError("item.name is required")
    path = str(item.get("path") or "/").rstrip("/")
    return normalise_item_key(f"{path}/{name}")


def _paths(polygon: DarwinPolygon) -> list[list[DarwinPoint]]:
    """``{"paths": [[{x, y}, ...], ...]}`` (or legacy ``{"path": [...]}``) -> its paths."""
    paths = polygon.get("paths")
    if paths is None and "path" in polygon:
        paths = [polygon["path"]]
    if not isinstance(paths, list):
        raise FormatError("polygon needs paths")
    return paths


def _paths_to_rings(polygon: DarwinPolygon) -> tuple[tuple[float, ...], ...]:
    """A Darwin polygon -> flat rings in pixels."""
    return tuple(tuple(float(v) for p in path for v in (p["x"], p["y"])) for path in _paths(polygon) if path)


def _between(a: DarwinFrame, b: DarwinFrame, t: float) -> DarwinFrame:
    """Frame data a fraction ``t`` of the way from keyframe ``a`` to keyframe ``b``: the box linearly, a
    polygon point by point when both have the same points (else held), everything else as on ``a``."""
    out: DarwinFrame = {**a, "keyframe": False}
    box_a, box_b = a.get("bounding_box"), b.get("bounding_box")
    if isinstance(box_a, dict) and isinstance(box_b, dict):
        out["bounding_box"] = {
            "x": lerp(float(box_a["x"]), float(box_b["x"]), t),
            "y": lerp(float(box_a["y"]), float(box_b["y"]), t),
            "w": lerp(float(box_a["w"]), float(box_b["w"]), t),
            "h": lerp(float(box_a["h"]), float(box_b["h"]), t),
        }
    polygon_a, polygon_b = a.get("polygon"), b.get("polygon")
    if isinstance(polygon_a, dict) and isinstance(polygon_b, dict):
        paths_a, paths_b = _paths(polygon_a), _paths(polygon_b)
        if [len(p) for p in paths_a] == [len(p) for p in paths_b]:
            out["polygon"] = {
                "paths": [
                    [
                        {"x": lerp(float(p["x"]), float(q["x"]), t), "y": lerp(float(p["y"]), float(q["y"]), t)}
                        for p, q in zip(pa, pb, strict=True)
                    ]
                    for pa, pb in zip(paths_a, paths_b, strict=True)
                ]
            }
    return out


def _shown_frames(ann: DarwinAnnotation, budget: FrameBudget) -> list[int]:
    """Every frame V7 shows a video annotation on: its exported frames and each frame of its ``ranges``
    (``segments`` in import payloads), whose ends are exclusive (frames 7, 8, 9 are ``[[7, 10]]``)."""
    spans = [(int(start), int(end)) for start, end in ann.get("ranges") or ann.get("segments") or []]
    budget.spend(sum(max(0, end - start) for start, end in spans))  # a reversed span must not refund
    listed = {int(k) for k in ann.get("frames") or {}}
    return sorted(listed.union(*(range(start, end) for start, end in spans)))


def _track_frames(ann: DarwinAnnotation, budget: FrameBudget) -> dict[int, DarwinFrame]:
    """A video annotation's frame data on every frame it is shown on: exported frames as they are, frames
    between them interpolated when ``interpolated`` is true (V7's default for tracks), else the previous
    keyframe held, as V7 displays them."""
    frames = {int(k): v for k, v in ann["frames"].items()}
    knots = {f: d for f, d in frames.items() if "bounding_box" in d or "polygon" in d}
    gaps = [f for f in _shown_frames(ann, budget) if f not in frames]
    filled = fill_between(knots, gaps, _between if ann.get("interpolated") is True else None)
    return dict(sorted({**frames, **filled}.items()))


def _video_track_id(ann: DarwinAnnotation, object_id: str, frames_shown: int) -> str | None:
    """A video annotation's id as its track id when it is one: interpolated (V7's tracks) or shown on more
    than one frame; None for a still's annotation or a one-frame video detection (``run`` untracked)."""
    if ann.get("frames") and (ann.get("interpolated") is True or frames_shown > 1):
        return object_id
    return None


def _shape(
    ann: DarwinAnnotation, data: DarwinFrame, unit: Unit, object_id: str, track_id: str | None = None
) -> Shape | None:
    """The scored shape in ``data`` (an annotation, or one of its video frames), or None if unscored."""
    box = data.get("bounding_box")
    polygons: tuple[tuple[float, ...], ...] = ()
    kind = ShapeKind.BOX
    if "polygon" in data:
        polygons = _paths_to_rings(data["polygon"])
        kind = ShapeKind.POLYGON
    if isinstance(box, dict):
        x, y, w, h = float(box["x"]), float(box["y"]), float(box["w"]), float(box["h"])
    elif polygons:
        x1, y1, x2, y2 = polygon_to_xyxy(polygons)
        x, y, w, h = x1, y1, x2 - x1, y2 - y1
    else:
        unit.skip(next((k for k in _UNSCORED if k in data), "other"))
        return None
    return Shape(
        object_id=object_id,
        label=str(ann["name"]),
        xyxy=(x, y, x + w, y + h),
        kind=kind,
        polygons=polygons,
        class_key=str(ann["name"]),
        box_src=(x, y, w, h),
        even_odd=True,  # V7 fills a polygon's paths even-odd: the paths after the first may be holes
        track_id=track_id,
        **_provenance(ann, data),
    )


class _Provenance(TypedDict):
    """The Shape fields an annotation's (or video frame's) provenance gives."""

    score: float | None
    created_by: str | None
    attributes: tuple[tuple[str, str], ...]


def _provenance(ann: DarwinAnnotation, data: DarwinFrame) -> _Provenance:
    """Score, creator and attributes of an annotation (or of one of its video frames), as Shape fields."""
    inference = data.get("inference") or ann.get("inference") or {}
    score = inference.get("confidence") if isinstance(inference, dict) else None
    annotators = ann.get("annotators") or []
    attributes = data.get("attributes", ann.get("attributes"))
    return {
        "score": float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None,
        "created_by": annotators[0].get("email") if annotators and isinstance(annotators[0], dict) else None,
        "attributes": (("attributes", ",".join(sorted(map(str, attributes)))),) if isinstance(attributes, list) else (),
    }


def _has(ann: DarwinAnnotation, key: str) -> bool:
    """Whether the annotation, or any of its video frames, holds ``key`` (``mask``, ``raster_layer``, ...)."""
    return key in ann or any(isinstance(f, dict) and key in f for f in (ann.get("frames") or {}).values())


def _layers(ann: DarwinAnnotation) -> dict[int, DarwinRasterLayer]:
    """A ``raster_layer`` annotation's layer per frame (frame 0 for a still)."""
    if RASTER in ann:
        return {0: ann[RASTER]}
    return {int(f): d[RASTER] for f, d in (ann.get("frames") or {}).items() if RASTER in d}


def _add_masks(unit: Unit, masks: list[tuple[str, DarwinAnnotation]], layers: dict[int, DarwinRasterLayer]) -> None:
    """Each ``mask`` annotation as the pixels of the slot's raster layer holding its value, on every frame the
    layer gives it pixels (V7 keeps one raster layer per slot, per frame on video: ``dense_rle`` runs over
    ``mask_annotation_ids_mapping`` values, 0 for none). A mask with no pixels anywhere, or on a slot of
    unknown size, is counted as a skipped ``mask``: it can match nothing."""
    shown: set[str] = set()
    width, height = unit.width or 0, unit.height or 0
    for frame, layer in sorted(layers.items()) if width and height else ():
        mapping = layer.get("mask_annotation_ids_mapping") or {}
        values = dense_rle_to_labels(layer.get("dense_rle"), width, height)
        for object_id, ann in masks:
            value = mapping.get(object_id)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                continue
            encoded = mask_to_coco_rle(values == value)
            if encoded is None:
                continue
            rle, (x1, y1, x2, y2) = encoded
            data = (ann.get("frames") or {}).get(str(frame)) or ann
            shape = Shape(
                object_id=object_id,
                label=str(ann["name"]),
                xyxy=(x1, y1, x2, y2),
                kind=ShapeKind.MASK,
                rle=rle,
                class_key=str(ann["name"]),
                box_src=(x1, y1, x2 - x1, y2 - y1),
                track_id=_video_track_id(ann, object_id, len(ann.get("frames") or {})),
                **_provenance(ann, data),
            )
            unit.add(frame, shape)
            shown.add(object_id)
    for object_id, _ in masks:
        if object_id not in shown:
            unit.skip(MASK)


def _units_of(doc: DarwinDocument) -> dict[str, Unit]:
    item = doc["item"]
    key = darwin_item_key(item)
    item_id = (item.get("source_info") or {}).get("item_id")
    units: dict[str, Unit] = {}
    for slot in item.get("slots") or [{"slot_name": "0", "type": "image"}]:
        name = str(slot["slot_name"])
        unit = Unit(
            item=key,
            slot=name,
            title=str(item["name"]),
            item_id=str(item_id) if item_id else None,
            width=int(slot["width"]) if slot.get("width") else None,
            height=int(slot["height"]) if slot.get("height") else None,
            src_units=Units.PX,
        )
        if slot.get("type", "image") == "image":
            unit.frames[0] = []  # a still is always looked at, annotated or not
        if slot.get("type") == "video":
            unit.fps = frame_rate(slot.get("fps"))  # V7 counts a video's frames at it; "native" names no number
        units[name] = unit
    return units


def darwin_to_dataset(docs: list[DarwinDocument], *, name: str, source: str) -> Dataset:
    """Darwin JSON 2.0 files (one item each) as a Dataset: one unit per slot.

    Annotations go to ``slot_names[0]``, or to the first slot when it is missing (V7's default). ``mask``
    annotations are scored by mask IoU on the pixels the slot's ``raster_layer`` gives them. Video,
    DICOM and PDF annotations cover their ``frames`` and every frame of their ``ranges``, filled in from
    the keyframes as V7 shows them (see ``_track_frames``); frame keys are 0-based frame indices.
    Tags without frames apply to the whole slot (frame -1).
    """
    dataset = Dataset(name=name, source=source, format="darwin")
    budget = FrameBudget()
    for doc in docs:
        if not str(doc.get("version", "")).startswith("2"):
            raise FormatError(f"item {doc.get('item', {}).get('name')!r}: only Darwin JSON 2.0 is supported")
        units = _units_of(doc)
        default_slot = next(iter(units))
        layers: dict[str, dict[int, DarwinRasterLayer]] = {}
        masks: dict[str, list[tuple[str, DarwinAnnotation]]] = {}
        for position, ann in enumerate(doc.get("annotations") or []):
            if "name" not in ann:
                raise FormatError(f"item {doc['item'].get('name')!r}: an annotation has no name")
            slot_names = ann.get("slot_names") or [default_slot]
            unit = units.get(str(slot_names[0]))
            if unit is None:
                raise FormatError(f"item {doc['item'].get('name')!r}: annotation on unknown slot {slot_names[0]!r}")
            frames = ann.get("frames") or {}
            if "tag" in ann or any("tag" in f for f in frames.values()):
                for frame in _shown_frames(ann, budget) if frames else [-1]:
                    unit.tags.add((frame, str(ann["name"]), "true"))
                continue
            object_id = str(ann.get("id") or f"#{position}")  # import files may omit ids
            if frames:  # the frames the file lists; the loader fills in those between them
                unit.keyframes = (unit.keyframes or set()) | {int(k) for k in frames}
            if _has(ann, RASTER):
                layers.setdefault(unit.slot, {}).update(_layers(ann))
                continue
            if _has(ann, MASK):  # its pixels are in the slot's raster layer, read once all are known
                masks.setdefault(unit.slot, []).append((object_id, ann))
                continue
            shown = _track_frames(ann, budget) if frames else {0: ann}
            track_id = _video_track_id(ann, object_id, len(shown))
            for frame, data in shown.items():
                shape = _shape(ann, data, unit, object_id, track_id)
                if shape is not None:
                    unit.add(frame, shape)
        for slot, slot_masks in masks.items():
            _add_masks(units[slot], slot_masks, layers.get(slot, {}))
        dataset.units.extend(units.values())
    dataset.model_version = _model_version(docs)
    return dataset


def _model_version(docs: list[DarwinDocument]) -> str | None:
    """The version in the one ``inference.model.name`` the files carry (ours: ``SPEC@VERSION``); None when
    they carry none or several."""
    names: set[str] = set()
    for doc in docs:
        for ann in doc.get("annotations") or []:
            for part in (ann, *(ann.get("frames") or {}).values()):
                inference = part.get("inference")
                model = inference.get("model") if isinstance(inference, dict) else None
                name = model.get("name") if isinstance(model, dict) else None
                if isinstance(name, str) and name:
                    names.add(name.rpartition("@")[2])
    return names.pop() if len(names) == 1 else None
