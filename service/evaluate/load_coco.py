"""COCO -> Dataset: a full COCO file (benchmark or candidate), or a results list scored against a COCO benchmark."""

from __future__ import annotations

from service.evaluate.exports import CocoAnnotation, CocoDocument, CocoImage
from service.evaluate.geometry import check_rle, polygon_to_xyxy
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


def _image_key(image: CocoImage) -> tuple[str, str, int]:
    """(item, slot, frame) of a COCO image: our own ``item``/``slot``/``frame_index`` fields when present
    (``preannotate run`` writes them), else the file name as a single-frame item."""
    if "item" in image:
        return normalise_item_key(str(image["item"])), str(image.get("slot", "0")), int(image.get("frame_index") or 0)
    name = image.get("file_name")
    if not isinstance(name, str) or not name:
        raise FormatError(f"images[id={image.get('id')}] has neither file_name nor item")
    return normalise_item_key(name), "0", 0


def _bbox_xyxy(ann: CocoAnnotation) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
        raise FormatError(f"annotation id={ann.get('id')}: bbox must be [x, y, width, height] numbers")
    x, y, w, h = (float(v) for v in bbox)
    return (x, y, x + w, y + h), (x, y, w, h)


def coco_annotation_to_shape(ann: CocoAnnotation, label: str) -> Shape:
    """One COCO annotation as a Shape: bbox always; polygons or RLE from ``segmentation`` when present."""
    seg = ann.get("segmentation")
    polygons: tuple[tuple[float, ...], ...] = ()
    rle: CocoRle | None = None
    kind = ShapeKind.BOX
    if isinstance(seg, list) and seg and all(isinstance(r, list) and len(r) >= 6 for r in seg):
        polygons = tuple(tuple(float(v) for v in ring) for ring in seg)
        kind = ShapeKind.POLYGON
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        rle = {"size": seg["size"], "counts": seg["counts"]}
        check_rle(rle)
        kind = ShapeKind.MASK
    if "bbox" in ann:
        xyxy, src = _bbox_xyxy(ann)
    elif polygons:
        xyxy = polygon_to_xyxy(polygons)
        src = (xyxy[0], xyxy[1], xyxy[2] - xyxy[0], xyxy[3] - xyxy[1])
    else:
        raise FormatError(f"annotation id={ann.get('id')}: no bbox")
    score = ann.get("score")
    return Shape(
        object_id=str(ann.get("track_id", ann.get("id", ""))),
        label=label,
        xyxy=xyxy,
        kind=kind,
        score=float(score) if isinstance(score, int | float) else None,
        polygons=polygons,
        rle=rle,
        class_key=label,
        box_src=src,
        crowd=bool(ann.get("iscrowd", 0)),
        track_id=_track_id(ann.get("track_id")),
    )


def _track_id(value: object) -> str | None:
    """``track_id`` (``run`` writes an integer; other tools may write a string) as text; None when absent."""
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        return None
    return str(value)


def _clock(images: list[CocoImage]) -> float | None:
    """The fps a video's frames count at, from ``preannotate run``'s ``frame_index`` and ``timestamp_s``
    (the latest frame's: the most digits), or None without them."""
    timed = [
        (int(im["frame_index"]), float(im["timestamp_s"]))
        for im in images
        if isinstance(im.get("frame_index"), int) and isinstance(im.get("timestamp_s"), int | float)
    ]
    index, seconds = max(timed, default=(0, 0.0))
    return frame_rate(index / seconds) if index > 0 and seconds > 0 else None


def coco_to_dataset(doc: CocoDocument, *, name: str, source: str) -> Dataset:
    """A full COCO dict (``images``, ``annotations``, ``categories``) as a Dataset.

    Every image is a listed frame, annotated or not. Images of one video (our ``item`` + ``frame_index``
    fields) become one unit with many frames; other images are single-frame items keyed by ``file_name``.
    """
    categories = {int(c["id"]): str(c.get("name", c["id"])) for c in doc.get("categories", [])}
    dataset = Dataset(name=name, source=source, format="coco", coco_categories=categories)
    info = doc.get("info")
    version = info.get("model_version") if isinstance(info, dict) else None
    dataset.model_version = version if isinstance(version, str) and version else None
    units: dict[tuple[str, str], Unit] = {}
    clocks: dict[tuple[str, str], list[CocoImage]] = {}
    for image in doc["images"]:
        item, slot, frame = _image_key(image)
        unit = units.get((item, slot))
        if unit is None:
            unit = units[(item, slot)] = Unit(
                item=item,
                slot=slot,
                title=item,
                item_id=None,
                width=int(image["width"]) if image.get("width") else None,
                height=int(image["height"]) if image.get("height") else None,
                src_units=Units.PX,
            )
        unit.frames.setdefault(frame, [])
        dataset.coco_images[int(image["id"])] = (item, slot, frame)
        clocks.setdefault((item, slot), []).append(image)
    for key, unit in units.items():
        unit.fps = _clock(clocks[key])
    dataset.units = list(units.values())
    add_coco_annotations(dataset, doc.get("annotations", []), categories)
    return dataset


def add_coco_annotations(dataset: Dataset, anns: list[CocoAnnotation], categories: dict[int, str]) -> None:
    """Attach COCO annotations (or results) to the dataset's units by ``image_id``."""
    by_key = {(u.item, u.slot): u for u in dataset.units}
    for ann in anns:
        if not isinstance(ann, dict):
            raise FormatError("every annotation must be an object")
        image_id = ann.get("image_id")
        if image_id not in dataset.coco_images:
            raise FormatError(f"annotation id={ann.get('id')}: image_id {image_id} is not in the benchmark's images")
        category = ann.get("category_id")
        if category not in categories:
            raise FormatError(f"annotation id={ann.get('id')}: unknown category_id {category}")
        item, slot, frame = dataset.coco_images[int(image_id)]
        by_key[(item, slot)].add(frame, coco_annotation_to_shape(ann, categories[int(category)]))


def coco_results_to_dataset(results: list[CocoAnnotation], benchmark: Dataset, *, name: str, source: str) -> Dataset:
    """A COCO results list (``image_id``, ``category_id``, ``bbox``, ``score``) against a COCO benchmark.

    The results use the benchmark's image ids and categories, so its units are copied (empty) first.
    """
    if benchmark.format != "coco":
        raise FormatError("a COCO results list needs a COCO benchmark (its image ids and categories)")
    dataset = Dataset(
        name=name,
        source=source,
        format="coco_results",
        coco_images=dict(benchmark.coco_images),
        coco_categories=dict(benchmark.coco_categories),
    )
    dataset.units = [
        Unit(
            item=u.item,
            slot=u.slot,
            title=u.title,
            width=u.width,
            height=u.height,
            fps=u.fps,
            frames={f: [] for f in u.frames},
        )
        for u in benchmark.units
    ]
    # Results carry no ids; number them so messages and the seed CSV can name each one.
    add_coco_annotations(dataset, [{"id": i + 1, **ann} for i, ann in enumerate(results)], benchmark.coco_categories)
    return dataset
