"""Item predictions survive the JSON round trip the job store puts them through, tracker ids included."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from models.masks import Masks
from service.pipeline.frames import Frame, FrameResult, MediaKind, SlotMeta, boxes_to_source
from service.pipeline.predictions import (
    ItemPredictions,
    at_stored_precision,
    item_predictions_from_json,
    item_predictions_to_json,
)
from service.pipeline.tracks import TrackerOptions
from tests.builders import linked, make_detections, make_info, make_result

META = SlotMeta("clip", "s", MediaKind.VIDEO, ("https://h/clip.mp4",), 640, 480, 30.0, 900, 2, 30.0)


def stored(item: ItemPredictions) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(item_predictions_to_json(item)))
    return loaded


def clip_frames() -> list[FrameResult]:
    return [
        make_result(
            make_detections([[1.234, 2, 30, 40.567]], [0.912345678], [3]),
            item="clip",
            slot="s",
            source="https://h/clip.mp4",
            media=MediaKind.VIDEO,
            frame_index=30,
            timestamp_s=1.0,
        ),
        make_result(
            item="clip", slot="s", source="https://h/clip.mp4", media=MediaKind.VIDEO, frame_index=60, timestamp_s=2.0
        ),
    ]


def test_round_trip() -> None:
    frames = clip_frames()
    result = stored(ItemPredictions("clip", (META,), tuple(frames)))

    assert result["slots"][0]["media"] == "video"
    assert all("tracker_id" not in record for record in result["frames"])  # untracked: as older releases stored
    back = item_predictions_from_json("clip", result)
    assert back.slots == (META,)
    assert [f.info for f in back.frames] == [f.info for f in frames]
    np.testing.assert_allclose(back.frames[0].detections.xyxy, [[1.23, 2, 30, 40.57]])
    assert back.frames[0].detections.confidence.tolist() == [np.float32(0.91235)]
    assert back.frames[0].detections.class_id.tolist() == [3]
    assert back.frames[0].detections.tracker_id is None
    assert len(back.frames[1].detections) == 0


def test_tracker_ids_are_stored_and_read_back_as_they_are() -> None:
    item = linked(ItemPredictions("clip", (META,), tuple(clip_frames())), TrackerOptions())
    result = stored(item)
    assert [record["tracker_id"] for record in result["frames"]] == [[1], []]

    # The stored ids win: a reader given another tracker does not link again
    back = item_predictions_from_json("clip", result, TrackerOptions(min_length=5))
    assert [f.detections.tracker_id.tolist() for f in back.frames if f.detections.tracker_id is not None] == [[1], []]


def test_a_result_stored_without_tracker_ids_is_linked_with_the_jobs_tracker() -> None:
    result = stored(ItemPredictions("clip", (META,), tuple(clip_frames())))
    back = item_predictions_from_json("clip", result, TrackerOptions())
    assert [f.detections.tracker_id.tolist() for f in back.frames if f.detections.tracker_id is not None] == [[1], []]
    assert item_predictions_from_json("clip", result, None).frames[0].detections.tracker_id is None


def test_stored_precision_is_what_the_store_keeps() -> None:
    frames = [at_stored_precision(f) for f in clip_frames()]
    item = ItemPredictions("clip", (META,), tuple(frames))
    back = item_predictions_from_json("clip", stored(item))
    for mine, theirs in zip(item.frames, back.frames, strict=True):
        assert mine.detections.xyxy.tobytes() == theirs.detections.xyxy.tobytes()
        assert mine.detections.confidence.tobytes() == theirs.detections.confidence.tobytes()


def test_masks_are_stored_and_read_back_with_their_rows() -> None:
    yy, xx = np.mgrid[:480, :640]
    disk = (xx - 20) ** 2 + (yy - 25) ** 2 < 10**2
    dets = make_detections([[10, 15, 30, 35], [100, 100, 120, 120]], [0.9, 0.8], [3, 1])
    dets = dets.with_masks(Masks.from_full(np.stack([disk, np.zeros_like(disk)])))
    frame = make_result(dets, item="clip", slot="s", media=MediaKind.IMAGE, frame_index=0, width=640, height=480)
    result = stored(ItemPredictions("clip", (META,), (frame,)))
    assert len(result["frames"][0]["masks"]) == 2

    back = item_predictions_from_json("clip", result).frames[0].detections
    assert back.masks is not None
    np.testing.assert_array_equal(back.masks.full(0, 480, 640), disk)
    assert back.masks.has_mask().tolist() == [True, False]
    assert "masks" not in stored(ItemPredictions("clip", (META,), tuple(clip_frames())))["frames"][0]


def test_boxes_to_source_scales_masks_with_their_boxes() -> None:
    yy, xx = np.mgrid[:240, :320]
    small = (xx - 100) ** 2 + (yy - 80) ** 2 < 20**2
    dets = make_detections([[80, 60, 120, 100]], [0.9], [0]).with_masks(Masks.from_full(small[None]))
    info = make_info(width=640, height=480)
    mapped = boxes_to_source(dets, Frame(info, np.zeros((240, 320, 3), np.uint8)))
    assert mapped.xyxy.tolist() == [[160, 120, 240, 200]]
    assert mapped.masks is not None
    yy, xx = np.mgrid[:480, :640]
    big = (xx - 200) ** 2 + (yy - 160) ** 2 < 40**2
    full = mapped.masks.full(0, 480, 640)
    assert (full & big).sum() / (full | big).sum() > 0.95
