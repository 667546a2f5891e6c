"""One item's predictions -> V7 Darwin JSON 2.0 (pure, no I/O).

Follows docs ``darwin_v2.md``: every slot is listed; boxes are absolute pixels of their slot's media;
model output carries an ``inference`` sub-annotation. Image slots get one ``bounding_box`` annotation
per detection. Video, DICOM and sequence slots get video-style annotations (``frames`` keyed by the
0-based source frame index, ``ranges`` with an exclusive end): one per track, or one single-frame
annotation per detection when the slot is untracked (``Detections.tracker_id`` None). An image sequence
is a ``video`` slot in Darwin (V7 shows an ordered image list as a video; ``frame_index`` is the list position).

A detection with a mask (``Detections.masks``; a track's ``TrackBox.mask``) is written as a ``polygon`` by default:
``paths`` holds each part's outer ring then its holes (V7 fills them even-odd), corners on pixel corners, next to
the derived ``bounding_box`` V7 exports carry; a track whose boxes have masks is a polygon on every keyframe (a
frame the segmenter left empty is its box's rectangle). With ``masks="raster"`` it is a ``mask`` annotation
instead, and each slot (each frame on video) gets one ``__raster_layer__`` annotation whose ``dense_rle`` holds
the masks' pixels, as V7 exports them. Detections without a mask are boxes, as before.

Annotation ids are UUIDs derived from the item, slot, frame and box (uuid5), not random (uuid4 as
darwin-py makes them): a re-run of the same model on the same media writes the same file.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from service.convert.darwin_masks import RasterLayers, box_polygon, has_mask, shape_xyxy
from service.convert.darwin_types import (
    RASTER_LAYER_NAME,
    DarwinAnnotation,
    DarwinAnnotationHead,
    DarwinBox,
    DarwinDocument,
    DarwinImageAnnotation,
    DarwinImageMask,
    DarwinImagePolygon,
    DarwinImageRaster,
    DarwinInference,
    DarwinKeyframe,
    DarwinMaskKeyframe,
    DarwinMaskStyle,
    DarwinPolygonKeyframe,
    DarwinRasterKeyframe,
    DarwinSlot,
    DarwinSlotHead,
    DarwinSlotType,
    DarwinSourceFile,
    DarwinVideoAnnotation,
    DarwinVideoMask,
)
from service.convert.types import ModelRef
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, TrackBox, detection_to_track_box, is_tracked, tracks_of

SCHEMA_REF = "https://darwin-public.s3.eu-west-1.amazonaws.com/darwin_json/2.0/schema.json"
INTERPOLATE_ALGORITHM = "linear-1.1"
_ID_NAMESPACE = uuid.UUID("8d7f3c1e-5b2a-4e6f-9a0d-3c4b5a6f7e81")  # fixed: ids must not change between runs

_SLOT_TYPE: dict[MediaKind, DarwinSlotType] = {
    MediaKind.IMAGE: "image",
    MediaKind.VIDEO: "video",
    MediaKind.SEQUENCE: "video",
    MediaKind.DICOM: "dicom",
    MediaKind.PDF: "pdf",
}
_FRAME_SLOTS = frozenset({MediaKind.VIDEO, MediaKind.SEQUENCE, MediaKind.DICOM})


def item_to_darwin(
    item: ItemPredictions, model: ModelRef, *, path: str = "/", masks: DarwinMaskStyle = "polygon"
) -> DarwinDocument:
    """Build the Darwin JSON 2.0 document of one item.

    Args:
        item: the item's slots (all of them, PDFs too) and frame results. A video-like slot whose frames
            are tracked (``Detections.tracker_id``) gets one annotation per track, and detections in no
            kept track are left out; an untracked one, one single-frame annotation per detection.
        model: the model that made the detections (written into every ``inference``).
        path: the item's folder in the V7 dataset; V7 matches an import to an item by path + name.
        masks: how detections with masks are written: ``"polygon"`` (the default) or ``"raster"`` (``mask``
            annotations and the slot's ``raster_layer``).

    Returns:
        ``{"version", "schema_ref", "item": {"name", "path", "slots"}, "annotations", "properties"}``.
        Boxes are ``{"x", "y", "w", "h"}`` in pixels of the slot's media, top-left origin, 2 decimals.
    """
    annotations: list[DarwinAnnotation] = []
    for meta in item.slots:
        frames = item.frames_of_slot(meta.slot)
        writer = _Writer(item.name, model, RasterLayers(meta.width, meta.height) if masks == "raster" else None)
        if meta.media is MediaKind.IMAGE:
            annotations += [writer.image(frame, row) for frame in frames for row in _rows(frame)]
        elif meta.media in _FRAME_SLOTS and is_tracked(frames):
            annotations += [writer.track(t) for t in tracks_of(frames)]
        elif meta.media in _FRAME_SLOTS:
            annotations += [writer.frame(frame, row) for frame in frames for row in _rows(frame)]
        annotations += writer.raster_layer(meta)
    return {
        "version": "2.0",
        "schema_ref": SCHEMA_REF,
        "item": {"name": item.name, "path": path, "slots": [slot_meta_to_darwin(meta) for meta in item.slots]},
        "annotations": annotations,
        "properties": [],
    }


def slot_meta_to_darwin(meta: SlotMeta) -> DarwinSlot:
    """A slot entry: type, name, size in pixels, video timing and the files behind it."""
    slot: DarwinSlotHead = {"type": _SLOT_TYPE[meta.media], "slot_name": meta.slot}
    if meta.media is not MediaKind.PDF:
        slot["width"] = meta.width
        slot["height"] = meta.height
    if meta.media in (MediaKind.VIDEO, MediaKind.SEQUENCE):
        if meta.fps is not None:  # sequences have no clock: leave fps out, do not invent one
            slot["fps"] = round(meta.fps, 6)
        slot["frame_count"] = meta.frame_count
    elif meta.media is MediaKind.DICOM:
        slot["fps"] = None  # as V7 exports DICOM: slices, no rate
        slot["frame_count"] = meta.frame_count
    return {**slot, "source_files": [_source_file(source) for source in meta.source_files]}


def _source_file(source: str) -> DarwinSourceFile:
    """``file_name`` always; ``url`` only for a remote source (a local path is nobody else's business)."""
    parts = urlsplit(source)
    remote = parts.scheme in ("http", "https", "s3", "gs")
    entry: DarwinSourceFile = {"file_name": PurePosixPath(parts.path if remote else source).name or source}
    if remote:
        entry["url"] = source
    return entry


def _rows(frame: FrameResult) -> range:
    return range(len(frame.detections))


class _Writer:
    """One slot's annotations: boxes, or masks as polygons, or masks whose pixels go to ``raster`` (raster mode)."""

    def __init__(self, item: str, model: ModelRef, raster: RasterLayers | None) -> None:
        self.item, self.model, self.raster = item, model, raster

    def image(self, frame: FrameResult, row: int) -> DarwinAnnotation:
        box = detection_to_track_box(frame, row)
        head: DarwinAnnotationHead = {
            "id": _annotation_id(self.item, frame.info.slot, "detection", row, box),
            "name": _class_name(self.model, int(frame.detections.class_id[row])),
            "slot_names": [frame.info.slot],
        }
        inference = _inference(self.model, box.confidence)
        if not has_mask(box):
            return DarwinImageAnnotation(**head, bounding_box=box_to_darwin(box.xyxy), inference=inference)
        if self.raster is None:
            polygon, bounding_box = box_polygon(box), box_to_darwin(shape_xyxy(box))
            return DarwinImagePolygon(**head, polygon=polygon, bounding_box=bounding_box, inference=inference)
        self.raster.add(box.frame_index, head["id"], box)
        return DarwinImageMask(**head, mask={"sparse_rle": None}, inference=inference)

    def frame(self, frame: FrameResult, row: int) -> DarwinAnnotation:
        """A video detection on its own: one keyframe, a one-frame range (darwin-fiftyone's pattern)."""
        box = detection_to_track_box(frame, row)
        number, name = row, _class_name(self.model, int(frame.detections.class_id[row]))
        return self._video(frame.info.slot, "detection", number, name, [box], tracked=False)

    def track(self, track: Track) -> DarwinAnnotation:
        """A track: a keyframe on every sampled frame it was detected on; V7 interpolates in between."""
        name = _class_name(self.model, track.class_id)
        return self._video(track.slot, "track", track.track_id, name, track.boxes, tracked=True)

    def _video(
        self, slot: str, kind: str, number: int, name: str, boxes: Sequence[TrackBox], *, tracked: bool
    ) -> DarwinAnnotation:
        first, last = boxes[0], boxes[-1]
        annotation_id = _annotation_id(self.item, slot, kind, number, first)
        # The end is exclusive (frames 7, 8, 9 -> [[7, 10]]); one range: the gaps are interpolated.
        ranges = [[first.frame_index, last.frame_index + 1]]
        masked = any(has_mask(b) for b in boxes)
        if masked and self.raster is not None:
            for box in boxes:
                self.raster.add(box.frame_index, annotation_id, box)
            mask_frames: dict[str, DarwinMaskKeyframe | DarwinRasterKeyframe] = {
                str(b.frame_index): self._mask_keyframe(b) for b in boxes
            }
            return DarwinVideoMask(
                id=annotation_id, name=name, slot_names=[slot], frames=mask_frames, ranges=ranges, only_keyframes=True
            )
        keyframe = self._polygon_keyframe if masked else self._box_keyframe
        frames: dict[str, DarwinKeyframe | DarwinPolygonKeyframe] = {str(b.frame_index): keyframe(b) for b in boxes}
        annotation = DarwinVideoAnnotation(
            id=annotation_id, name=name, slot_names=[slot], frames=frames, ranges=ranges, interpolated=tracked
        )
        if tracked:
            annotation |= {"interpolate_algorithm": INTERPOLATE_ALGORITHM, "hidden_areas": [], "global_sub_types": {}}
        return annotation

    def _box_keyframe(self, box: TrackBox) -> DarwinKeyframe:
        # keyframe must be true: darwin-py imports only keyframes and drops the rest.
        inference = _inference(self.model, box.confidence)
        return {"bounding_box": box_to_darwin(box.xyxy), "inference": inference, "keyframe": True}

    def _polygon_keyframe(self, box: TrackBox) -> DarwinPolygonKeyframe:
        return {
            "polygon": box_polygon(box),
            "bounding_box": box_to_darwin(shape_xyxy(box)),
            "inference": _inference(self.model, box.confidence),
            "keyframe": True,
        }

    def _mask_keyframe(self, box: TrackBox) -> DarwinMaskKeyframe:
        return {"mask": {"sparse_rle": None}, "inference": _inference(self.model, box.confidence), "keyframe": True}

    def raster_layer(self, meta: SlotMeta) -> list[DarwinAnnotation]:
        """The slot's ``__raster_layer__`` annotation (raster mode, once its masks are written); [] without masks."""
        raster = self.raster
        if raster is None or not raster.values:
            return []
        head: DarwinAnnotationHead = {
            "id": str(uuid.uuid5(_ID_NAMESPACE, f"{self.item}\x1f{meta.slot}\x1fraster_layer")),
            "name": RASTER_LAYER_NAME,
            "slot_names": [meta.slot],
        }
        frame_indices = raster.frames()
        if meta.media is MediaKind.IMAGE:
            return [DarwinImageRaster(**head, raster_layer=raster.layer(frame_indices[0]))]
        frames: dict[str, DarwinMaskKeyframe | DarwinRasterKeyframe] = {
            str(f): {"raster_layer": raster.layer(f), "keyframe": True} for f in frame_indices
        }
        ranges = [[frame_indices[0], frame_indices[-1] + 1]]
        return [DarwinVideoMask(**head, frames=frames, ranges=ranges, only_keyframes=True)]


def box_to_darwin(xyxy_px: tuple[float, float, float, float]) -> DarwinBox:
    """Corners in pixels -> Darwin's ``{"x", "y", "w", "h"}`` (top-left corner and size, pixels)."""
    x1, y1, x2, y2 = xyxy_px
    return {"x": round(x1, 2), "y": round(y1, 2), "w": round(max(0.0, x2 - x1), 2), "h": round(max(0.0, y2 - y1), 2)}


def _inference(model: ModelRef, confidence: float) -> DarwinInference:
    """Provenance as darwin-fiftyone writes it; §3.3 has no version field, so it rides in the name."""
    return {
        "confidence": round(min(1.0, max(0.0, confidence)), 5),
        "model": {"id": model_uuid(model), "name": f"{model.spec}@{model.version}", "type": "external"},
    }


def model_uuid(model: ModelRef) -> str:
    """A stable UUID for a model's weights: the same spec and version always give the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"model\x1f{model.spec}\x1f{model.version}"))


def _annotation_id(item: str, slot: str, kind: str, number: int, box: TrackBox) -> str:
    """uuid5 of where the annotation is: item, slot, detection row or track id, first frame and box."""
    corners = ",".join(f"{v:.2f}" for v in box.xyxy)
    key = "\x1f".join((item, slot, kind, str(number), str(box.frame_index), corners))
    return str(uuid.uuid5(_ID_NAMESPACE, key))


def _class_name(model: ModelRef, class_id: int) -> str:
    # V7 looks classes up by (type, stripped name); an id the model does not name still gets a class.
    names = model.class_names
    return names[class_id].strip() if 0 <= class_id < len(names) else f"class_{class_id}"
