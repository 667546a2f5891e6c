"""Loaded labels back as Detections to draw: pixels of the decoded frame, class order, tracks, masks; the
frames a file lists (a Darwin track's keyframes, not those filled between); a job's result unwrapped."""

from __future__ import annotations

import pytest

from service.evaluate.detections import class_names_of, frame_shapes, shapes_to_detections, track_numbers
from service.evaluate.inputs import documents_to_datasets
from service.evaluate.types import Dataset, Shape, ShapeKind, Unit
from tests.unit.service.evaluate.fixtures import darwin_video, encord_box, encord_row, ls_video_task


def box(object_id: str, label: str = "face", xyxy: tuple[float, float, float, float] = (10, 20, 30, 40)) -> Shape:
    return Shape(object_id=object_id, label=label, xyxy=xyxy, score=0.5, track_id=object_id)


def test_percent_shapes_are_scaled_to_the_decoded_frame() -> None:
    unit = Unit(item="v.mp4", pixel_size_known=False, frames={0: [box("a", xyxy=(10, 20, 50, 100))]})
    [shape] = frame_shapes(unit, 0, 640, 480)
    assert shape.xyxy == pytest.approx((64, 96, 320, 480))
    sized = Unit(item="p.png", width=320, height=240, frames={0: [box("a")]})
    assert frame_shapes(sized, 0, 640, 480)[0].xyxy == pytest.approx((20, 40, 60, 80))
    assert frame_shapes(sized, 0, 320, 240)[0].xyxy == (10, 20, 30, 40)


def load_one(doc: object) -> Unit:
    [dataset] = documents_to_datasets([("p.json", doc)], name="p", role="candidate")  # type: ignore[list-item]
    [unit] = [u for u in dataset.units if u.frames]
    return unit


def drawn_tracks(unit: Unit) -> dict[int, list[int] | None]:
    """Frame -> the track number drawn on each of its shapes (None: the frame's Detections carry no tracks)."""
    tracks = track_numbers(unit)
    out: dict[int, list[int] | None] = {}
    for frame, shapes in sorted(unit.frames.items()):
        dets = shapes_to_detections(
            shapes, class_ids={s.label: 0 for s in shapes}, tracks=tracks, width_px=64, height_px=64
        )
        out[frame] = None if dets.tracker_id is None else dets.tracker_id.tolist()
    return out


def coco_video(annotations: list[dict[str, object]]) -> dict[str, object]:
    """``run``'s COCO for three sampled frames of one video."""
    images = [
        {
            "id": n + 1,
            "file_name": f"v/{n}.jpg",
            "width": 64,
            "height": 64,
            "item": "v.mp4",
            "slot": "0",
            "frame_index": n,
            "timestamp_s": n / 2,
        }
        for n in range(3)
    ]
    rows = [
        {"category_id": 1, "bbox": [1, 2, 10, 10], "area": 100, "score": 0.5, "iscrowd": 0, **a} for a in annotations
    ]
    return {"images": images, "annotations": rows, "categories": [{"id": 1, "name": "face"}]}


def test_coco_tracks_are_its_track_ids_never_its_annotation_ids() -> None:
    unit = load_one(
        coco_video(
            [
                {"id": 7, "image_id": 1},  # untracked, id 7: no "#7" next to track 7
                {"id": 8, "image_id": 2, "track_id": 7},
                {"id": 9, "image_id": 3, "track_id": 7},
                {"id": 10, "image_id": 3, "track_id": 4},  # a track on one sampled frame keeps its id
            ]
        )
    )
    assert track_numbers(unit) == {"7": 7, "4": 4}
    assert drawn_tracks(unit) == {0: None, 1: [7], 2: [7, 4]}
    untracked = load_one(coco_video([{"image_id": 1}, {"image_id": 2}, {"image_id": 3}]))  # no ids at all
    assert drawn_tracks(untracked) == {0: None, 1: None, 2: None}


def test_darwin_tracks_are_its_video_objects_numbered_by_first_appearance() -> None:
    doc = darwin_video(
        "v.mp4",
        {
            0: [("uuid-b", "face", (1, 1, 9, 9))],
            1: [("uuid-a", "face", (1, 1, 9, 9))],
            2: [("uuid-a", "face", (1, 1, 9, 9)), ("uuid-b", "face", (1, 1, 9, 9))],
        },
    )
    lone = {
        "id": "uuid-c",
        "name": "face",
        "slot_names": ["0"],
        "ranges": [[1, 2]],
        "interpolated": False,
        "frames": {"1": {"keyframe": True, "bounding_box": {"x": 1, "y": 1, "w": 5, "h": 5}}},
    }
    seen_once = {**lone, "id": "uuid-d", "ranges": [[2, 3]], "interpolated": True, "frames": {"2": lone["frames"]["1"]}}
    doc["annotations"] += [lone, seen_once]  # lone: how run writes an untracked video detection, no track
    unit = load_one(doc)
    assert track_numbers(unit) == {"uuid-b": 1, "uuid-a": 2, "uuid-d": 3}
    assert drawn_tracks(unit) == {0: [1], 1: [1, 2, -1], 2: [1, 2, 3]}  # b held on frame 1


