"""A finished job's results as served: Label Studio tasks that import as they are."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

import service.jobs.outputs
from service.config import Settings
from service.convert.label_studio import parse_label_config
from service.convert.types import UnsupportedByFormatError
from service.jobs.outputs import FORMATS, job_result
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions, item_predictions_from_json, item_predictions_to_json
from service.pipeline.tracks import TrackerOptions
from service.queue.store import ItemResult, ItemState, JobRecord, JobStatus
from service.spec.job import JobSpec
from tests.builders import linked, make_detections, make_result

REQUEST = {
    "model": "onnx:/m/yolo.onnx",
    "model_version": "yolo-0123abcd",
    "class_names": ["person", "car"],
    "fps": 1.0,
    "sampling": "exact",
    "threshold": 0.5,
}
RECT_KEYS = {"id", "from_name", "to_name", "type", "original_width", "original_height", "image_rotation"}
KEYFRAME_KEYS = {"frame", "enabled", "rotation", "x", "y", "width", "height", "time"}


def job() -> JobRecord:
    return JobRecord("job-1", "t", JobSpec.from_stored(REQUEST), JobStatus.SUCCEEDED, 0.0, 0.0, 2, 2, 0, 0, 0, ())


def video_frames(slot: str, indices: list[int], fps: float) -> list[FrameResult]:
    return [
        make_result(
            make_detections([[32, 24, 96, 72]], [0.8], [1]),
            item="clip",
            slot=slot,
            source="https://h/clip.mp4",
            media=MediaKind.VIDEO,
            frame_index=i,
            timestamp_s=i / fps,
            width=320,
            height=240,
        )
        for i in indices
    ]


def image_frame(item: str, slot: str, source: str) -> FrameResult:
    return make_result(
        make_detections([[64, 48, 320, 240]], [0.9], [0]), item=item, slot=slot, source=source, width=640, height=480
    )


def results() -> list[ItemResult]:
    # "clip": a 30 fps video, two stills and a PDF; "photo": one image; "broken": failed.
    clip_slots = [
        SlotMeta("clip", "cam", MediaKind.VIDEO, ("https://h/clip.mp4",), 320, 240, 30.0, 900, 2, 30.0),
        SlotMeta("clip", "front", MediaKind.IMAGE, ("https://h/front.jpg",), 640, 480, None, 1, 1),
        SlotMeta("clip", "back", MediaKind.IMAGE, ("https://h/back.jpg",), 640, 480, None, 1, 1),
        SlotMeta("clip", "notes", MediaKind.PDF, ("https://h/notes.pdf",), 0, 0, None, 1, 0),
    ]
    clip_frames = [
        *video_frames("cam", [0, 300], 30.0),
        image_frame("clip", "front", "https://h/front.jpg"),
        image_frame("clip", "back", "https://h/back.jpg"),
    ]
    photo_slots = [SlotMeta("photo.png", "0", MediaKind.IMAGE, ("file:///d/photo.png",), 640, 480, None, 1, 1)]
    photo_frames = [image_frame("photo.png", "0", "file:///d/photo.png")]
    stored = [
        json.loads(json.dumps(item_predictions_to_json(ItemPredictions(name, tuple(slots), tuple(frames)))))
        for name, slots, frames in (("clip", clip_slots, clip_frames), ("photo.png", photo_slots, photo_frames))
    ]
    return [
        ItemResult(0, "clip", ItemState.SUCCEEDED, stored[0], None),
        ItemResult(1, "photo.png", ItemState.SUCCEEDED, stored[1], None),
        ItemResult(2, "broken", ItemState.FAILED, None, None),
    ]


def check_region(region: dict[str, Any], config_xml: str) -> None:
    """The shape the converter tests check, against the config the task is meant for."""
    (control,) = parse_label_config(config_xml).controls
    assert (region["from_name"], region["to_name"], region["type"]) == (
        control.from_name,
        control.to_name,
        control.result_type,
    )
    value = region["value"]
    if region["type"] == "rectanglelabels":
        assert set(region) >= RECT_KEYS
        assert set(value) == {"x", "y", "width", "height", "rotation", "rectanglelabels"}
        assert value["rectanglelabels"][0] in control.labels
        assert all(0 <= value[k] <= 100 for k in ("x", "y", "width", "height"))
    else:
        assert {"framesCount", "duration", "sequence", "labels"} <= set(value)
        assert value["labels"][0] in control.labels
        assert all(set(k) == KEYFRAME_KEYS for k in value["sequence"])


def test_label_studio_tasks_import_as_they_are() -> None:
    served = json.loads(json.dumps(job_result("labelstudio", job(), results(), Settings())))

    assert (served["job_id"], served["model_version"]) == ("job-1", "yolo-0123abcd")
    tasks = served["tasks"]
    assert isinstance(tasks, list)
    # One task per image or video slot: every still of a video item gets its own task.
    assert [(t["data"]["item"], t["data"]["slot"]) for t in tasks] == [
        ("clip", "cam"),
        ("clip", "front"),
        ("clip", "back"),
        ("photo.png", "0"),
    ]
    assert served["skipped_slots"] == [
        {
            "item": "clip",
            "slot": "notes",
            "media": "pdf",
            "code": "unsupported_by_format",
            "reason": "labelstudio: no Label Studio object shows a pdf slot",
        }
    ]
    assert served["skipped_items"] == []
    for task in tasks:
        assert set(task) == {"data", "predictions"}
        kind = "video" if "video" in task["data"] else "image"
        # Every $key of the task's config is in its data (LS refuses the import otherwise).
        for target in parse_label_config(served["label_configs"][kind]).targets():
            assert isinstance(task["data"][target.value_key], str)
        (prediction,) = task["predictions"]
        assert set(prediction) == {"result", "score", "model_version"}
        assert prediction["model_version"] == "yolo-0123abcd"
        assert len(prediction["result"]) == 1  # each task has its own slot's regions only
        for region in prediction["result"]:
            check_region(region, served["label_configs"][kind])

    video, front = tasks[0], tasks[1]
    assert video["data"] == {"video": "https://h/clip.mp4", "item": "clip", "slot": "cam", "fps": 30.0}
    assert front["data"]["image"] == "https://h/front.jpg"
    value = video["predictions"][0]["result"][0]["value"]
    # The config plays $fps = 30, so 10 s is LS frame 301 and the clip is 900 LS frames.
    assert [k["frame"] for k in value["sequence"]] == [1, 301]
    assert (value["framesCount"], value["duration"]) == (900, 30.0)


def test_a_video_without_a_frame_rate_is_placed_at_label_studios_24() -> None:
    meta = SlotMeta("clip", "cam", MediaKind.VIDEO, ("https://h/clip.mp4",), 320, 240, None, 900, 2, 30.0)
    frames = video_frames("cam", [0, 300], 30.0)
    stored = json.loads(json.dumps(item_predictions_to_json(ItemPredictions("clip", (meta,), tuple(frames)))))
    served = job_result("labelstudio", job(), [ItemResult(0, "clip", ItemState.SUCCEEDED, stored, None)], Settings())
    (task,) = served["tasks"]
    assert "fps" not in task["data"]  # LS then plays it at 24, and the keyframes are placed for that
    value = task["predictions"][0]["result"][0]["value"]
    assert [k["frame"] for k in value["sequence"]] == [1, 241]
    assert value["framesCount"] == 720


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_item_a_format_cannot_hold_is_listed_and_the_others_are_served(fmt: str) -> None:
    """ "clip" holds a video and two stills: no one Encord label row holds that, so Encord skips it alone."""
    served = json.loads(json.dumps(job_result(fmt, job(), results(), Settings())))
    skipped = {s["item"]: s for s in served["skipped_items"]}
    if fmt == "encord":
        assert [row["data_title"] for row in served["label_rows"]] == ["photo.png"]
        assert skipped["clip"]["code"] == "unsupported_by_format"
        assert "video" in skipped["clip"]["reason"]
        assert "image" in skipped["clip"]["reason"]
    else:
        assert skipped == {}


def job_items(results: Sequence[ItemResult], tracker: TrackerOptions | None) -> list[ItemPredictions]:
    """The succeeded items' predictions as a job's result formats read them (``item_predictions_from_json``)."""
    return [
        item_predictions_from_json(r.name, r.result, tracker)
        for r in results
        if r.state is ItemState.SUCCEEDED and r.result is not None
    ]


def darwin_failing_on(monkeypatch: pytest.MonkeyPatch, errors: dict[str, Exception]) -> dict[str, Any]:
    """The job's Darwin result, with the Darwin converter raising ``errors[item]`` for those items."""
    convert = service.jobs.outputs.item_to_darwin

    def failing(item: ItemPredictions, model: Any, **options: Any) -> Any:
        if item.name in errors:
            raise errors[item.name]
        return convert(item, model, **options)

    monkeypatch.setattr(service.jobs.outputs, "item_to_darwin", failing)
    return dict(job_result("darwin", job(), results(), Settings()))


