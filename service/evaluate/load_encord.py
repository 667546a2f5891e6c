"""Encord label rows (``LabelRowV2.to_encord_dict()`` JSON) -> Dataset: normalised 0..1 geometry to pixels."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import cast

import numpy as np

from service.evaluate.exports import (
    EncordDataUnit,
    EncordFrameLabels,
    EncordLabelRow,
    EncordObject,
    EncordObjectAnswer,
    EncordOption,
)
from service.evaluate.geometry import (
    MAX_RASTER_PIXELS,
    encord_rle_to_coco_rle,
    mask_to_coco_rle,
    mask_utils,
    polygon_to_xyxy,
    rotated_box_to_polygon,
)
from service.evaluate.types import (
    CocoRle,
    Dataset,
    FormatError,
    Shape,
    ShapeKind,
    Unit,
    Units,
    frame_rate,
    normalise_item_key,
)

_FRAME_TYPES = frozenset({"video", "dicom", "nifti", "pdf", "scene"})
_STILL_TYPES = frozenset({"image", "img_group"})
_MAX_TAG_FRAMES = 1_000_000  # classification ranges are expanded per frame; refuse absurd ones


def _answer_text(answers: list[EncordOption] | str | None) -> str:
    """A classification's answer as text: option names joined (radio, checklist) or the text itself."""
    if isinstance(answers, list):
        return ",".join(sorted(str(a.get("name") or a.get("value") or a.get("featureHash")) for a in answers))
    return str(answers)


def _attributes(answer: EncordObjectAnswer | None) -> tuple[tuple[str, str], ...]:
    if not answer:
        return ()
    return tuple(
        sorted(
            (str(c.get("name") or c["featureHash"]), _answer_text(c.get("answers"))) for c in answer["classifications"]
        )
    )


@dataclass(frozen=True, slots=True)
class _Geometry:
    """An object entry's shape: rings in the frame's units, an RLE in pixels, and whether the rings fill even-odd
    (holes with no known frame size to cut them out on: ``Shape.even_odd``)."""

    kind: ShapeKind
    rings: tuple[tuple[float, ...], ...] = ()
    rle: CocoRle | None = None
    even_odd: bool = False


def _geometry(obj: EncordObject, width: float, height: float, *, known: bool) -> _Geometry | None:
    """The shape of an object entry, or None for shapes that are not scored. ``known``: ``width`` and ``height``
    are the frame's pixels, not the 100 x 100 percent units of a data unit without a size."""
    if "boundingBox" in obj:
        return _Geometry(ShapeKind.BOX)
    if "rotatableBoundingBox" in obj:
        b = obj["rotatableBoundingBox"]
        ring = rotated_box_to_polygon(
            b["x"] * width,
            b["y"] * height,
            b["w"] * width,
            b["h"] * height,
            float(b.get("theta", 0.0)),
            about_centre=True,
        )
        return _Geometry(ShapeKind.POLYGON, (ring,))
    if "polygons" in obj or "polygon" in obj:
        if obj.get("polygons"):  # 0.1.211: [[ring, hole, ...], ...] of flat normalised coordinates
            nested = [[_scaled(ring, width, height) for ring in polygon] for polygon in obj["polygons"]]
        else:  # older rows: {"0": {"x", "y"}, "1": ...}
            points = obj["polygon"]
            nested = [
                [_scaled([v for k in sorted(points, key=int) for v in (points[k]["x"], points[k]["y"])], width, height)]
            ]
        rings = tuple(ring for polygon in nested for ring in polygon)
        # Rings are unioned when rasterised: a polygon with holes is drawn here, holes cut out, on a known frame;
        # on an unknown one (percent units) its rings fill even-odd, so the holes stay holes (parts never overlap).
        if not any(len(polygon) > 1 for polygon in nested):
            return _Geometry(ShapeKind.POLYGON, rings)
        if known:
            return _Geometry(ShapeKind.POLYGON, rings, _holed_polygons_rle(nested, int(width), int(height)))
        return _Geometry(ShapeKind.POLYGON, rings, even_odd=True)
    if "bitmask" in obj and known:  # a frame-sized rleString: without the frame's size it cannot be read
        if width * height > MAX_RASTER_PIXELS:
            raise FormatError(f"object {obj.get('objectHash')}: a {width:.0f}x{height:.0f} bitmask is too large")
        rle = encord_rle_to_coco_rle(obj["bitmask"]["rleString"], int(width), int(height))
        return _Geometry(ShapeKind.MASK, rle=rle)
    return None


def _scaled(ring: list[float], width: float, height: float) -> tuple[float, ...]:
    return tuple(v * (width if i % 2 == 0 else height) for i, v in enumerate(ring))