def test_label_studio_tracks_are_regions_spanning_frames() -> None:
    key = {"x": 10, "y": 10, "width": 20, "height": 20, "rotation": 0}
    task = ls_video_task(1, "v.mp4", [{**key, "frame": 1, "enabled": True}, {**key, "frame": 3, "enabled": False}])
    one = {**task["predictions"][0]["result"][0], "id": "one"}
    one["value"] = {**one["value"], "sequence": [{**key, "frame": 2, "enabled": False}]}
    task["predictions"][0]["result"].append(one)  # a one-frame region: run's untracked detection
    unit = load_one([task])
    assert track_numbers(unit) == {"trk1": 1}
    assert drawn_tracks(unit)[1] == [1, -1]


def test_encord_tracks_are_objects_on_several_frames() -> None:
    face = ("f1", "Face")
    frames = {
        "0": [encord_box("hashA", face, (0.1, 0.1, 0.2, 0.2))],
        "1": [encord_box("hashA", face, (0.1, 0.1, 0.2, 0.2)), encord_box("hashB", face, (0.5, 0.5, 0.2, 0.2))],
    }
    unit = load_one([encord_row(data_hash="d", title="v.mp4", label_hash="l", frames=frames)])
    assert track_numbers(unit) == {"hashA": 1}
    assert drawn_tracks(unit) == {0: [1], 1: [1, -1]}


def test_shapes_become_detections_with_class_index_track_and_mask() -> None:
    ring = (10.0, 10.0, 50.0, 10.0, 50.0, 50.0, 10.0, 50.0)
    polygon = Shape("p", "car", (10, 10, 50, 50), ShapeKind.POLYGON, None, (ring,))
    dets = shapes_to_detections(
        [box("t"), polygon], class_ids={"face": 0, "car": 1}, tracks={"t": 3}, width_px=64, height_px=64
    )
    assert dets.class_id.tolist() == [0, 1]
    assert dets.confidence.tolist() == [0.5, 1.0]  # no score: drawn as 1.0
    assert dets.tracker_id is not None
    assert dets.tracker_id.tolist() == [3, -1]
    assert dets.masks is not None
    assert dets.masks.has_mask().tolist() == [False, True]
    full = dets.masks.full(1, 64, 64)
    assert full[30, 30]
    assert not full[5, 5]
    assert 1400 < int(full.sum()) < 1800  # the 40 x 40 square


def test_class_names_keep_coco_category_order_then_first_appearance() -> None:
    dataset = Dataset(name="p", source="s", format="coco", coco_categories={2: "car", 1: "face"})
    dataset.units.append(Unit(item="a", frames={0: [box("x", "bus"), box("y", "face")]}))
    assert class_names_of(dataset) == ["car", "face", "bus"]


def darwin_track_document() -> dict[str, object]:
    keyframe = {"bounding_box": {"x": 1, "y": 1, "w": 5, "h": 5}, "keyframe": True}
    return {
        "version": "2.0",
        "item": {"name": "pan.mp4", "path": "/", "slots": [{"slot_name": "0", "type": "video", "fps": 25}]},
        "annotations": [
            {
                "id": "t1",
                "name": "face",
                "frames": {"0": keyframe, "12": keyframe},
                "ranges": [[0, 13]],
                "interpolated": True,
                "slot_names": ["0"],
            },
        ],
    }


def test_a_darwin_track_lists_its_keyframes_apart_from_the_frames_filled_between() -> None:
    [dataset] = documents_to_datasets([("d.json", darwin_track_document())], name="p", role="candidate")  # type: ignore[list-item]
    [unit] = dataset.units
    assert len(unit.frames) == 13  # every frame V7 shows it on, for scoring
    assert unit.keyframes == {0, 12}  # what render draws: the frames the run sampled


def test_a_job_result_document_is_read_as_the_export_inside_it() -> None:
    job = {"job_id": "j", "items": [darwin_track_document()], "skipped_items": []}
    [dataset] = documents_to_datasets([("job.json", job)], name="p", role="candidate")  # type: ignore[list-item]
    assert dataset.format == "darwin"
    assert [u.item for u in dataset.units] == ["pan.mp4"]
