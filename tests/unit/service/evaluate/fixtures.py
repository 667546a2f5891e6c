"""Builders for small evaluation inputs in every supported format (shapes as in ../shared/reference/examples)."""

from __future__ import annotations

from typing import Any

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels

CAR, PERSON, LESION = ("carBBox1", "Car"), ("persBBx1", "Person"), ("lesPoly1", "Lesion")


# --- COCO ------------------------------------------------------------------------------------------


def coco(images: dict[str, list[tuple[str, Box]]], *, size: tuple[int, int] = (640, 480)) -> dict[str, Any]:
    """A full COCO dict: file name -> [(class, xyxy)]; every class named gets a category (sorted)."""
    names = sorted({c for anns in images.values() for c, _ in anns} | {"car", "person"})
    cat = {n: i + 1 for i, n in enumerate(names)}
    out: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n} for n, i in cat.items()],
    }
    for image_id, (file_name, anns) in enumerate(images.items(), start=1):
        out["images"].append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1]})
        for label, (x1, y1, x2, y2) in anns:
            out["annotations"].append(
                {
                    "id": len(out["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cat[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    return out


def coco_results(gt: dict[str, Any], dets: dict[str, list[tuple[str, Box, float]]]) -> list[dict[str, Any]]:
    """A COCO results list against ``gt``: file name -> [(class, xyxy, score)]."""
    image_ids = {im["file_name"]: im["id"] for im in gt["images"]}
    cat = {c["name"]: c["id"] for c in gt["categories"]}
    return [
        {"image_id": image_ids[f], "category_id": cat[c], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
        for f, anns in dets.items()
        for c, (x1, y1, x2, y2), s in anns
    ]


# --- Darwin JSON 2.0 ---------------------------------------------------------------------------------


def darwin_box(
    name: str, box: Box, *, slot: str = "0", confidence: float | None = None, id_: str = ""
) -> dict[str, Any]:
    x1, y1, x2, y2 = box
    ann: dict[str, Any] = {
        "id": id_ or f"{name}-{x1}-{y1}",
        "name": name,
        "slot_names": [slot],
        "bounding_box": {"x": x1, "y": y1, "w": x2 - x1, "h": y2 - y1},
    }
    if confidence is not None:
        ann["inference"] = {"confidence": confidence, "model": {"id": "m", "name": "m", "type": "external"}}
    return ann


def darwin_item(
    name: str, annotations: list[dict[str, Any]], *, slots: tuple[str, ...] = ("0",), path: str = "/"
) -> dict[str, Any]:
    """A Darwin 2.0 file of image slots, shaped like examples/two_slot_image_item.darwin.json."""
    return {
        "version": "2.0",
        "schema_ref": "https://darwin-public.s3.eu-west-1.amazonaws.com/darwin_json/2.0/schema.json",
        "item": {
            "name": name,
            "path": path,
            "slots": [
                {
                    "type": "image",
                    "slot_name": s,
                    "width": 640,
                    "height": 480,
                    "source_files": [{"file_name": f"{s}.png"}],
                }
                for s in slots
            ],
        },
        "annotations": annotations,
        "properties": [],
    }


def darwin_video(
    name: str,
    frames: dict[int, list[tuple[str, str, Box]]],
    *,
    ranges: list[list[int]] | None = None,
    interpolated: bool | None = None,
) -> dict[str, Any]:
    """A one-video-slot Darwin file: frame -> [(track id, class, xyxy)], one annotation per track; each
    track's ``ranges`` span its first to last keyframe unless given, ``interpolated`` is set when given."""
    tracks: dict[str, dict[str, Any]] = {}
    for frame, boxes in frames.items():
        for track, label, (x1, y1, x2, y2) in boxes:
            ann = tracks.setdefault(track, {"id": track, "name": label, "slot_names": ["0"], "frames": {}})
            ann["frames"][str(frame)] = {
                "keyframe": True,
                "bounding_box": {"x": x1, "y": y1, "w": x2 - x1, "h": y2 - y1},
            }
    for ann in tracks.values():
        keys = sorted(map(int, ann["frames"]))
        ann["ranges"] = ranges if ranges is not None else [[keys[0], keys[-1] + 1]]
        if interpolated is not None:
            ann["interpolated"] = interpolated
    return {
        "version": "2.0",
        "item": {
            "name": name,
            "path": "/",
            "slots": [{"type": "video", "slot_name": "0", "width": 640, "height": 480, "fps": 2.0, "frame_count": 20}],
        },
        "annotations": list(tracks.values()),
    }


# --- Label Studio export ------------------------------------------------------------------------------


def ls_rect(
    label: str, box: Box, *, size: tuple[int, int] = (640, 480), score: float | None = None, id_: str = ""
) -> dict[str, Any]:
    """A rectanglelabels region in percent, as in label_studio.md section 4.2."""
    (x1, y1, x2, y2), (w, h) = box, size
    region: dict[str, Any] = {
        "id": id_ or f"r-{label}-{x1}",
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {
            "x": 100 * x1 / w,
            "y": 100 * y1 / h,
            "width": 100 * (x2 - x1) / w,
            "height": 100 * (y2 - y1) / h,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }
    if score is not None:
        region["score"] = score
    return region


def ls_task(
    task_id: int,
    image: str,
    *,
    annotations: list[list[dict[str, Any]]] = (),  # type: ignore[assignment]
    predictions: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """A task of a Label Studio JSON export: human annotations, and predictions per model version."""
    return {
        "id": task_id,
        "data": {"image": f"/data/local-files/?d={image}"},
        "annotations": [
            {"id": 100 * task_id + i, "completed_by": 1, "was_cancelled": False, "ground_truth": False, "result": r}
            for i, r in enumerate(annotations)
        ],
        "predictions": [
            {"id": 200 * task_id + i, "model_version": v, "score": 0.5, "result": r}
            for i, (v, r) in enumerate((predictions or {}).items())
        ],
    }


def ls_video_task(
    task_id: int, video: str, sequence: list[dict[str, Any]], *, frames_count: int = 250
) -> dict[str, Any]:
    """A task with one ``videorectangle`` prediction (label_studio.md section 5): keyframes in percent, 1-based."""
    region = {
        "id": f"trk{task_id}",
        "from_name": "box",
        "to_name": "video",
        "type": "videorectangle",
        "value": {"framesCount": frames_count, "duration": frames_count / 25, "labels": ["car"], "sequence": sequence},
    }
    return {
        "id": task_id,
        "data": {"video": f"/data/local-files/?d={video}"},
        "predictions": [{"id": task_id, "model_version": "m", "result": [region]}],
    }


# --- One car, one second of video: a 30 fps file and a 24 fps Label Studio project ----------------------------


def thirty_fps_benchmark() -> dict[str, Any]:
    """A 30 fps Darwin video: the car moves 10 px a frame from x 0 (frame 0) to x 300 (frame 30, one second
    in), then stands still on frame 31 (V7 interpolates between the two keyframes and holds the last)."""
    car = (0, 0, 100, 100)
    doc = darwin_video("v.mp4", {0: [("g", "car", car)], 30: [("g", "car", (300, 0, 400, 100))]}, interpolated=True)
    doc["annotations"][0]["ranges"] = [[0, 32]]
    doc["item"]["slots"][0] |= {"fps": 30.0, "frame_count": 32}
    return doc


def ls_track_24(data: dict[str, Any]) -> dict[str, Any]:
    """The same car labelled in a 24 fps LS project: keyframes at 0 s (LS frame 1) and 1 s (LS frame 25)."""
    w, h = 100 * 100 / 640, 100 * 100 / 480
    sequence = [
        {"frame": 1, "enabled": True, "rotation": 0, "x": 0.0, "y": 0.0, "width": w, "height": h},
        {"frame": 25, "enabled": False, "rotation": 0, "x": 100 * 300 / 640, "y": 0.0, "width": w, "height": h},
    ]
    task = ls_video_task(1, "v.mp4", sequence, frames_count=25)
    task["data"] |= data
    return task


# --- Encord label rows ----------------------------------------------------------------------------------


def encord_box(
    object_hash: str,
    cls: tuple[str, str],
    xywh: Box,
    *,
    by: str = "alice@example.com",
    confidence: float = 1.0,
    manual: bool = True,
) -> dict[str, Any]:
    """An object entry with a normalised top-left ``boundingBox {h, w, x, y}`` (encord.md 1.2)."""
    x, y, w, h = xywh
    return {
        "name": cls[1],
        "value": cls[1].lower(),
        "color": "#D33115",
        "shape": "bounding_box",
        "objectHash": object_hash,
        "featureHash": cls[0],
        "confidence": confidence,
        "manualAnnotation": manual,
        "createdAt": "Sun, 01 Jun 2025 12:00:00 UTC",
        "createdBy": by,
        "boundingBox": {"h": h, "w": w, "x": x, "y": y},
    }


def encord_polygon(
    object_hash: str, points: list[tuple[float, float]], *, by: str = "alice@example.com"
) -> dict[str, Any]:
    flat = [v for p in points for v in p]
    return {
        "name": LESION[1],
        "value": "lesion",
        "color": "#68BC00",
        "shape": "polygon",
        "objectHash": object_hash,
        "featureHash": LESION[0],
        "confidence": 1.0,
        "manualAnnotation": True,
        "createdAt": "Sun, 01 Jun 2025 12:00:00 UTC",
        "createdBy": by,
        "polygon": {str(i): {"x": x, "y": y} for i, (x, y) in enumerate(points)},
        "polygons": [[flat]],
    }


def encord_row(
    *,
    data_hash: str,
    title: str,
    label_hash: str,
    objects: list[dict[str, Any]] | None = None,
    frames: dict[str, list[dict[str, Any]]] | None = None,
    width: int = 1000,
    height: int = 500,
) -> dict[str, Any]:
    """A label row shaped like examples/encord_label_row_{image,video}.json: ``objects`` for an image row,
    ``frames`` (frame key -> objects, in the given order) for a video row."""
    video = frames is not None
    labels: dict[str, Any] = (
        {k: {"objects": v, "classifications": []} for k, v in frames.items()}
        if video
        else {"objects": objects or [], "classifications": []}
    )
    return {
        "label_hash": label_hash,
        "branch_name": "main",
        "created_at": "Mon, 23 Nov 2026 01:41:28 UTC",
        "last_edited_at": "Mon, 23 Nov 2026 01:41:28 UTC",
        "data_hash": data_hash,
        "dataset_hash": "00000000-0000-0000-0000-000000000000",
        "dataset_title": "",
        "data_title": title,
        "data_type": "video" if video else "image",
        "annotation_task_status": "QUEUED",
        "is_shadow_data": False,
        "object_answers": {},
        "classification_answers": {},
        "object_actions": {},
        "label_status": "LABEL_IN_PROGRESS",
        "data_units": {
            data_hash: {
                "data_hash": data_hash,
                "data_title": title,
                "data_link": "",
                "data_type": "video/mp4" if video else "image/jpeg",
                "data_sequence": 0,
                "width": width,
                "height": height,
                "labels": labels,
            }
        },
        "spaces": {},
    }


def encord_group(
    *,
    data_hash: str,
    title: str,
    label_hash: str,
    images: list[list[dict[str, Any]]],
    size: tuple[int, int] = (640, 480),
) -> dict[str, Any]:
    """An ``img_group`` label row (encord.md 1.1): one data unit per image, ``data_sequence`` "0", "1", ...;
    ``images[i]`` are image i's objects. Units are stored last image first, as a dict may hold them."""
    row = encord_row(data_hash=data_hash, title=title, label_hash=label_hash, width=size[0], height=size[1])
    row["data_type"] = "img_group"
    row["data_units"] = {
        f"{data_hash}-{i}": {
            "data_hash": f"{data_hash}-{i}",
            "data_title": f"{i}.jpg",
            "data_link": "",
            "data_type": "image/jpeg",
            "data_sequence": str(i),
            "width": size[0],
            "height": size[1],
            "labels": {"objects": objects, "classifications": []},
        }
        for i, objects in reversed(list(enumerate(images)))
    }
    return row


# --- Masks ------------------------------------------------------------------------------------------------


def dense_rle(values: Any) -> list[int]:
    """A Darwin ``raster_layer.dense_rle`` of a (height, width) array of mask values: [value, count, ...]
    over the pixels row by row."""
    flat = [int(v) for v in values.ravel()]
    out: list[int] = []
    for v in flat:
        if out and out[-2] == v:
            out[-1] += 1
        else:
            out += [v, 1]
    return out


def darwin_masks(name: str, masks: dict[str, tuple[str, Any]], *, slot: str = "0") -> dict[str, Any]:
    """A one-image Darwin file of ``mask`` annotations (id -> (class, boolean (height, width) array)) and
    the slot's ``raster_layer`` holding their pixels (mask i takes value i + 1; later masks paint over)."""
    import numpy as np

    first = next(iter(masks.values()))[1]
    height, width = first.shape
    values = np.zeros((height, width), np.int64)
    mapping: dict[str, int] = {}
    for i, (mask_id, (_, pixels)) in enumerate(masks.items()):
        values[pixels] = i + 1
        mapping[mask_id] = i + 1
    annotations: list[dict[str, Any]] = [
        {"id": mask_id, "name": label, "mask": {"sparse_rle": None}, "slot_names": [slot]}
        for mask_id, (label, _) in masks.items()
    ]
    annotations.append(
        {
            "id": "raster",
            "name": "__raster_layer__",
            "raster_layer": {
                "dense_rle": dense_rle(values),
                "mask_annotation_ids_mapping": mapping,
                "total_pixels": width * height,
            },
            "slot_names": [slot],
        }
    )
    doc = darwin_item(name, annotations, slots=(slot,))
    doc["item"]["slots"][0] |= {"width": width, "height": height}
    return doc


def ls_brush_rle(values: list[int]) -> list[int]:
    """Label Studio brush ``rle`` bytes of RGBA values, every run a repeat run with a 16-bit length (one valid
    encoding of the rle-pack format label-studio-converter's ``decode_rle`` reads)."""
    bits = f"{len(values):032b}" + f"{8 - 1:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i] and j - i < 2**16:
            j += 1
        bits += "1" + "11" + f"{j - i - 1:016b}" + f"{values[i]:08b}"
        i = j
    bits += "0" * (-len(bits) % 8)
    return [int(bits[k : k + 8], 2) for k in range(0, len(bits), 8)]


def ls_brush_task(task_id: int, image: str, regions: list[tuple[str, Any]]) -> dict[str, Any]:
    """An image task annotated with ``brushlabels`` regions: (label, boolean (height, width) array) each,
    painted opaque white (RGBA; only alpha counts)."""
    import numpy as np

    result = []
    for n, (label, pixels) in enumerate(regions):
        rgba = np.repeat(pixels.astype(np.uint8)[..., None] * 255, 4, axis=2)
        result.append(
            {
                "id": f"b{n}",
                "type": "brushlabels",
                "from_name": "tag",
                "to_name": "image",
                "original_width": pixels.shape[1],
                "original_height": pixels.shape[0],
                "image_rotation": 0,
                "value": {"format": "rle", "rle": ls_brush_rle(rgba.ravel().tolist()), "brushlabels": [label]},
            }
        )
    return ls_task(task_id, image, annotations=[result])