def _holed_polygons_rle(polygons: list[list[tuple[float, ...]]], width: int, height: int) -> CocoRle | None:
    """The union of the polygons, each its outer ring less its holes, as a COCO RLE on the frame."""
    if width * height > MAX_RASTER_PIXELS:
        raise FormatError(f"a {width}x{height} polygon frame is too large")
    mu = mask_utils()
    mask = np.zeros((height, width), np.bool_)
    for polygon in polygons:
        drawn = [
            np.asarray(mu.decode(mu.frPyObjects([list(r)], height, width)[0]), np.bool_) for r in polygon if len(r) >= 6
        ]
        if drawn:
            mask |= drawn[0] & ~np.any(drawn[1:], axis=0) if len(drawn) > 1 else drawn[0]
    encoded = mask_to_coco_rle(mask)
    return None if encoded is None else encoded[0]


def _object_to_shape(
    obj: EncordObject, du: EncordDataUnit, unit: Unit, answers: dict[str, EncordObjectAnswer]
) -> Shape | None:
    """One object entry as a Shape in pixels of its data unit (``img_group`` images may differ in size)."""
    known = bool(du.get("width") and du.get("height"))
    # Without a pixel size, work in percent (0..100) so the shape can still be rescaled later.
    width, height = (float(du["width"]), float(du["height"])) if known else (100.0, 100.0)
    geometry = _geometry(obj, width, height, known=known)
    if geometry is None:
        unit.skip(str(obj.get("shape", "other")))
        return None
    kind, rings, rle = geometry.kind, geometry.rings, geometry.rle
    box_src: tuple[float, float, float, float] | None = None
    if kind is ShapeKind.BOX:
        b = obj["boundingBox"]
        box_src = (float(b["x"]), float(b["y"]), float(b["w"]), float(b["h"]))
        xyxy = (
            box_src[0] * width,
            box_src[1] * height,
            (box_src[0] + box_src[2]) * width,
            (box_src[1] + box_src[3]) * height,
        )
    elif rle is not None:
        x, y, w, h = (float(v) for v in mask_utils().toBbox({**rle, "counts": str(rle["counts"]).encode("ascii")}))
        xyxy = (x, y, x + w, y + h)
    else:
        xyxy = polygon_to_xyxy(rings)
    manual = obj.get("manualAnnotation", True)
    confidence = obj.get("confidence")
    object_hash = str(obj["objectHash"])
    return Shape(
        object_id=object_hash,
        label=str(obj.get("name") or obj.get("value") or obj["featureHash"]),
        xyxy=xyxy,
        kind=kind,
        # Human labels carry confidence 1.0 by default: that is no score, so only model output keeps one.
        score=float(confidence) if manual is False and isinstance(confidence, int | float) else None,
        polygons=rings,
        rle=rle,
        class_key=str(obj["featureHash"]),
        box_src=box_src,
        created_by=obj.get("createdBy"),
        attributes=_attributes(answers.get(object_hash)),
        even_odd=geometry.even_odd,
    )


def _unit_frames(du: EncordDataUnit, data_type: str) -> list[tuple[int, EncordFrameLabels]]:
    """(frame index, frame labels) of one data unit: frame 0 for an image, frame keys as stored for a video."""
    labels = du.get("labels") or {}
    # The data type says which of the two shapes ``labels`` has; nothing in the labels themselves does.
    if data_type in _STILL_TYPES:
        return [(0, cast(EncordFrameLabels, labels))]
    if data_type in _FRAME_TYPES:
        by_frame = cast(dict[str, EncordFrameLabels], labels)
        return [(int(frame), frame_labels) for frame, frame_labels in by_frame.items() if str(frame).isdigit()]
    raise FormatError(f"data_type {data_type!r} is not supported")


def _sequence(du: EncordDataUnit, position: int) -> int:
    """An image group's image number: its ``data_sequence`` (an int, or a string since 0.1.2xx), else its place."""
    value = du.get("data_sequence")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else position


def _add_tags(row: EncordLabelRow, units: dict[int, Unit], frames_by_hash: dict[str, set[int]]) -> None:
    """Classifications onto the units: a still's (an image's, or an image group's image's) as a tag on the
    whole slot (frame -1), like a Darwin or LS tag; a video's per frame. ``units`` maps a frame index (an
    image group's image number; 0 otherwise) to the unit it falls on."""
    still = row["data_type"] in _STILL_TYPES
    total = 0
    for hash_, answer in (row.get("classification_answers") or {}).items():
        frames = set(frames_by_hash.get(hash_, set()))
        for start, end in answer.get("range") or []:
            span = range(int(start), int(end) + 1)  # Encord ranges include their end
            total += len(span)
            if total > _MAX_TAG_FRAMES:  # checked before expanding: a range is two numbers, its frames are not
                raise FormatError(f"label row {row.get('label_hash')}: classification ranges cover too many frames")
            frames.update(span)
        for c in answer.get("classifications") or []:
            question, text = str(c.get("name") or c["featureHash"]), _answer_text(c.get("answers"))
            for f in frames or {0}:
                # An image group's classification is about the images its range covers; others' about slot 0.
                unit = units.get(f) if row["data_type"] == "img_group" else units[0]
                if unit is not None:
                    unit.tags.add((-1 if still else f, question, text))


