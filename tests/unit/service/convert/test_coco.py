"""frame_results_to_coco: pure, and what it writes loads in pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from service.convert.coco import coco_file_name, frame_results_to_coco
from service.pipeline.frames import FrameResult, MediaKind
from service.pipeline.tracks import NO_TRACK, TrackerOptions, assign_tracker_ids
from tests.builders import make_detections, make_info, make_result

NAMES = ("face", "person")


def test_image_with_boxes() -> None:
    dets = make_detections([[10, 20, 110, 70], [0, 0, 5, 5]], [0.9, 0.55], [0, 1])
    coco = frame_results_to_coco([make_result(dets)], class_names=NAMES)

    assert coco["images"] == [
        {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480, "item": "a.jpg", "slot": "0"}
    ]
    assert coco["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 100, 50], "area": 5000, "score": 0.9, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "area": 25, "score": 0.55, "iscrowd": 0},
    ]
    assert coco["categories"] == [
        {"id": 1, "name": "face", "supercategory": ""},
        {"id": 2, "name": "person", "supercategory": ""},
    ]


def test_video_frames_carry_index_time_and_source() -> None:
    results = [
        make_result(item="clip.mp4", source="/v/clip.mp4", media=MediaKind.VIDEO, frame_index=i, timestamp_s=i / 30)
        for i in (0, 30)
    ]
    images = frame_results_to_coco(results, class_names=NAMES)["images"]
    assert [(im["file_name"], im["frame_index"], im["timestamp_s"], im["video"]) for im in images] == [
        ("clip.mp4/frame_000000.jpg", 0, 0.0, "clip.mp4"),
        ("clip.mp4/frame_000030.jpg", 30, 1.0, "clip.mp4"),
    ]


@pytest.mark.parametrize(
    ("info", "multi_slot", "expected"),
    [
        (make_info(), False, "a.jpg"),
        (make_info(item="d1/a.jpg"), False, "d1/a.jpg"),  # beside d2/a.jpg
        (make_info(item="job-item-7"), False, "job-item-7/a.jpg"),
        (make_info(item="case", slot="left"), True, "case/left/a.jpg"),
        (make_info(item="seq", source="/s/f_0001.png", media=MediaKind.SEQUENCE), False, "seq/f_0001.png"),
        (make_info(item="ct", slot="scan", media=MediaKind.DICOM, frame_index=7), True, "ct/scan/frame_000007.jpg"),
    ],
)
def test_file_names_are_unique_and_readable(info: object, multi_slot: bool, expected: str) -> None:
    assert coco_file_name(info, multi_slot=multi_slot) == expected  # type: ignore[arg-type]


def test_loads_in_pycocotools(tmp_path: Path) -> None:
    results = [
        make_result(make_detections([[10, 20, 110, 70]], [0.9], [0])),
        make_result(item="b.jpg", source="/data/b.jpg"),
        make_result(
            make_detections([[1, 2, 3, 4], [5, 5, 50, 60]], [0.7, 0.6], [1, 0]), item="c.jpg", source="/data/c.jpg"
        ),
    ]
    coco = frame_results_to_coco(results, class_names=NAMES)
    path = tmp_path / "out.json"
    path.write_text(json.dumps(coco))

    gt = COCO(str(path))
    assert sorted(gt.getImgIds()) == [1, 2, 3]
    assert gt.loadCats(gt.getCatIds()) == coco["categories"]
    assert len(gt.getAnnIds(imgIds=[3])) == 2
    dt = gt.loadRes(coco["annotations"])
    assert len(dt.getAnnIds()) == 3
    assert dt.loadAnns(dt.getAnnIds(imgIds=[1]))[0]["bbox"] == [10, 20, 100, 50]


def test_video_annotations_carry_their_track_id_per_item() -> None:
    # Given two clips whose boxes are tracked separately, and a photo
    def clip(item: str, boxes: list[list[float]]) -> list[FrameResult]:
        return [
            make_result(
                make_detections(boxes, [0.9] * len(boxes), [0] * len(boxes)),
                item=item,
                media=MediaKind.VIDEO,
                frame_index=i,
            )
            for i in (0, 10)
        ]

    a = clip("a.mp4", [[0, 0, 10, 10], [100, 100, 140, 140]])
    b = clip("b.mp4", [[5, 5, 25, 25]])
    photo = make_result(make_detections([[0, 0, 10, 10]], [0.9], [0]), item="p.jpg")
    linked = assign_tracker_ids([*a, photo, *b], TrackerOptions())

    coco = frame_results_to_coco(linked, class_names=NAMES)

    # Then ids count from 1 within each item; the photo's box is in no track
    assert [ann.get("track_id") for ann in coco["annotations"]] == [1, 2, 1, 2, None, 1, 1]


def test_without_tracks_no_annotation_has_a_track_id() -> None:
    results = [
        make_result(make_detections([[0, 0, 10, 10]], [0.9], [0]), media=MediaKind.VIDEO, frame_index=i) for i in (0, 1)
    ]
    assert all("track_id" not in ann for ann in frame_results_to_coco(results, class_names=NAMES)["annotations"])


def test_a_detection_in_no_kept_track_has_no_track_id() -> None:
    blip = make_result(
        make_detections([[0, 0, 10, 10], [300, 300, 320, 320]], [0.9, 0.5], [0, 0]),
        media=MediaKind.VIDEO,
        frame_index=0,
    )
    steady = make_result(make_detections([[0, 0, 10, 10]], [0.9], [0]), media=MediaKind.VIDEO, frame_index=1)
    linked = assign_tracker_ids([blip, steady], TrackerOptions(min_length=2))
    assert linked[0].detections.tracker_id is not None
    assert linked[0].detections.tracker_id.tolist() == [1, NO_TRACK]
    coco = frame_results_to_coco(linked, class_names=NAMES)
    assert [ann.get("track_id") for ann in coco["annotations"]] == [1, None, 1]
