"""item_to_darwin: Darwin JSON 2.0 per docs darwin_v2.md, valid against the derived schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from service.convert.darwin import SCHEMA_REF, item_to_darwin, model_uuid
from service.convert.types import ModelRef
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from tests.builders import make_detections, make_result, tracked

MODEL = ModelRef(spec="builtin:centerface", version="3f2a9c", class_names=("face", "person"))
SCHEMA_NAME = "darwin_json_2.0.derived.schema.json"
# Vendored from the shared reference (examples/darwin_json_2.0.derived.schema.json).
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "data" / "examples" / SCHEMA_NAME


@cache
def darwin_validator() -> Draft202012Validator:
    """The derived Darwin JSON 2.0 schema (draft 2020-12), as docs darwin_v2.md §6 recommends."""
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Every schema violation, as 'path: message' (empty when valid); checks the JSON text, not Python objects."""
    wire = json.loads(json.dumps(document))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in darwin_validator().iter_errors(wire)]


def meta(
    slot: str,
    media: MediaKind,
    sources: Sequence[str],
    *,
    width: int = 640,
    height: int = 480,
    fps: float | None = None,
    frame_count: int = 1,
) -> SlotMeta:
    return SlotMeta(
        item="case",
        slot=slot,
        media=media,
        source_files=tuple(sources),
        width=width,
        height=height,
        fps=fps,
        frame_count=frame_count,
        planned_frames=frame_count,
    )


def frame(
    slot: str,
    media: MediaKind,
    boxes: Sequence[Sequence[float]] = (),
    scores: Sequence[float] = (),
    classes: Sequence[int] = (),
    *,
    index: int = 0,
    source: str = "/data/x",
) -> FrameResult:
    dets = make_detections(boxes, scores, classes or [0] * len(boxes))
    return make_result(dets, item="case", slot=slot, media=media, frame_index=index, source=source)


def video_frames(
    slot: str, boxes_by_index: dict[int, list[list[float]]], media: MediaKind = MediaKind.VIDEO
) -> list[FrameResult]:
    return [frame(slot, media, boxes, [0.9] * len(boxes), index=i) for i, boxes in boxes_by_index.items()]


