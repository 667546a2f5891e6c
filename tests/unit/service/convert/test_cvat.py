"""item_to_cvat: images as shapes, tracked videos as tracks on the task's frame numbers, labels by name or alias,
masks as polygons; and how a task numbers its frames (``CvatFrames``, ``parse_frame_step``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from models.masks import Masks
from service.convert.cvat import TaskFrameOf, annotations_in_frames, item_to_cvat, marker_spec, model_marker
from service.convert.cvat_types import (
    SOURCE_AUTO,
    CvatAnnotations,
    CvatFrames,
    CvatLabel,
    CvatTrack,
    CvatTrackedShape,
    empty_annotations,
    parse_frame_step,
)
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, TrackBox
from tests.builders import CAR_PERSON_MODEL, make_detections, make_result, masked_item, with_tracks

MODEL = CAR_PERSON_MODEL  # classes: car, person
MARKER = f"{MODEL.spec}@{MODEL.version}"
CAR = CvatLabel(id=11, name="Car", type="any", marker_id=101)
PERSON = CvatLabel(id=12, name="Person", type="rectangle", marker_id=102)


def _image_item(*frames: FrameResult) -> ItemPredictions:
    slot = SlotMeta("img", "0", MediaKind.IMAGE, ("/data/a.jpg",), 640, 480, None, 1, 1)
    return ItemPredictions(name="img", slots=(slot,), frames=frames)


def _video_item(
    frame_indices: Sequence[int], tracks: Sequence[Track] = (), *, media: MediaKind = MediaKind.VIDEO
) -> ItemPredictions:
    """A video slot ``clip`` sampled on ``frame_indices`` (empty frames), with ``tracks`` written in."""
    slot = SlotMeta("vid", "clip", media, ("/data/clip.mp4",), 640, 480, 25.0, 100, len(frame_indices))
    frames = tuple(
        make_result(item="vid", slot="clip", source="/data/clip.mp4", media=media, frame_index=n, timestamp_s=n / 25)
        for n in frame_indices
    )
    return with_tracks(ItemPredictions(name="vid", slots=(slot,), frames=frames), tracks)


def _track(track_id: int, class_id: int, frame_indices: Sequence[int], x: float = 10.0) -> Track:
    boxes = tuple(TrackBox(n, n / 25, (x + n, 20.0, x + n + 30.0, 60.0), 0.9) for n in frame_indices)
    return Track(track_id, "clip", class_id, boxes)


def _keys(track: dict[str, object]) -> list[tuple[int, bool]]:
    return [(s["frame"], s["outside"]) for s in track["shapes"]]  # type: ignore[index,attr-defined]


def test_images_become_auto_rectangles_with_the_model_marker() -> None:
    dets = make_detections([[1.004, 2.0, 30.0, 40.0], [50.0, 60.0, 70.5, 80.0]], [0.9, 0.8], [0, 1])
    item = _image_item(make_result(dets, item="img", slot="0"))

    done = item_to_cvat(item, {"0": lambda index: 7}, [CAR, PERSON], MODEL)

    assert done.annotations["tracks"] == []
    car, person = done.annotations["shapes"]
    assert (car["type"], car["frame"], car["label_id"], car["points"]) == (
        "rectangle",
        7,
        CAR.id,
        [1.0, 2.0, 30.0, 40.0],
    )
    assert (person["label_id"], person["points"]) == (PERSON.id, [50.0, 60.0, 70.5, 80.0])
    for shape, label in ((car, CAR), (person, PERSON)):
        assert shape["source"] == SOURCE_AUTO
        assert shape["attributes"] == [{"spec_id": label.marker_id, "value": MARKER}]
        assert not shape["outside"]
    assert done.frames == frozenset({7})
    assert not done.dropped
    assert done.off_task == 0


def test_the_marker_names_spec_and_version() -> None:
    assert model_marker(MODEL) == MARKER
    assert marker_spec(model_marker(MODEL)) == MODEL.spec
    assert marker_spec("hf:org/model@a@b") == "hf:org/model@a"  # a spec may hold '@': the version is the last part


def test_a_tracked_video_is_one_track_per_object_with_outside_after_gaps_and_ends() -> None:
    # Source frames 0, 5 ... 20 sampled; the task keeps every 5th source frame, so they are task frames 0 .. 4.
    steady = _track(1, 0, [0, 5, 10, 15, 20])
    gappy = _track(2, 1, [0, 5, 15], x=200)
    brief = _track(3, 0, [10], x=400)
    item = _video_item([0, 5, 10, 15, 20], [steady, gappy, brief])
    frames = CvatFrames(size=5, stop_frame=20, step=5, video=True)

    done = item_to_cvat(item, {"clip": frames.of_source_frame}, [CAR, PERSON], MODEL)

    assert done.annotations["shapes"] == []
    by_label = sorted(done.annotations["tracks"], key=lambda t: (t["label_id"], t["frame"]))
    first, last, person = by_label
    assert _keys(first) == [(0, False), (1, False), (2, False), (3, False), (4, False)]  # reaches the end: no outside
    assert _keys(last) == [(2, False), (3, True)]
    assert _keys(person) == [(0, False), (1, False), (2, True), (3, False), (4, True)]
    assert person["shapes"][2]["points"] == person["shapes"][1]["points"]  # hidden where it was last seen
    for track in by_label:
        assert track["source"] == SOURCE_AUTO
        assert track["frame"] == track["shapes"][0]["frame"]
        assert track["attributes"] == [
            {"spec_id": CAR.marker_id if track["label_id"] == CAR.id else PERSON.marker_id, "value": MARKER}
        ]
        assert {s["type"] for s in track["shapes"]} == {"rectangle"}
    assert first["shapes"][1]["points"] == [15.0, 20.0, 45.0, 60.0]
    assert done.frames == frozenset(range(5))


def test_fetched_task_frames_keep_their_numbers_and_a_gap_hides_the_track_on_the_next_sample() -> None:
    # Frames fetched from CVAT with a stride of 5: positions 0, 1, 2 are task frames 0, 5, 10.
    numbers = [0, 5, 10]
    item = _video_item([0, 1, 2], [_track(1, 0, [0, 2])], media=MediaKind.SEQUENCE)
    to_task: TaskFrameOf = lambda index: numbers[index] if 0 <= index < len(numbers) else None  # noqa: E731

    (track,) = item_to_cvat(item, {"clip": to_task}, [CAR], MODEL).annotations["tracks"]

    assert _keys(track) == [(0, False), (5, True), (10, False)]  # seen on the last sample: nothing after it


def test_frames_off_the_task_are_counted_not_written() -> None:
    # The task holds source frames 5, 10, 15 (start 5, stop 15, step 5): 0 and 20 are no frame of it.
    item = _video_item([0, 5, 10, 15, 20], [_track(1, 0, [0, 5, 10, 15, 20])])
    frames = CvatFrames(size=3, start_frame=5, stop_frame=15, step=5, video=True)

    done = item_to_cvat(item, {"clip": frames.of_source_frame}, [CAR], MODEL)

    (track,) = done.annotations["tracks"]
    assert _keys(track) == [(0, False), (1, False), (2, False)]
    assert done.off_task == 2
    assert done.frames == frozenset({0, 1, 2})


def test_a_slot_without_numbering_is_not_written() -> None:
    item = _image_item(make_result(make_detections([[1, 2, 3, 4]], [0.9], [0]), item="img", slot="0"))
    done = item_to_cvat(item, {}, [CAR], MODEL)
    assert done.annotations["shapes"] == []
    assert done.frames == frozenset()


def test_untracked_video_frames_sharing_a_task_frame_give_one_shape_each() -> None:
    # Every source frame sampled, the task keeps every 5th: several samples land on one task frame.
    dets = make_detections([[10, 20, 40, 60]], [0.9], [0])
    frames = [
        make_result(dets, item="vid", slot="clip", media=MediaKind.VIDEO, frame_index=n, timestamp_s=n / 25)
        for n in range(10)
    ]
    slot = SlotMeta("vid", "clip", MediaKind.VIDEO, ("/data/clip.mp4",), 640, 480, 25.0, 10, 10)
    task = CvatFrames(size=2, stop_frame=5, step=5, video=True)

    done = item_to_cvat(ItemPredictions("vid", (slot,), tuple(frames)), {"clip": task.of_source_frame}, [CAR], MODEL)

    assert sorted(s["frame"] for s in done.annotations["shapes"]) == [0, 1]
    assert done.off_task == 4  # source frames 6 .. 9 are past the task's stop


@pytest.mark.parametrize(
    ("labels", "aliases"),
    [
        ([CvatLabel(1, "CAR", marker_id=5), CvatLabel(2, "person", marker_id=6)], None),
        (
            [CvatLabel(1, "vehicle", marker_id=5), CvatLabel(2, "Pedestrian", marker_id=6)],
            {"Car": "Vehicle", "PERSON": "pedestrian"},
        ),
    ],
    ids=["by name, any case", "through aliases"],
)
def test_classes_map_to_labels(labels: list[CvatLabel], aliases: dict[str, str] | None) -> None:
    dets = make_detections([[1, 2, 3, 4], [5, 6, 7, 8]], [0.9, 0.8], [0, 1])
    done = item_to_cvat(_image_item(make_result(dets, slot="0")), {"0": lambda i: 0}, labels, MODEL, aliases=aliases)
    assert [s["label_id"] for s in done.annotations["shapes"]] == [1, 2]
    assert not done.dropped


def test_an_alias_wins_over_the_class_own_name() -> None:
    labels = [CvatLabel(1, "car", marker_id=5), CvatLabel(2, "vehicle", marker_id=6)]
    dets = make_detections([[1, 2, 3, 4]], [0.9], [0])
    done = item_to_cvat(
        _image_item(make_result(dets, slot="0")), {"0": lambda i: 0}, labels, MODEL, aliases={"car": "vehicle"}
    )
    assert [s["label_id"] for s in done.annotations["shapes"]] == [2]


@pytest.mark.parametrize("label_type", ["tag", "skeleton", "mask", "points", "polygon"])
def test_a_class_no_label_takes_is_dropped(label_type: str) -> None:
    # Boxes without masks: only a label taking rectangles takes them.
    labels = [CvatLabel(1, "car", type=label_type, marker_id=5)]
    dets = make_detections([[1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 12, 12]], [0.9, 0.8, 0.7], [0, 1, 0])
    done = item_to_cvat(_image_item(make_result(dets, slot="0")), {"0": lambda i: 0}, labels, MODEL)
    assert done.annotations["shapes"] == []
    assert done.dropped == {"car": 2, "person": 1}


def test_a_dropped_track_counts_its_boxes() -> None:
    item = _video_item([0, 5, 10], [_track(1, 1, [0, 5, 10]), _track(2, 0, [0, 5])])
    frames = CvatFrames(size=3, stop_frame=10, step=5, video=True)
    done = item_to_cvat(item, {"clip": frames.of_source_frame}, [CAR], MODEL)
    assert [t["label_id"] for t in done.annotations["tracks"]] == [CAR.id]
    assert done.dropped == {"person": 3}


def test_a_label_without_its_marker_attribute_is_refused() -> None:
    with pytest.raises(ValueError, match="Person"):
        item_to_cvat(_image_item(), {}, [CAR, CvatLabel(12, "Person")], MODEL)


def _labels(label_type: str) -> list[CvatLabel]:
    return [CvatLabel(1, "car", type=label_type, marker_id=5), CvatLabel(2, "person", type=label_type, marker_id=6)]


@pytest.mark.parametrize("label_type", ["any", "polygon"])
def test_masks_become_polygons_where_the_label_takes_them(label_type: str) -> None:
    item = masked_item()  # photo: disk, ring, two parts, a box without mask; clip: a moving disk, a still ring
    to_task = {"photo": lambda i: 0, "clip": lambda i: i // 10}

    done = item_to_cvat(item, to_task, _labels(label_type), MODEL)

    shapes = done.annotations["shapes"]
    assert [s["type"] for s in shapes[:3]] == ["polygon"] * 3
    for shape, (x1, y1, x2, y2) in zip(
        shapes[:3], ((21, 21, 59, 59), (19, 29, 81, 91), (115, 75, 145, 105)), strict=True
    ):
        xs, ys = shape["points"][0::2], shape["points"][1::2]
        assert len(xs) >= 3
        assert len(xs) == len(ys)
        assert x1 <= min(xs)
        assert max(xs) <= x2
        assert y1 <= min(ys)
        assert max(ys) <= y2
    tracks = done.annotations["tracks"]
    assert len(tracks) == 2
    for track in tracks:
        assert [s["type"] for s in track["shapes"]] == ["polygon"] * 3
        assert [s["frame"] for s in track["shapes"]] == [0, 1, 2]
    if label_type == "any":  # the row without a mask is still its box
        assert shapes[3]["type"] == "rectangle"
        assert shapes[3]["points"] == [1.0, 1.0, 21.0, 11.0]
        assert not done.dropped
    else:
        assert len(shapes) == 3
        assert done.dropped == {"person": 1}


def test_masks_become_rectangles_where_the_label_takes_only_those() -> None:
    done = item_to_cvat(masked_item(), {"photo": lambda i: 0, "clip": lambda i: i // 10}, _labels("rectangle"), MODEL)
    kinds = {s["type"] for s in done.annotations["shapes"]}
    kinds |= {s["type"] for t in done.annotations["tracks"] for s in t["shapes"]}
    assert kinds == {"rectangle"}
    assert len(done.annotations["shapes"]) == 4
    assert not done.dropped


def test_a_frame_the_segmenter_left_empty_keeps_its_boxes() -> None:
    dets = make_detections([[1, 2, 30, 40], [5, 6, 70, 80]], [0.9, 0.8], [0, 1]).with_masks(Masks.empty(2))
    done = item_to_cvat(_image_item(make_result(dets, slot="0")), {"0": lambda i: 0}, _labels("any"), MODEL)
    assert [(s["type"], s["points"]) for s in done.annotations["shapes"]] == [
        ("rectangle", [1.0, 2.0, 30.0, 40.0]),
        ("rectangle", [5.0, 6.0, 70.0, 80.0]),
    ]


def test_a_masked_track_frame_without_mask_is_its_box_as_a_polygon() -> None:
    # One track type per CVAT track: a keyframe the segmenter left empty is drawn as its box's polygon.
    item = masked_item()
    clip = [f for f in item.frames if f.info.slot == "clip"]
    last = clip[-1]
    emptied = type(last)(info=last.info, detections=last.detections.with_masks(Masks.empty(len(last.detections))))
    frames = (*tuple(f for f in item.frames if f is not last), emptied)
    item = ItemPredictions(item.name, item.slots, frames)

    done = item_to_cvat(item, {"clip": lambda i: i // 10}, _labels("any"), MODEL)

    for track in done.annotations["tracks"]:
        assert [(s["frame"], s["type"], s["outside"]) for s in track["shapes"]] == [
            (0, "polygon", False),
            (1, "polygon", False),
            (2, "polygon", False),
        ]
        x1, y1, x2, y2 = (float(v) for v in np.asarray(emptied.detections.xyxy)[track["label_id"] - 1])
        assert track["shapes"][2]["points"] == [x1, y1, x2, y1, x2, y2, x1, y2]


# -- how a task numbers its frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_frame", "task_frame"),
    [
        (10, 0),  # the start
        (9, None),  # before it
        (14, 1),  # the nearest on the step grid: 13 (1.33) ...
        (16, 2),  # ... and 16 (1.67) round to the nearest
        (40, 10),  # the stop
        (41, None),  # past it
    ],
)
def test_source_frames_map_to_task_frames_through_start_stop_and_step(
    source_frame: int, task_frame: int | None
) -> None:
    frames = CvatFrames(size=11, start_frame=10, stop_frame=40, step=3, video=True)
    assert frames.of_source_frame(source_frame) == task_frame


def test_a_source_frame_past_the_task_size_is_none() -> None:
    # The stop allows it, but the task kept fewer frames (the last one rounds up past the end).
    assert CvatFrames(size=3, stop_frame=14, step=5).of_source_frame(14) is None
    assert CvatFrames(size=3).of_source_frame(2) == 2
    assert CvatFrames(size=3).of_source_frame(3) is None


@pytest.mark.parametrize(("text", "step"), [(None, 1), ("", 1), ("  ", 1), ("step=5", 5), (" step = 2 ", 2)])
def test_parse_frame_step(text: str | None, step: int) -> None:
    assert parse_frame_step(text) == step


@pytest.mark.parametrize("text", ["step=0", "step=", "step=-2", "step=x", "stride=3", "step", "range=1:5"])
def test_parse_frame_step_refuses_what_it_does_not_know(text: str) -> None:
    with pytest.raises(ValueError, match="frame_filter"):
        parse_frame_step(text)


def _key(frame: int, x: float, *, outside: bool = False) -> CvatTrackedShape:
    return {
        "type": "rectangle", "frame": frame, "points": [x, 0.0, x + 10.0, 10.0], "occluded": False,
        "outside": outside, "z_order": 0, "rotation": 0.0, "attributes": [],
    }  # fmt: skip


def _one_track(*keys: CvatTrackedShape) -> CvatAnnotations:
    track: CvatTrack = {"frame": keys[0]["frame"], "label_id": 1, "group": 0, "source": "auto", "attributes": []}
    annotations = empty_annotations()
    annotations["tracks"].append({**track, "shapes": list(keys)})
    return annotations


def test_a_job_gets_the_track_on_its_frames_with_keyframes_at_its_ends() -> None:
    whole = _one_track(_key(0, 0.0), _key(10, 100.0), _key(20, 200.0), _key(30, 300.0, outside=True))

    [first] = annotations_in_frames(whole, 0, 14)["tracks"]
    [second] = annotations_in_frames(whole, 15, 29)["tracks"]

    assert [(k["frame"], k["points"][0], k["outside"]) for k in first["shapes"]] == [
        (0, 0.0, False), (10, 100.0, False), (14, 140.0, False)  # interpolated at the job's last frame
    ]  # fmt: skip
    assert first["frame"] == 0
    assert [(k["frame"], k["points"][0], k["outside"]) for k in second["shapes"]] == [
        (15, 150.0, False), (20, 200.0, False)  # visible as the job begins: a keyframe there
    ]  # fmt: skip
    assert second["frame"] == 15
    assert whole["tracks"][0]["shapes"][0]["frame"] == 0  # the whole is left as it was


def test_a_job_after_the_track_ended_or_inside_a_gap_gets_none_of_it() -> None:
    whole = _one_track(_key(0, 0.0), _key(5, 50.0), _key(6, 50.0, outside=True), _key(20, 0.0), _key(22, 0.0))

    assert annotations_in_frames(whole, 8, 15)["tracks"] == []  # hidden from 6 to 20
    [carried] = annotations_in_frames(whole, 30, 40)["tracks"]  # never hidden after 22: the task shows it on
    assert [(k["frame"], k["points"][0], k["outside"]) for k in carried["shapes"]] == [(30, 0.0, False)]
    [late] = annotations_in_frames(whole, 6, 21)["tracks"]
    assert [(k["frame"], k["outside"]) for k in late["shapes"]] == [(20, False), (21, False)]


def test_shapes_stay_in_the_job_of_their_frame() -> None:
    annotations = empty_annotations()
    annotations["shapes"] = [
        {"type": "rectangle", "frame": f, "label_id": 1, "points": [0.0, 0.0, 1.0, 1.0], "occluded": False,
         "outside": False, "z_order": 0, "rotation": 0.0, "group": 0, "source": "auto", "attributes": []}
        for f in (3, 9, 12)
    ]  # fmt: skip
    assert [s["frame"] for s in annotations_in_frames(annotations, 5, 12)["shapes"]] == [9, 12]
