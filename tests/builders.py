"""Small builders for test data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from models.masks import Masks
from models.types import Detections
from service.convert.types import ModelRef
from service.pipeline.frames import FrameInfo, FrameResult, MediaKind
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import NO_TRACK, Track, TrackerOptions, assign_tracker_ids


def make_detections(
    xyxy: Sequence[Sequence[float]] = (), confidence: Sequence[float] = (), class_id: Sequence[int] = ()
) -> Detections:
    import numpy as np

    return Detections.from_arrays(np.array(xyxy, np.float32), np.array(confidence), np.array(class_id))


def make_info(
    *,
    item: str = "a.jpg",
    slot: str = "0",
    source: str = "/data/a.jpg",
    media: MediaKind = MediaKind.IMAGE,
    frame_index: int = 0,
    timestamp_s: float | None = None,
    width: int = 640,
    height: int = 480,
) -> FrameInfo:
    return FrameInfo(item, slot, source, media, frame_index, timestamp_s, width, height)


def make_result(detections: Detections | None = None, **info: object) -> FrameResult:
    return FrameResult(info=make_info(**info), detections=detections or make_detections())  # type: ignore[arg-type]


def tracked(item: ItemPredictions, options: TrackerOptions | None = None) -> ItemPredictions:
    """The item as the tracker leaves it (default options)."""
    return replace(item, frames=tuple(assign_tracker_ids(item.frames, options or TrackerOptions())))


def linked(item: ItemPredictions, tracker: TrackerOptions | None) -> ItemPredictions:
    """The item as the flow's track stage leaves it under ``tracker`` (None: tracking off, ids stay None)."""
    return replace(item, frames=tuple(assign_tracker_ids(item.frames, tracker)))


def with_tracks(item: ItemPredictions, tracks: Sequence[Track]) -> ItemPredictions:
    """The item with hand-made tracks written into its frames as tracker ids: each box becomes a row of the
    frame it is on (a frame is added where the item has none; a box's timestamp wins), and the rows the item
    already had are in no track. Converters then see exactly these tracks."""
    import numpy as np

    metas = {m.slot: m for m in item.slots}
    frames: dict[tuple[str, int], FrameResult] = {}
    for f in item.frames:
        ids = np.full(len(f.detections), NO_TRACK, np.int64)
        frames[(f.info.slot, f.info.frame_index)] = replace(f, detections=f.detections.with_tracker_id(ids))
    for track in tracks:
        meta = metas.get(track.slot)
        for box in track.boxes:
            key = (track.slot, box.frame_index)
            frame = frames.get(key) or make_result(
                make_detections(),
                item=item.name,
                slot=track.slot,
                source=meta.source_files[0] if meta and meta.source_files else item.name,
                media=meta.media if meta else MediaKind.VIDEO,
                frame_index=box.frame_index,
                width=meta.width if meta else 640,
                height=meta.height if meta else 480,
            )
            dets = frame.detections
            ids = dets.tracker_id if dets.tracker_id is not None else np.full(len(dets), NO_TRACK, np.int64)
            rows = Detections.from_arrays(
                np.vstack([dets.xyxy, np.array([box.xyxy], np.float32)]),
                np.append(dets.confidence, box.confidence),
                np.append(dets.class_id, track.class_id),
                np.append(ids, track.track_id),
            )
            info = frame.info if box.timestamp_s is None else replace(frame.info, timestamp_s=box.timestamp_s)
            frames[key] = FrameResult(info, rows)
    slot_order = {s: n for n, s in enumerate(dict.fromkeys([*metas, *(t.slot for t in tracks)]))}
    ordered = sorted(frames.values(), key=lambda f: (slot_order.get(f.info.slot, 0), f.info.frame_index))
    return replace(item, frames=tuple(ordered))


# A car/person detector and the Encord ontology that labels its classes (backend and push tests).
CAR_PERSON_MODEL = ModelRef(spec="onnx:/m/yolo.onnx", version="v1", class_names=("car", "person"))
CAR_PERSON_ONTOLOGY_JSON = {
    "objects": [
        {"id": "1", "name": "Car", "color": "#D33115", "shape": "bounding_box", "featureNodeHash": "carBBox1"},
        {"id": "2", "name": "Person", "color": "#FCDC00", "shape": "bounding_box", "featureNodeHash": "persBBx1"},
    ],
    "classifications": [],
}


def mask_shapes(height: int = 120, width: int = 160) -> dict[str, NDArray[np.bool_]]:
    """Hand-drawn (height, width) boolean masks: a disk, a ring (one hole) and a two-part shape (two disks)."""
    yy, xx = np.mgrid[:height, :width]

    def disk(cx: float, cy: float, r: float) -> NDArray[np.bool_]:
        return np.asarray((xx - cx) ** 2 + (yy - cy) ** 2 < r**2, np.bool_)

    return {
        "disk": disk(40, 40, 18),
        "ring": disk(50, 60, 30) & ~disk(50, 60, 12),
        "two parts": disk(110, 30, 10) | disk(130, 90, 14),
    }


def with_shape_masks(detections: Detections, shapes: Sequence[NDArray[np.bool_] | None]) -> Detections:
    """``detections`` with one full-frame mask per row (None: that row has no mask)."""
    size = next(s.shape for s in shapes if s is not None)
    full = np.stack([np.zeros(size, np.bool_) if s is None else s for s in shapes])
    return detections.with_masks(Masks.from_full(full))


def masked_item(name: str = "case", *, track: bool = True) -> ItemPredictions:
    """An item with an image slot ``photo`` (a disk, a ring with a hole, a two-part shape, and a box without a mask)
    and a video slot ``clip`` whose three sampled frames hold a disk moving right and a still ring (tracked
    unless ``track`` is False). Frames are 160 x 120; every box is its mask's box grown by 2 px."""
    from service.pipeline.frames import SlotMeta

    height, width = 120, 160
    shapes = mask_shapes(height, width)

    def result(slot: str, media: MediaKind, index: int, masks: list[NDArray[np.bool_] | None]) -> FrameResult:
        boxes = [[1.0, 1.0, 21.0, 11.0] if m is None else _grown_box(m) for m in masks]
        dets = make_detections(boxes, [0.9 - 0.1 * k for k in range(len(masks))], [k % 2 for k in range(len(masks))])
        return make_result(
            with_shape_masks(dets, masks),
            item=name,
            slot=slot,
            source=f"/data/{slot}",
            media=media,
            frame_index=index,
            timestamp_s=None if media is MediaKind.IMAGE else index / 10,
            width=width,
            height=height,
        )

    photo = result("photo", MediaKind.IMAGE, 0, [shapes["disk"], shapes["ring"], shapes["two parts"], None])
    clip = [
        result("clip", MediaKind.VIDEO, index, [np.roll(shapes["disk"], 6 * k, axis=1), shapes["ring"]])
        for k, index in enumerate((0, 10, 20))
    ]
    slots = (
        SlotMeta(name, "photo", MediaKind.IMAGE, ("/data/photo",), width, height, None, 1, 1),
        SlotMeta(name, "clip", MediaKind.VIDEO, ("/data/clip",), width, height, 10.0, 30, 3),
    )
    item = ItemPredictions(name=name, slots=slots, frames=(photo, *clip))
    return tracked(item) if track else item


def _grown_box(mask: NDArray[np.bool_]) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()) - 2, float(ys.min()) - 2, float(xs.max()) + 3, float(ys.max()) + 3]