def by_slot(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for annotation in document["annotations"]:
        out.setdefault(annotation["slot_names"][0], []).append(annotation)
    return out


def test_two_image_slots() -> None:
    item = ItemPredictions(
        name="case",
        slots=(meta("0", MediaKind.IMAGE, ["/d/L_CC.png"]), meta("1", MediaKind.IMAGE, ["/d/R_CC.png"])),
        frames=(
            frame("0", MediaKind.IMAGE, [[10.5, 20, 110.25, 70]], [0.91234567], [0]),
            frame("1", MediaKind.IMAGE, [[0, 0, 5, 5], [1, 2, 3, 4]], [0.5, 0.6], [1, 0]),
        ),
    )
    doc = item_to_darwin(item, MODEL)

    assert schema_errors(doc) == []
    assert (doc["version"], doc["schema_ref"], doc["properties"]) == ("2.0", SCHEMA_REF, [])
    assert doc["item"] == {
        "name": "case",
        "path": "/",
        "slots": [
            {
                "type": "image",
                "slot_name": "0",
                "width": 640,
                "height": 480,
                "source_files": [{"file_name": "L_CC.png"}],
            },
            {
                "type": "image",
                "slot_name": "1",
                "width": 640,
                "height": 480,
                "source_files": [{"file_name": "R_CC.png"}],
            },
        ],
    }
    first = doc["annotations"][0]
    assert first == {
        "id": first["id"],
        "name": "face",
        "slot_names": ["0"],
        "bounding_box": {"x": 10.5, "y": 20.0, "w": 99.75, "h": 50.0},
        "inference": {
            "confidence": 0.91235,
            "model": {"id": model_uuid(MODEL), "name": "builtin:centerface@3f2a9c", "type": "external"},
        },
    }
    assert [(a["name"], a["slot_names"]) for a in doc["annotations"]] == [
        ("face", ["0"]),
        ("person", ["1"]),
        ("face", ["1"]),
    ]


def test_ids_are_uuids_unique_and_the_same_on_a_rerun() -> None:
    item = ItemPredictions(
        name="case",
        slots=(meta("0", MediaKind.IMAGE, ["/d/a.png"]),),
        frames=(frame("0", MediaKind.IMAGE, [[0, 0, 5, 5], [0, 0, 5, 5], [1, 1, 9, 9]], [0.5, 0.5, 0.7]),),
    )
    ids = [a["id"] for a in item_to_darwin(item, MODEL)["annotations"]]
    assert ids == [a["id"] for a in item_to_darwin(item, MODEL)["annotations"]]
    assert len(set(ids)) == 3
    assert all(uuid.UUID(i).version == 5 for i in ids)
    renamed = ItemPredictions(name="other", slots=item.slots, frames=item.frames)
    assert not set(ids) & {a["id"] for a in item_to_darwin(renamed, MODEL)["annotations"]}


def test_video_and_image_slots_with_tracks() -> None:
    # Given a 30 fps video sampled every 15 frames with a face in frames 0-45, and a floor plan image
    frames = [
        *video_frames(
            "video", {0: [[100, 100, 150, 160]], 15: [[104, 100, 154, 160]], 30: [], 45: [[112, 101, 162, 161]]}
        ),
        frame("plan", MediaKind.IMAGE, [[1, 2, 11, 22]], [0.8], [1]),
    ]
    item = ItemPredictions(
        name="site_walkthrough",
        slots=(
            meta(
                "video",
                MediaKind.VIDEO,
                ["s3://bucket/clips/walk.mp4"],
                width=1920,
                height=1080,
                fps=30.0,
                frame_count=60,
            ),
            meta("plan", MediaKind.IMAGE, ["https://example.com/plan.png"]),
        ),
        frames=tuple(frames),
    )

    doc = item_to_darwin(tracked(item), MODEL)

    assert schema_errors(doc) == []
    assert doc["item"]["slots"] == [
        {
            "type": "video",
            "slot_name": "video",
            "width": 1920,
            "height": 1080,
            "fps": 30.0,
            "frame_count": 60,
            "source_files": [{"file_name": "walk.mp4", "url": "s3://bucket/clips/walk.mp4"}],
        },
        {
            "type": "image",
            "slot_name": "plan",
            "width": 640,
            "height": 480,
            "source_files": [{"file_name": "plan.png", "url": "https://example.com/plan.png"}],
        },
    ]
    (track,) = by_slot(doc)["video"]
    assert list(track["frames"]) == ["0", "15", "45"]  # the missed sample (30) is interpolated by V7
    assert track["frames"]["15"]["bounding_box"] == {"x": 104.0, "y": 100.0, "w": 50.0, "h": 60.0}
    assert all(f["keyframe"] is True and f["inference"]["confidence"] == 0.9 for f in track["frames"].values())
    assert track["ranges"] == [[0, 46]]  # end exclusive
    assert (track["interpolated"], track["interpolate_algorithm"]) == (True, "linear-1.1")
    assert "bounding_box" not in track
    (plan,) = by_slot(doc)["plan"]
    assert (plan["name"], plan["bounding_box"]) == ("person", {"x": 1.0, "y": 2.0, "w": 10.0, "h": 20.0})


def test_video_without_tracks_gets_one_single_frame_annotation_per_detection() -> None:
    frames = video_frames("0", {0: [[0, 0, 10, 10]], 12: [[1, 0, 11, 10], [50, 50, 60, 60]]})
    item = ItemPredictions(
        name="clip.mp4",
        slots=(meta("0", MediaKind.VIDEO, ["/v/clip.mp4"], fps=25.0, frame_count=25),),
        frames=tuple(frames),
    )
    doc = item_to_darwin(item, MODEL)

    assert schema_errors(doc) == []
    assert [(list(a["frames"]), a["ranges"], a["interpolated"]) for a in doc["annotations"]] == [
        (["0"], [[0, 1]], False),
        (["12"], [[12, 13]], False),
        (["12"], [[12, 13]], False),
    ]


def test_static_object_in_a_video_is_one_annotation_on_exactly_the_sampled_frames() -> None:
    sampled = [0, 25, 50, 75, 100]
    frames = video_frames("0", {i: [[40, 30, 90, 95]] for i in sampled})
    item = ItemPredictions(
        name="still.mp4",
        slots=(meta("0", MediaKind.VIDEO, ["/v/still.mp4"], fps=25.0, frame_count=101),),
        frames=tuple(frames),
    )
    doc = item_to_darwin(tracked(item), MODEL)

    assert schema_errors(doc) == []
    (annotation,) = doc["annotations"]
    assert list(annotation["frames"]) == [str(i) for i in sampled]
    assert annotation["ranges"] == [[0, 101]]


def test_multi_frame_dicom_and_pdf() -> None:
    frames = video_frames("scan", {0: [[5, 5, 20, 20]], 1: [[5, 5, 20, 20]], 2: []}, media=MediaKind.DICOM)
    item = ItemPredictions(
        name="patient-17",
        slots=(
            meta("scan", MediaKind.DICOM, ["/d/ct.dcm"], width=512, height=512, fps=2.0, frame_count=3),
            meta("report", MediaKind.PDF, ["/d/report.pdf"], width=0, height=0, frame_count=0),
        ),
        frames=tuple(frames),
    )
    doc = item_to_darwin(tracked(item), MODEL)

    assert schema_errors(doc) == []
    assert doc["item"]["slots"] == [
        {
            "type": "dicom",
            "slot_name": "scan",
            "width": 512,
            "height": 512,
            "fps": None,
            "frame_count": 3,
            "source_files": [{"file_name": "ct.dcm"}],
        },
        {"type": "pdf", "slot_name": "report", "source_files": [{"file_name": "report.pdf"}]},
    ]
    (annotation,) = doc["annotations"]
    assert (annotation["slot_names"], list(annotation["frames"]), annotation["ranges"]) == (
        ["scan"],
        ["0", "1"],
        [[0, 2]],
    )


def test_single_image_dicom_still_uses_video_style_frames() -> None:
    # darwin_v2.md §2: DICOM annotations always use frames keyed by slice index, even for one slice.
    item = ItemPredictions(
        name="xray.dcm",
        slots=(meta("0", MediaKind.DICOM, ["/d/xray.dcm"]),),
        frames=(frame("0", MediaKind.DICOM, [[1, 1, 4, 4]], [0.7]),),
    )
    for linked in (item, tracked(item)):
        doc = item_to_darwin(linked, MODEL)
        assert schema_errors(doc) == []
        assert [(list(a["frames"]), a["ranges"]) for a in doc["annotations"]] == [(["0"], [[0, 1]])]


def test_image_sequence_is_a_video_slot_indexed_by_list_position() -> None:
    files = [f"/seq/f_{i:04d}.png" for i in range(3)]
    frames = [frame("0", MediaKind.SEQUENCE, [[0, 0, 9, 9]], [0.8], index=i, source=files[i]) for i in range(3)]
    item = ItemPredictions(
        name="seq", slots=(meta("0", MediaKind.SEQUENCE, files, frame_count=3),), frames=tuple(frames)
    )
    doc = item_to_darwin(tracked(item), MODEL)

    assert schema_errors(doc) == []
    slot = doc["item"]["slots"][0]
    assert (slot["type"], slot["frame_count"], "fps" in slot) == ("video", 3, False)
    assert [f["file_name"] for f in slot["source_files"]] == ["f_0000.png", "f_0001.png", "f_0002.png"]
    assert [list(a["frames"]) for a in doc["annotations"]] == [["0", "1", "2"]]


def test_item_path_and_empty_item() -> None:
    item = ItemPredictions(name="empty.png", slots=(meta("0", MediaKind.IMAGE, ["/d/empty.png"]),), frames=())
    doc = item_to_darwin(item, MODEL, path="/screening/2024")
    assert schema_errors(doc) == []
    assert (doc["item"]["path"], doc["annotations"]) == ("/screening/2024", [])


def test_class_id_the_model_does_not_name_still_gets_a_class() -> None:
    item = ItemPredictions(
        name="a.png",
        slots=(meta("0", MediaKind.IMAGE, ["/d/a.png"]),),
        frames=(frame("0", MediaKind.IMAGE, [[0, 0, 1, 1]], [0.5], [7]),),
    )
    assert item_to_darwin(item, MODEL)["annotations"][0]["name"] == "class_7"


def test_validator_catches_a_bad_document() -> None:
    # Guard against a schema that accepts anything: a box with no slot_names must fail.
    bad = {"version": "2.0", "item": {"name": "x", "path": "/"}, "annotations": [{"name": "a", "bounding_box": {}}]}
    assert schema_errors(bad)
