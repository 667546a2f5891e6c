"""Darwin JSON 2.0 -> Dataset: one unit per item slot; boxes and polygons in pixels; tags; video ``frames``."""

from __future__ import annotations

from typing import Any

from service.evaluate.geometry import polygon_to_xyxy
from service.evaluate.types import Dataset, FormatError, Shape, ShapeKind, Unit, Units, normalise_item_key

_UNSCORED = ("keypoint", "line", "ellipse", "cuboid", "skeleton", "mask", "raster_layer", "directional_vector")


def darwin_item_key(item: dict[str, Any]) -> str:
    """``path/name`` without the leading slash: what V7's importer matches items by (``/`` + name -> name)."""
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise FormatError("item.name is required")
    path = str(item.get("path") or "/").rstrip("/")
    return normalise_item_key(f"{path}/{name}")


def _paths_to_rings(polygon: dict[str, Any]) -> tuple[tuple[float, ...], ...]:
    """``{"paths": [[{x, y}, ...], ...]}`` (or legacy ``{"path": [...]}``) -> flat rings in pixels."""
    paths = polygon.get("paths")
    if paths is None and "path" in polygon:
        paths = [polygon["path"]]
    if not isinstance(paths, list):
        raise FormatError("polygon needs paths")
    return tuple(tuple(float(v) for p in path for v in (p["x"], p["y"])) for path in paths if path)


def _shape(ann: dict[str, Any], data: dict[str, Any], unit: Unit, object_id: str) -> Shape | None:
    """The scored shape in ``data`` (an annotation, or one of its video frames), or None if unscored."""
    inference = data.get("inference") or ann.get("inference") or {}
    score = inference.get("confidence") if isinstance(inference, dict) else None
    annotators = ann.get("annotators") or []
    created_by = annotators[0].get("email") if annotators and isinstance(annotators[0], dict) else None
    attributes = data.get("attributes", ann.get("attributes"))
    attrs = (("attributes", ",".join(sorted(map(str, attributes)))),) if isinstance(attributes, list) else ()
    box = data.get("bounding_box")
    polygons: tuple[tuple[float, ...], ...] = ()
    kind = ShapeKind.BOX
    if "polygon" in data:
        polygons = _paths_to_rings(data["polygon"])
        kind = ShapeKind.POLYGON
    if isinstance(box, dict):
        x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
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
        score=float(score) if isinstance(score, int | float) else None,
        polygons=polygons,
        class_key=str(ann["name"]),
        box_src=(x, y, w, h),
        created_by=created_by,
        attributes=attrs,
    )


def _units_of(doc: dict[str, Any]) -> dict[str, Unit]:
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
        units[name] = unit
    return units


def darwin_to_dataset(docs: list[dict[str, Any]], *, name: str, source: str) -> Dataset:
    """Darwin JSON 2.0 files (one item each) as a Dataset: one unit per slot.

    Annotations go to ``slot_names[0]``, or to the first slot when it is missing (V7's default). Video,
    DICOM and PDF annotations use their ``frames`` (keyframes as exported; nothing is interpolated).
    Tags without frames apply to the whole slot (frame -1).
    """
    dataset = Dataset(name=name, source=source, format="darwin")
    for doc in docs:
        if not str(doc.get("version", "")).startswith("2"):
            raise FormatError(f"item {doc.get('item', {}).get('name')!r}: only Darwin JSON 2.0 is supported")
        units = _units_of(doc)
        default_slot = next(iter(units))
        for position, ann in enumerate(doc.get("annotations") or []):
            if "name" not in ann:
                raise FormatError(f"item {doc['item'].get('name')!r}: an annotation has no name")
            slot_names = ann.get("slot_names") or [default_slot]
            unit = units.get(str(slot_names[0]))
            if unit is None:
                raise FormatError(f"item {doc['item'].get('name')!r}: annotation on unknown slot {slot_names[0]!r}")
            frames: dict[str, Any] = ann.get("frames") or {}
            if "tag" in ann or any("tag" in f for f in frames.values()):
                for frame in frames or {"-1": None}:
                    unit.tags.add((int(frame), str(ann["name"]), "true"))
                continue
            object_id = str(ann.get("id") or f"#{position}")  # import files may omit ids
            for frame_key, data in (frames or {"0": ann}).items():
                shape = _shape(ann, data, unit, object_id)
                if shape is not None:
                    unit.add(int(frame_key), shape)
        dataset.units.extend(units.values())
    return dataset
