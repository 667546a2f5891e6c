"""Frame results -> COCO detection JSON (pure; loads in pycocotools)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import PurePath

from models.masks import Masks
from models.ops.boxes import xyxy_to_xywh
from models.types import ModelInfo
from service.convert.coco_types import CocoAnnotation, CocoDocument, CocoImage, CocoInfo, CocoMaskStyle, CocoRle
from service.convert.masks import mask_to_coco_rle, mask_to_polygons
from service.pipeline.frames import FrameInfo, FrameResult, MediaKind
from service.pipeline.tracks import NO_TRACK

_FRAME_MEDIA = (MediaKind.VIDEO, MediaKind.DICOM)


def frame_file_name(frame_index: int, extension: str = "jpg") -> str:
    """Name of a sampled frame's image file (the ``frames`` command writes these)."""
    return f"frame_{frame_index:06d}.{extension}"


def coco_file_name(info: FrameInfo, *, multi_slot: bool) -> str:
    """A unique, readable ``file_name``: the photo's own name, or ``item/frame_000123.jpg``.

    A photo whose item has another name (a job's item, or ``d1/img.jpg`` beside ``d2/img.jpg``) is
    ``item/img.jpg``: two items' photos may share a file name, their COCO entries must not.
    """
    prefix = f"{info.item}/{info.slot}/" if multi_slot else ""
    if info.media is MediaKind.IMAGE:
        name = PurePath(info.source).name
        if multi_slot or info.item == name:
            return prefix + name
        return info.item if info.item.endswith(f"/{name}") else f"{info.item}/{name}"
    if info.media is MediaKind.SEQUENCE:
        return (prefix or f"{info.item}/") + PurePath(info.source).name
    return (prefix or f"{info.item}/") + frame_file_name(info.frame_index)


def frame_results_to_coco(
    results: Iterable[FrameResult],
    *,
    class_names: Sequence[str],
    multi_slot_items: frozenset[str] = frozenset(),
    model: ModelInfo | None = None,
    masks: CocoMaskStyle = "rle",
) -> CocoDocument:
    """Build a COCO document: one ``images`` entry per image or sampled frame.

    Args:
        results: frame results in any order.
        class_names: the model's labels; category ids are ``class_id + 1``.
        multi_slot_items: items with several slots (their file names get the slot in them).
        model: provenance written to ``info``.
        masks: how a row's mask (``Detections.masks``) is written: ``"rle"``, a full-image COCO RLE; or
            ``"polygon"``, one flat ``[x1, y1, ...]`` list per connected part, corners on pixel corners (pycocotools
            rasterises them back to exactly the mask). COCO polygons cannot hold holes (pycocotools unions every
            list), so in polygon mode a mask with holes is written as RLE: nothing is lost.

    Returns:
        ``{"info", "images", "annotations", "categories"}``. Annotations carry ``bbox``
        (x, y, width, height in pixels), ``area``, ``category_id``, ``score`` and ``iscrowd`` 0.
        Frames of videos and multi-frame DICOM also carry ``frame_index``, ``timestamp_s`` and
        ``video`` (the source file's name); every image carries its ``item`` and ``slot``. Boxes in a track
        (``Detections.tracker_id``, filled by the tracker) carry ``track_id``, unique within the item (so
        ``(item, track_id)`` names a track). A row with a mask also carries ``segmentation``, and its ``area`` is
        the mask's pixel count (``bbox`` stays the detector's box); in a run that makes masks, a box the segmenter found
        nothing in gets its box as a polygon; runs without masks are written as before.
    """
    images: list[CocoImage] = []
    annotations: list[CocoAnnotation] = []
    for image_id, result in enumerate(results, start=1):
        info = result.info
        image: CocoImage = {
            "id": image_id,
            "file_name": coco_file_name(info, multi_slot=info.item in multi_slot_items),
            "width": info.width,
            "height": info.height,
            "item": info.item,
            "slot": info.slot,
        }
        if info.media in _FRAME_MEDIA or info.media is MediaKind.SEQUENCE:
            image["frame_index"] = info.frame_index
            image["timestamp_s"] = None if info.timestamp_s is None else round(info.timestamp_s, 6)
            image["video"] = PurePath(info.source).name if info.media in _FRAME_MEDIA else info.item
        images.append(image)
        dets = result.detections
        track_ids = [None] * len(dets) if dets.tracker_id is None else dets.tracker_id.tolist()
        masked = [False] * len(dets) if dets.masks is None else dets.masks.has_mask().tolist()
        for row, (xywh, score, class_id, track_id) in enumerate(
            zip(
                xyxy_to_xywh(dets.xyxy).tolist(),
                dets.confidence.tolist(),
                dets.class_id.tolist(),
                track_ids,
                strict=True,
            )
        ):
            annotation: CocoAnnotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": class_id + 1,
                "bbox": [round(v, 2) for v in xywh],
                "area": round(xywh[2] * xywh[3], 2),
                "score": round(score, 5),
                "iscrowd": 0,
            }
            if track_id is not None and track_id != NO_TRACK:
                annotation["track_id"] = track_id
            if dets.masks is not None and masked[row]:
                annotation["segmentation"] = coco_segmentation(dets.masks, row, info.height, info.width, masks)
                annotation["area"] = round(float(dets.masks[row : row + 1].area_px()[0]), 2)  # the mask's
            elif dets.masks is not None:
                # a run that makes masks, and none came for this box: its box as a polygon, so every annotation of
                # the file has a segmentation (pycocotools' segm evaluation fails on one without)
                annotation["segmentation"] = [_box_polygon(annotation["bbox"])]
            annotations.append(annotation)
    return {
        "info": _info(model),
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(class_names)],
    }


def coco_segmentation(
    masks: Masks, row: int, height_px: int, width_px: int, style: CocoMaskStyle
) -> CocoRle | list[list[float]]:
    """Row ``row``'s mask as COCO ``segmentation``: polygons (``style`` "polygon" and no holes) or a full-image RLE."""
    if style == "polygon":
        polygons = mask_to_polygons(masks, row)
        if polygons and not any(p.holes_xy for p in polygons):
            return [[round(float(v), 2) for v in p.outer_xy.ravel()] for p in polygons]
    rle = mask_to_coco_rle(masks, row, height_px, width_px)
    return {"size": [int(height_px), int(width_px)], "counts": str(rle["counts"])}


def _box_polygon(xywh: list[float]) -> list[float]:
    x, y, w, h = xywh
    return [x, y, round(x + w, 2), y, round(x + w, 2), round(y + h, 2), x, round(y + h, 2)]


def _info(model: ModelInfo | None) -> CocoInfo:
    info: CocoInfo = {"description": "preannotations by preannotate"}
    if model is not None:
        info["model"] = model.spec
        info["model_version"] = model.version
    return info