def test_a_converter_bug_skips_its_item_alone_and_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    served = darwin_failing_on(monkeypatch, {"clip": KeyError("width")})

    assert [d["item"]["name"] for d in served["items"]] == ["photo.png"]
    assert served["skipped_items"] == [
        {"item": "clip", "code": "output_failed", "reason": "darwin: KeyError while converting the item"}
    ]
    assert "KeyError" in caplog.text


def test_a_value_error_from_a_converter_is_a_logged_bug_not_unsupported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only ``UnsupportedByFormatError`` means "this format cannot hold it"; any other ValueError is a converter bug."""
    errors = {"clip": ValueError("math domain error"), "photo.png": UnsupportedByFormatError("no row holds it")}

    served = darwin_failing_on(monkeypatch, errors)

    assert served["items"] == []
    assert served["skipped_items"] == [
        {"item": "clip", "code": "output_failed", "reason": "darwin: ValueError while converting the item"},
        {"item": "photo.png", "code": "unsupported_by_format", "reason": "darwin: no row holds it"},
    ]
    assert "math domain error" in caplog.text
    assert "photo.png" not in caplog.text


def test_tracks_are_read_as_the_worker_stored_them_and_linked_only_for_older_results() -> None:
    meta = SlotMeta("clip", "cam", MediaKind.VIDEO, ("https://h/clip.mp4",), 320, 240, 30.0, 900, 2, 30.0)
    item = ItemPredictions("clip", (meta,), tuple(video_frames("cam", [0, 300], 30.0)))
    older = json.loads(json.dumps(item_predictions_to_json(item)))  # stored without tracker ids
    tracked_item = linked(item, TrackerOptions(max_gap_s=10.0, offline=False))
    stored = json.loads(json.dumps(item_predictions_to_json(tracked_item)))
    results = [ItemResult(0, "clip", ItemState.SUCCEEDED, r, None) for r in (older, stored)]

    # Given a job whose tracker differs from the one the worker used
    served_older, served = job_items(results, TrackerOptions(min_length=5))

    def ids(item: ItemPredictions) -> list[list[int] | None]:
        return [None if f.detections.tracker_id is None else f.detections.tracker_id.tolist() for f in item.frames]

    assert ids(served) == ids(tracked_item) == [[1], [1]]  # as stored
    assert ids(served_older) == [[-1], [-1]]  # linked now, with the job's tracker: too short to keep


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_succeeded_item_whose_stored_result_is_gone_is_listed_and_the_others_are_served(fmt: str) -> None:
    gone = ItemResult(3, "gone.jpg", ItemState.SUCCEEDED, None, None)  # its object left the result store
    served = json.loads(json.dumps(job_result(fmt, job(), [*results(), gone], Settings())))
    whole = json.loads(json.dumps(job_result(fmt, job(), results(), Settings())))

    assert served["skipped_items"][-1] == {
        "item": "gone.jpg",
        "code": "result_missing",
        "reason": "the stored result of item 'gone.jpg' is gone (removed from the result store)",
    }
    assert served["skipped_items"][:-1] == whole["skipped_items"]
    if fmt == "encord":  # rows are stamped with the time they were made
        assert [r["data_title"] for r in served["label_rows"]] == [r["data_title"] for r in whole["label_rows"]]
    else:
        array = {"coco": "images", "darwin": "items", "labelstudio": "tasks"}[fmt]
        assert served[array] == whole[array]
