"""item_to_encord_label_row: the shape of Encord's own rows (examples/encord_label_row_*.json, written by the
SDK), deterministic object hashes, and re-runs that replace our objects and keep everybody else's."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import locale
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from service.convert.encord import (
    EncordOntology,
    build_encord_label_row,
    default_ontology,
    format_encord_time,
    item_to_encord_label_row,
    iter_object_entries,
    model_tag,
    object_hash,
)
from service.convert.types import ModelRef
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, TrackBox
from tests.builders import make_detections, make_result, with_tracks

EXAMPLES = Path(__file__).resolve().parents[3] / "data" / "examples"  # copies of ../shared/reference/examples
WHEN = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
STAMP = "Sun, 01 Jun 2025 12:00:00 UTC"
SVC = "preannotator@example.com"
MODEL = ModelRef(spec="onnx:/models/yolo.onnx", version="abc123", class_names=("car", "person", "dog"))
ONTOLOGY = EncordOntology.from_json(
    {
        "objects": [
            {"id": "1", "name": "Car", "color": "#D33115", "shape": "bounding_box", "featureNodeHash": "carBBox1"},
            {"id": "2", "name": "Person", "color": "#FCDC00", "shape": "bounding_box", "featureNodeHash": "persBBx1"},
            {"id": "3", "name": "Lesion", "color": "#68BC00", "shape": "polygon", "featureNodeHash": "lesPoly1"},
        ],
        "classifications": [],
    }
)


def example(name: str) -> dict[str, Any]:
    path = EXAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} is not available")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def slot(name: str = "0", media: MediaKind = MediaKind.IMAGE, w: int = 1920, h: int = 1080, **kw: Any) -> SlotMeta:
    source = kw.pop("source", f"/data/{name}.jpg" if media is MediaKind.IMAGE else f"/data/{name}.mp4")
    return SlotMeta(
        item="item",
        slot=name,
        media=media,
        source_files=(source,),
        width=w,
        height=h,
        fps=kw.pop("fps", None),
        frame_count=kw.pop("frame_count", 1),
        planned_frames=1,
        duration_s=kw.pop("duration_s", None),
    )


def image_item(boxes: list[list[float]], scores: list[float], classes: list[int], w: int = 1920, h: int = 1080):  # type: ignore[no-untyped-def]
    result = make_result(make_detections(boxes, scores, classes), item="item", width=w, height=h)
    return ItemPredictions(name="item", slots=(slot(w=w, h=h),), frames=(result,))


def video_item(per_frame: dict[int, tuple[list[list[float]], list[float], list[int]]]) -> ItemPredictions:
    meta = slot(media=MediaKind.VIDEO, w=1280, h=720, fps=25.0, frame_count=100, duration_s=4.0)
    frames = tuple(
        make_result(
            make_detections(*per_frame[i]),
            item="item",
            media=MediaKind.VIDEO,
            frame_index=i,
            timestamp_s=i / 25,
            width=1280,
            height=720,
            source="/data/0.mp4",
        )
        for i in sorted(per_frame)
    )
    return ItemPredictions(name="item", slots=(meta,), frames=frames)


def track(track_id: int, class_id: int, boxes: dict[int, tuple[list[float], float]]) -> Track:
    return Track(
        track_id=track_id,
        slot="0",
        class_id=class_id,
        boxes=tuple(TrackBox(f, f / 25, tuple(xyxy), score) for f, (xyxy, score) in sorted(boxes.items())),  # type: ignore[arg-type]
    )


def build(item: ItemPredictions, *, tracks: list[Track] | None = None, **kw: Any) -> Any:
    """The row of ``item``, its video boxes in ``tracks`` (as the tracker would have linked them); None: untracked."""
    linked = item if tracks is None else with_tracks(item, tracks)
    return build_encord_label_row(linked, MODEL, ONTOLOGY, created_by=SVC, created_at=WHEN, **kw)


def objects(row: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return list(iter_object_entries(row))


# -- shape ---------------------------------------------------------------------------------------------------------


def test_image_row_has_the_sdk_shape() -> None:
    ref = example("encord_label_row_image.json")
    item = image_item([[768, 594, 960, 864], [192, 324, 422.4, 864]], [0.87, 0.64], [0, 1])
    row = item_to_encord_label_row(item, MODEL, ONTOLOGY, created_by=SVC, created_at=WHEN)

    assert row.keys() == ref.keys()
    assert (row["data_type"], row["label_status"], row["annotation_task_status"]) == (
        "image",
        "LABEL_IN_PROGRESS",
        "QUEUED",
    )
    (unit,) = row["data_units"].values()
    (ref_unit,) = ref["data_units"].values()
    assert unit.keys() == ref_unit.keys()
    assert (unit["data_sequence"], unit["width"], unit["height"], unit["data_type"]) == (0, 1920, 1080, "image/jpeg")
    assert unit["labels"].keys() == {"objects", "classifications"}
    car, person = unit["labels"]["objects"]
    ref_car = ref_unit["labels"]["objects"][0]
    assert list(car) == list(ref_car)  # same keys, same order as the SDK writes them
    expected = {k: v for k, v in ref_car.items() if k != "objectHash"}
    assert {k: v for k, v in car.items() if k != "objectHash"} == expected
    assert person["boundingBox"] == {"h": 0.5, "w": 0.12, "x": 0.1, "y": 0.3}
    assert (person["featureHash"], person["name"], person["value"]) == ("persBBx1", "Person", "person")
    assert row["object_answers"] == {
        h: {"classifications": [], "objectHash": h} for h in (car["objectHash"], person["objectHash"])
    }


def test_video_row_with_tracks_has_one_hash_per_track() -> None:
    ref = example("encord_label_row_video.json")
    item = video_item({})
    tracks = [
        track(
            1,
            0,
            {0: ([128, 360, 256, 504], 0.8), 1: ([153.6, 360, 281.6, 504], 0.85), 2: ([179.2, 360, 307.2, 504], 0.9)},
        ),
        track(2, 1, {10: ([768, 288, 896, 504], 0.55), 11: ([768, 288, 896, 504], 0.55)}),
    ]
    built = build(item, tracks=tracks)
    row = built.row

    assert row.keys() == ref.keys()
    (unit,) = row["data_units"].values()
    (ref_unit,) = ref["data_units"].values()
    assert unit.keys() == ref_unit.keys()
    assert (unit["data_fps"], unit["data_duration"], unit["data_sequence"]) == (25.0, 4.0, 0)
    assert list(unit["labels"]) == list(ref_unit["labels"]) == ["0", "1", "2", "10", "11"]
    for frame, ref_frame in zip(unit["labels"].values(), ref_unit["labels"].values(), strict=True):
        assert frame.keys() == ref_frame.keys()
        (entry,), (ref_entry,) = frame["objects"], ref_frame["objects"]
        assert list(entry) == list(ref_entry)
        assert entry["boundingBox"] == pytest.approx(ref_entry["boundingBox"])
        assert entry["featureHash"] == ref_entry["featureHash"]
        assert entry["confidence"] == pytest.approx(ref_entry["confidence"])
    car_hashes = {e["objectHash"] for f, e in objects(row) if f in ("0", "1", "2")}
    person_hashes = {e["objectHash"] for f, e in objects(row) if f in ("10", "11")}
    assert len(car_hashes) == len(person_hashes) == 1
    assert car_hashes != person_hashes
    assert row["object_answers"].keys() == car_hashes | person_hashes
    assert (built.stats.objects, built.stats.object_frames) == (2, 5)


def test_video_without_tracks_writes_one_object_per_box() -> None:
    item = video_item(
        {0: ([[0, 0, 64, 72]], [0.9], [0]), 3: ([[0, 0, 64, 72], [640, 360, 1280, 720]], [0.8, 0.7], [0, 1])}
    )
    row = build(item).row
    entries = objects(row)
    assert [f for f, _ in entries] == ["0", "3", "3"]
    assert len({e["objectHash"] for _, e in entries}) == 3
    assert entries[0][1]["boundingBox"] == {"h": 0.1, "w": 0.05, "x": 0.0, "y": 0.0}


def test_image_group_maps_slots_to_units_in_order() -> None:
    slots = (slot("0", w=200, h=100), slot("1", w=400, h=300, source="/d/b.png"))
    frames = (
        make_result(make_detections([[0, 0, 100, 50]], [0.9], [0]), item="item", slot="0", width=200, height=100),
        make_result(make_detections([[0, 0, 40, 30]], [0.8], [1]), item="item", slot="1", width=400, height=300),
    )
    row = build(ItemPredictions("item", slots, frames)).row
    assert row["data_type"] == "img_group"
    units = list(row["data_units"].values())
    assert [(u["data_sequence"], u["data_type"], u["width"]) for u in units] == [
        ("0", "image/jpeg", 200),
        ("1", "image/png", 400),
    ]
    assert units[0]["labels"]["objects"][0]["boundingBox"] == {"h": 0.5, "w": 0.5, "x": 0.0, "y": 0.0}
    assert units[1]["labels"]["objects"][0]["boundingBox"] == {"h": 0.1, "w": 0.1, "x": 0.0, "y": 0.0}


def test_dicom_is_frame_keyed_without_fps() -> None:
    meta = slot(media=MediaKind.DICOM, w=512, h=512, source="/d/ct.dcm", frame_count=40)
    result = make_result(
        make_detections([[0, 0, 256, 256]], [0.7], [0]),
        item="item",
        media=MediaKind.DICOM,
        frame_index=17,
        width=512,
        height=512,
    )
    row = build(ItemPredictions("item", (meta,), (result,))).row
    (unit,) = row["data_units"].values()
    assert row["data_type"] == "dicom"
    assert list(unit["labels"]) == ["17"]
    assert "data_fps" not in unit


def test_pdf_slots_are_ignored_and_other_mixes_refused() -> None:
    pdf = SlotMeta("item", "spec", MediaKind.PDF, ("/d/a.pdf",), 0, 0, None, 0, 0)
    item = image_item([[0, 0, 10, 10]], [0.9], [0])
    assert build(ItemPredictions("item", (*item.slots, pdf), item.frames)).row["data_type"] == "image"
    video = slot("1", media=MediaKind.VIDEO)
    with pytest.raises(ValueError, match="one media"):
        build(ItemPredictions("item", (*item.slots, video), item.frames))


# -- classes -------------------------------------------------------------------------------------------------------


def test_unmapped_classes_are_dropped_and_counted() -> None:
    built = build(image_item([[0, 0, 10, 10], [0, 0, 20, 20], [0, 0, 30, 30]], [0.9, 0.8, 0.7], [2, 2, 0]))
    assert built.stats.unmapped == {"dog": 2}
    assert [e["name"] for _, e in objects(built.row)] == ["Car"]


@pytest.mark.parametrize(
    ("class_name", "aliases", "expected"),
    [
        ("Car", {}, "carBBox1"),  # exact
        ("car", {}, "carBBox1"),  # case-insensitive
        ("PERSON", {}, "persBBx1"),
        ("lesion", {}, None),  # a polygon class cannot take boxes
        ("automobile", {"automobile": "Car"}, "carBBox1"),  # alias by name
        ("human", {"human": "persBBx1"}, "persBBx1"),  # alias by featureNodeHash
        ("truck", {}, None),
    ],
)
def test_class_resolution(class_name: str, aliases: dict[str, str], expected: str | None) -> None:
    ontology = EncordOntology.from_json(
        ONTOLOGY.to_json() | {"objects": ONTOLOGY.to_json()["objects"]}, aliases=aliases
    )
    found = ontology.resolve(class_name)
    assert (found.feature_hash if found else None) == expected


def test_ambiguous_titles_resolve_to_nothing_and_bad_aliases_fail_fast() -> None:
    twice = EncordOntology.from_json(
        {"objects": [{"name": "Car", "featureNodeHash": h, "shape": "bounding_box"} for h in ("a", "b")]}
    )
    assert twice.resolve("Car") is None
    with pytest.raises(ValueError, match="no bounding_box object"):
        EncordOntology.from_json(ONTOLOGY.to_json(), aliases={"dog": "Horse"})
    with pytest.raises(ValueError, match="featureNodeHash"):
        EncordOntology.from_json({"objects": [{"name": "Car"}]})


def test_ontology_accepts_wrapped_structures() -> None:
    for wrapped in ({"structure": ONTOLOGY.to_json()}, {"editor_ontology": ONTOLOGY.to_json()}):
        assert EncordOntology.from_json(wrapped).objects == ONTOLOGY.objects


def test_default_ontology_is_stable_and_complete() -> None:
    first, again = default_ontology(MODEL.class_names), default_ontology(MODEL.class_names)
    assert first == again
    assert [o.name for o in first.objects] == ["car", "person", "dog"]
    assert all(len(o.feature_hash) == 8 and o.shape == "bounding_box" for o in first.objects)
    assert len({o.feature_hash for o in first.objects}) == 3
    row = build_encord_label_row(image_item([[0, 0, 10, 10]], [0.9], [2]), MODEL, first).row
    assert [e["featureHash"] for _, e in objects(row)] == [first.objects[2].feature_hash]


# -- geometry and provenance -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xyxy", "expected"),
    [
        ([0, 0, 192, 108], {"h": 0.1, "w": 0.1, "x": 0.0, "y": 0.0}),
        ([-96, -54, 96, 54], {"h": 0.05, "w": 0.05, "x": 0.0, "y": 0.0}),  # clipped to the frame
        ([1824, 1026, 2016, 1134], {"h": 0.05, "w": 0.05, "x": 0.95, "y": 0.95}),
        ([2000, 0, 2100, 50], None),  # outside: dropped
        ([10, 10, 10, 50], None),  # zero width
    ],
)
def test_boxes_are_normalised_top_left_and_clipped(xyxy: list[float], expected: dict[str, float] | None) -> None:
    built = build(image_item([xyxy], [0.5], [0]))
    boxes = [e["boundingBox"] for _, e in objects(built.row)]
    assert boxes == ([expected] if expected else [])
    assert built.stats.degenerate == (0 if expected else 1)


def test_provenance_fields() -> None:
    ((_, entry),) = objects(build(image_item([[0, 0, 10, 10]], [0.912345678], [0])).row)
    assert entry["manualAnnotation"] is False
    assert (entry["createdBy"], entry["lastEditedBy"]) == (SVC, SVC)
    assert (entry["createdAt"], entry["lastEditedAt"]) == (STAMP, STAMP)
    assert entry["confidence"] == 0.912346


def test_time_format_ignores_the_locale() -> None:
    # The format is built by hand either way; a German locale only makes a regression visible where it exists.
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_TIME, "de_DE.UTF-8")
    try:
        assert format_encord_time(WHEN) == STAMP
        assert format_encord_time(datetime(2026, 11, 23, 1, 41, 28)) == "Mon, 23 Nov 2026 01:41:28 UTC"
    finally:
        locale.setlocale(locale.LC_TIME, "C")


def test_hashes_are_deterministic_and_tagged_by_model() -> None:
    item = image_item([[0, 0, 10, 10], [5, 5, 50, 50]], [0.9, 0.8], [0, 1])
    first = [e["objectHash"] for _, e in objects(build(item).row)]
    again = [e["objectHash"] for _, e in objects(build(item).row)]
    assert first == again
    assert all(len(h) == 8 and h.startswith(model_tag(MODEL)) for h in first)
    newer = ModelRef(MODEL.spec, "def456", MODEL.class_names)
    assert object_hash(newer, "item", "0/track/1") != object_hash(MODEL, "item", "0/track/1")
    assert object_hash(newer, "item", "0/track/1")[:2] == model_tag(MODEL)  # same model, new weights: same tag
    other = ModelRef("builtin:centerface", "abc123", MODEL.class_names)
    assert model_tag(other) != model_tag(MODEL)


# -- re-runs: replace ours, keep theirs ------------------------------------------------------------------------------


def human_box(obj_hash: str = "HUMAN001", frame_user: str = "annotator@example.com") -> dict[str, Any]:
    return {
        "name": "Person",
        "color": "#FCDC00",
        "shape": "bounding_box",
        "value": "person",
        "createdAt": STAMP,
        "createdBy": frame_user,
        "confidence": 1.0,
        "objectHash": obj_hash,
        "featureHash": "persBBx1",
        "manualAnnotation": True,
        "lastEditedAt": STAMP,
        "lastEditedBy": frame_user,
        "boundingBox": {"h": 0.1, "w": 0.1, "x": 0.5, "y": 0.5},
    }


def test_rerun_replaces_our_objects_and_keeps_human_ones() -> None:
    item = image_item([[0, 0, 192, 108], [960, 540, 1152, 648]], [0.9, 0.8], [0, 1])
    first = build(item).row
    first["data_units"][next(iter(first["data_units"]))]["labels"]["objects"].append(human_box())
    first["object_answers"]["HUMAN001"] = {"classifications": [], "objectHash": "HUMAN001"}
    first["classification_answers"] = {"cls1": {"classificationHash": "cls1"}}

    # The model now sees only the car: the old person box of ours goes, the person's own box stays.
    second = build(image_item([[0, 0, 192, 108]], [0.95], [0]), existing_row=first)
    entries = [e for _, e in objects(second.row)]
    assert sorted(e["objectHash"] for e in entries) == sorted([objects(first)[0][1]["objectHash"], "HUMAN001"])
    assert [e["confidence"] for e in entries if e["objectHash"] != "HUMAN001"] == [0.95]
    assert second.row["object_answers"].keys() == {e["objectHash"] for e in entries}
    assert second.row["classification_answers"] == {"cls1": {"classificationHash": "cls1"}}
    assert (second.stats.replaced, second.stats.kept, second.stats.objects) == (2, 1, 1)
    # And again: nothing piles up.
    third = build(image_item([[0, 0, 192, 108]], [0.95], [0]), existing_row=second.row)
    assert third.row == second.row


def test_rerun_on_the_sdk_example_keeps_everything_not_ours() -> None:
    ref = example("encord_label_row_image.json")
    before = copy.deepcopy(ref)
    built = build(image_item([[0, 0, 192, 108]], [0.9], [0]), existing_row=ref)
    assert ref == before  # the input is not mutated
    hashes = [e["objectHash"] for _, e in objects(built.row)]
    # The example's objects carry createdBy preannotator@example.com (= SVC) but not our model's tag.
    assert hashes[:3] == ["IJe/t6/n", "90GEdv+f", "6v8IYaOz"]
    assert len(hashes) == 4
    assert hashes[3].startswith(model_tag(MODEL))
    assert built.row["object_answers"]["IJe/t6/n"] == ref["object_answers"]["IJe/t6/n"]
    assert built.row["classification_answers"] == ref["classification_answers"]
    assert (built.row["label_hash"], built.row["data_hash"]) == (ref["label_hash"], ref["data_hash"])


def test_an_object_a_person_edited_is_theirs_now() -> None:
    item = video_item({})
    tracks = [track(1, 0, {0: ([0, 0, 128, 72], 0.9), 1: ([10, 0, 138, 72], 0.9)})]
    first = build(item, tracks=tracks).row
    unit = next(iter(first["data_units"].values()))
    unit["labels"]["1"]["objects"][0] |= {
        "lastEditedBy": "annotator@example.com",
        "boundingBox": {"h": 0.2, "w": 0.2, "x": 0.3, "y": 0.3},
    }
    edited = copy.deepcopy(unit["labels"])

    second = build(item, tracks=tracks, existing_row=first)
    assert next(iter(second.row["data_units"].values()))["labels"] == edited
    assert (second.stats.edited_skipped, second.stats.replaced, second.stats.objects) == (1, 0, 0)


def test_objects_of_other_models_and_accounts_are_kept() -> None:
    item = image_item([[0, 0, 10, 10]], [0.9], [0])
    other_model = ModelRef("builtin:other", "1", MODEL.class_names)
    theirs = build_encord_label_row(item, other_model, ONTOLOGY, created_by=SVC, created_at=WHEN).row
    other_account = build_encord_label_row(
        item, MODEL, ONTOLOGY, created_by="someone@example.com", created_at=WHEN, existing_row=theirs
    ).row
    ours = build(item, existing_row=other_account)
    assert ours.stats.kept == 2
    assert len(objects(ours.row)) == 3


def test_video_rerun_drops_frames_left_empty() -> None:
    item = video_item({})
    first = build(item, tracks=[track(1, 0, {5: ([0, 0, 128, 72], 0.9)})]).row
    second = build(item, tracks=[track(1, 0, {7: ([0, 0, 128, 72], 0.9)})], existing_row=first).row
    assert list(next(iter(second["data_units"].values()))["labels"]) == ["7"]


def test_existing_rows_that_do_not_fit_are_refused() -> None:
    ref = example("encord_label_row_video.json")
    with pytest.raises(ValueError, match="cannot take a image slot"):
        build(image_item([[0, 0, 10, 10]], [0.9], [0]), existing_row=ref)
    with pytest.raises(ValueError, match="not supported"):
        build(image_item([[0, 0, 10, 10]], [0.9], [0]), existing_row=ref | {"data_type": "audio"})
    with pytest.raises(ValueError, match="no data_units"):
        build(image_item([[0, 0, 10, 10]], [0.9], [0]), existing_row={"data_type": "image"})


# -- the SDK reads what we write ------------------------------------------------------------------------------------


def _sdk_label_row(row: dict[str, Any]) -> Any:
    return sdk_label_row(row, ONTOLOGY)


def sdk_label_row(row: dict[str, Any], ontology_of_row: EncordOntology) -> Any:
    """A detached SDK row built from the media fields our row itself carries, then fed our labels."""
    from encord.objects.ontology_labels_impl import LabelRowV2
    from encord.objects.ontology_structure import OntologyStructure
    from encord.ontology import Ontology
    from encord.orm.ontology import Ontology as OrmOntology
    from encord.orm.storage import CustomerProvidedImageMetadata, CustomerProvidedVideoMetadata

    structure = OntologyStructure.from_dict(ontology_of_row.to_json())
    ontology = Ontology(OrmOntology("t", structure, "h", WHEN, WHEN), None)  # type: ignore[arg-type]
    (unit,) = row["data_units"].values()
    size = {"width": unit["width"], "height": unit["height"], "file_size": 1, "mime_type": unit["data_type"]}
    meta: Any = (
        CustomerProvidedVideoMetadata(fps=unit["data_fps"], duration=unit["data_duration"], **size)
        if row["data_type"] == "video"
        else CustomerProvidedImageMetadata(**size)
    )
    label_row = LabelRowV2.from_media_metadata(ontology, meta)
    label_row.from_labels_dict(row)
    return label_row


def _clip_meta(directory: Path, frames: int, fps: int | Fraction) -> SlotMeta:
    """The slot metadata the video pipeline itself reports for a generated clip."""
    from service.pipeline.options import MediaLimits, SamplingOptions
    from service.pipeline.video import VideoReader
    from service.samples import write_video

    path = directory / "clip.mp4"
    write_video(path, width_px=128, height_px=96, fps=fps, duration_s=frames / fps, gop=fps, bframes=0)
    reader = VideoReader("item", "0", path, SamplingOptions(), MediaLimits())
    try:
        return reader.meta
    finally:
        reader.close()


# 7 / 25 and 15 / (30000 / 1001) are a float step long: ceil(fps * (frames / fps)) is one frame too many
@pytest.mark.parametrize(
    ("frames", "fps"), [(100, 25), (7, 25), (15, Fraction(30000, 1001)), (25, Fraction(24000, 1001)), (1, 30)]
)
def test_the_encord_sdk_round_trips_our_rows(tmp_path: Path, frames: int, fps: int | Fraction) -> None:
    """encord 0.1.211 parses our rows, read with their own media fields, and serialises them back to the same JSON;
    a track on the clip's last frame is inside the frame count the SDK derives (skipped without the SDK)."""
    pytest.importorskip("encord")
    meta = _clip_meta(tmp_path, frames=frames, fps=fps)
    assert (meta.frame_count, meta.fps) == (frames, pytest.approx(float(fps)))
    last = meta.frame_count - 1
    video = ItemPredictions(name="item", slots=(dataclasses.replace(meta, slot="0"),), frames=())
    tracks = [track(1, 0, {0: ([12, 48, 24, 67], 0.8), last: ([17, 48, 29, 67], 0.9)})]
    image = build(image_item([[768, 594, 960, 864], [192, 324, 422.4, 864]], [0.87, 0.64], [0, 1])).row
    for row in (image, build(video, tracks=tracks).row):
        label_row = _sdk_label_row(row)
        again = label_row.to_encord_dict()
        assert again["data_units"] == row["data_units"]
        assert again["object_answers"] == row["object_answers"]
        instances = label_row.get_object_instances()
        assert all(not a.manual_annotation for i in instances for a in i.get_annotations())
        assert {i.object_hash for i in instances} == set(row["object_answers"])
    assert label_row.number_of_frames == meta.frame_count
    assert {a.frame for i in label_row.get_object_instances() for a in i.get_annotations()} == {0, last}