def _row_units(row: EncordLabelRow) -> list[tuple[Unit, EncordDataUnit]]:
    """Each data unit with the unit it is scored as: an image group's images are slots ``"0"``, ``"1"``, ...
    by ``data_sequence``, as in Darwin and in our own converter (slot i is image i); any other row is one
    unit, slot ``"0"``, sized by its first data unit."""
    title = str(row.get("data_title") or "")
    data_hash = str(row.get("data_hash") or "")
    if not (title or data_hash):
        raise FormatError("a label row has neither data_title nor data_hash")
    group = row["data_type"] == "img_group"
    out: list[tuple[Unit, EncordDataUnit]] = []
    data_units: list[EncordDataUnit] = list(row["data_units"].values()) or [{}]
    for position, du in enumerate(data_units):
        if out and not group:
            out.append((out[0][0], du))
            continue
        sequence = _sequence(du, position) if group else 0
        unit = Unit(
            item=normalise_item_key(title) if title else data_hash,
            slot=str(sequence),
            title=title,
            item_id=data_hash or None,
            label_id=row.get("label_hash"),
            width=int(du["width"]) if du.get("width") else None,
            height=int(du["height"]) if du.get("height") else None,
            src_units=Units.NORM,
            fps=frame_rate(du.get("data_fps")),
            # The script reads frame 0 of the row, which in an image group is image 0 (get_annotation(0)).
            in_seed=sequence == 0,
        )
        unit.pixel_size_known = bool(unit.width and unit.height)
        out.append((unit, du))
    slots = [u.slot for u, _ in out]
    if group and len(set(slots)) != len(slots):
        raise FormatError(f"label row {row.get('label_hash')}: two images share a data_sequence")
    return sorted(out, key=lambda pair: int(pair[0].slot))


def _mark_tracks(unit: Unit) -> None:
    """An object on more than one frame of a video is a track, its objectHash the track id (one on a single
    frame is how ``run`` writes an untracked box)."""
    frames_of = Counter(object_id for shapes in unit.frames.values() for object_id in {s.object_id for s in shapes})
    for frame, shapes in unit.frames.items():
        unit.frames[frame] = [
            dataclasses.replace(s, track_id=s.object_id) if frames_of[s.object_id] > 1 else s for s in shapes
        ]


def encord_to_dataset(rows: list[EncordLabelRow], *, name: str, source: str) -> Dataset:
    """Encord label rows as a Dataset: one unit per data unit (slot ``"0"``; an image group's image i is
    slot ``"i"``, a one-frame unit each).

    Items are keyed by ``data_title`` (``data_hash`` when untitled) and also carry ``data_hash`` as their id,
    which is what Encord-to-Encord comparisons pair on, like the seed script. Every unit of a row keeps the
    row's object order (the SDK's instance order, which the seed CSV follows).
    """
    dataset = Dataset(name=name, source=source, format="encord")
    for row in rows:
        data_type = str(row["data_type"])
        if data_type not in _STILL_TYPES | _FRAME_TYPES:
            raise FormatError(f"label row {row.get('label_hash')}: data_type {data_type!r} is not supported")
        group = data_type == "img_group"
        answers = row.get("object_answers") or {}
        frames_by_hash: dict[str, set[int]] = {}
        row_order: dict[str, None] = {}
        pairs = _row_units(row)
        for unit, du in pairs:
            for frame, labels in _unit_frames(du, data_type):
                unit.frames.setdefault(frame, [])
                for obj in labels.get("objects") or []:
                    shape = _object_to_shape(obj, du, unit, answers)
                    if shape is not None:
                        unit.add(frame, shape)
                        row_order.setdefault(shape.object_id)
                # Rows before 0.1.2xx listed classifications per frame; an image group's frame is its image.
                for c in labels.get("classifications") or []:
                    frames_by_hash.setdefault(str(c.get("classificationHash")), set()).add(
                        int(unit.slot) if group else frame
                    )
        units = list({id(u): u for u, _ in pairs}.values())
        for unit in units:
            unit.object_order = list(row_order)
            if data_type in _FRAME_TYPES:
                _mark_tracks(unit)
        _add_tags(row, {int(u.slot): u for u in units}, frames_by_hash)
        dataset.units.extend(units)
    return dataset
