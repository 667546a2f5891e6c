"""Loaded labels back as Detections to draw: pixels of the decoded frame, class order, tracks, masks; the
frames a file lists (a Darwin track's keyframes, not those filled between); a job's result unwrapped."""

from __future__ import annotations

import pytest

from service.evaluate.detections import class_names_of, frame_shapes, shapes_to_detections, track_numbers
from service.evaluate.inputs import documents_to_datasets
from service.evaluate.types import Dataset, Shape, ShapeKind, Unit


def box(object_id: str, label: str = "face", xyxy: tuple[float, float, float, float] = (10, 20, 30, 40)) -> Shape:
    return Shape(object_id=object_id, label=label, xyxy=xyxy, score=0.5)


def test_percent_shapes_are_scaled_to_the_decoded_frame() -> None:
    unit = Unit(item="v.mp4", pixel_size_known=False, frames={0: [box("a", xyxy=(10, 20, 50, 100))]})
    [shape] = frame_shapes(unit, 0, 640, 480)
    assert shape.xyxy == pytest.approx((64, 96, 320, 480))
    sized = Unit(item="p.png", width=320, height=240, frames={0: [box("a")]})
    assert frame_shapes(sized, 0, 640, 480)[0].xyxy == pytest.approx((20, 40, 60, 80))
    assert frame_shapes(sized, 0, 320, 240)[0].xyxy == (10, 20, 30, 40)


def test_objects_on_several_frames_are_tracks_numbered_coco_ids_kept() -> None:
    coco = Unit(item="v", frames={0: [box("7"), box("100")], 1: [box("7")]})
    assert track_numbers(coco) == {"7": 7}
    darwin = Unit(item="v", frames={0: [box("uuid-b"), box("uuid-a")], 1: [box("uuid-a"), box("uuid-b")]})
    darwin.object_order = ["uuid-b", "uuid-a"]
    assert track_numbers(darwin) == {"uuid-b": 1, "uuid-a": 2}


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
