"""Every input format loads into the normalised type; bad input names the file and carries a code."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from service.errors import ErrorCode, PreannotateError
from service.evaluate.inputs import (
    BENCHMARK,
    CANDIDATE,
    InputSpec,
    detect_format,
    documents_to_datasets,
    load_benchmark,
    load_candidates,
    text_to_input_spec,
)
from service.evaluate.types import Dataset, ShapeKind, Units
from tests.unit.service.evaluate.fixtures import (
    CAR,
    coco,
    coco_results,
    darwin_box,
    darwin_item,
    encord_box,
    encord_row,
    ls_rect,
    ls_task,
)

DATA = Path(__file__).resolve().parents[3] / "data" / "examples"  # verbatim copies of ../shared/reference/examples


def example(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def load(
    doc: Any, *, role: str = BENCHMARK, selector: str | None = None, benchmark: Dataset | None = None
) -> list[Dataset]:
    return documents_to_datasets([("f.json", doc)], name="x", role=role, selector=selector, benchmark=benchmark)


@pytest.mark.parametrize(
    ("doc", "fmt"),
    [
        (coco({"a.jpg": []}), "coco"),
        ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], "coco_results"),
        (darwin_item("a", []), "darwin"),
        ([darwin_item("a", []), darwin_item("b", [])], "darwin"),
        (encord_row(data_hash="d", title="t", label_hash="l"), "encord"),
        ([ls_task(1, "a.jpg")], "label_studio"),
        ({"foo": 1}, None),
        ([], None),
        ("text", None),
    ],
)
def test_detect_format(doc: Any, fmt: str | None) -> None:
    assert detect_format(doc) == fmt


def test_coco_full_and_results() -> None:
    gt = coco({"dir/a.jpg": [("car", (10, 20, 110, 70))], "b.jpg": []})
    bench = load(gt)[0]
    assert [(u.item, sorted(u.frames)) for u in bench.units] == [("dir/a.jpg", [0]), ("b.jpg", [0])]
    shape = bench.units[0].frames[0][0]
    assert (shape.label, shape.xyxy, shape.score, shape.box_src) == ("car", (10, 20, 110, 70), None, (10, 20, 100, 50))
    cand = load(coco_results(gt, {"b.jpg": [("person", (0, 0, 5, 5), 0.7)]}), role=CANDIDATE, benchmark=bench)[0]
    assert cand.units[1].frames[0][0].score == 0.7
    assert cand.has_scores()


def test_our_own_coco_output_groups_video_frames_into_one_unit() -> None:
    doc = {
        "images": [
            {
                "id": 1,
                "file_name": "clip.mp4/frame_000000.jpg",
                "width": 64,
                "height": 48,
                "item": "clip.mp4",
                "slot": "0",
                "frame_index": 0,
            },
            {
                "id": 2,
                "file_name": "clip.mp4/frame_000025.jpg",
                "width": 64,
                "height": 48,
                "item": "clip.mp4",
                "slot": "0",
                "frame_index": 25,
            },
        ],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "face"}],
    }
    (unit,) = load(doc)[0].units
    assert (unit.item, sorted(unit.frames), len(unit.frames[25])) == ("clip.mp4", [0, 25], 1)


def test_darwin_two_slot_example_loads_per_slot() -> None:
    units = load(example("two_slot_image_item.darwin.json"))[0].units
    assert [(u.item, u.slot, u.width, u.height) for u in units] == [
        ("screening/2024/patient_0001_mammo", "0", 3328, 4096),
        ("screening/2024/patient_0001_mammo", "1", 3328, 4096),
    ]
    mass, calcification = units[0].frames[0]
    assert (mass.kind, mass.xyxy, mass.score) == (ShapeKind.BOX, (1210.5, 1822.0, 1450.75, 2020.75), 0.91)
    assert (calcification.kind, calcification.xyxy) == (ShapeKind.POLYGON, (2010.0, 950.0, 2060.0, 1001.0))
    assert units[1].tags == {(-1, "needs_review", "true")}


def test_darwin_video_example_uses_frames_and_slots() -> None:
    video, floorplan = load(example("video_item_tracked_box.darwin.json"))[0].units
    # Keyframes 0, 1, 2, 4 in range [[0, 5]], interpolated: frame 3 is halfway between 2 and 4, as V7 shows it.
    assert sorted(video.frames) == [0, 1, 2, 3, 4]
    (frame3,) = video.frames[3]
    assert frame3.xyxy == pytest.approx((220.0, 407.5, 447.5, 591.0))  # x 180..260, y 405..410, w 225..230, h 182..185
    assert {s.object_id for f in video.frames.values() for s in f} == {"1d2e3f4a-5b6c-4d7e-8f9a-0b1c2d3e4f5a"}
    assert floorplan.slot == "floorplan"
    assert len(floorplan.frames[0]) == 1


def test_darwin_directory(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / f"{name}.json").write_text(json.dumps(darwin_item(name, [darwin_box("car", (0, 0, 10, 10))])))
    bench = load_benchmark(str(tmp_path))
    assert [u.item for u in bench.units] == ["a.jpg", "b.jpg"]


def test_label_studio_annotations_vs_predictions() -> None:
    tasks = [
        ls_task(
            1,
            "images/a.jpg",
            annotations=[[ls_rect("car", (64, 48, 128, 96))]],
            predictions={"v1": [ls_rect("car", (64, 48, 128, 96), score=0.8)], "v2": []},
        )
    ]
    (human,) = load(tasks)
    shape = human.units[0].frames[0][0]
    assert human.units[0].item == "images/a.jpg"
    assert shape.xyxy == pytest.approx((64, 48, 128, 96))  # percent -> pixels via original_width/height
    assert shape.box_src == pytest.approx((10.0, 10.0, 10.0, 10.0))
    assert human.units[0].src_units is Units.PCT
    models = load(tasks, role=CANDIDATE)
    assert [d.name for d in models] == ["x:v1", "x:v2"]  # one candidate per model version
    assert models[0].units[0].frames[0][0].score == 0.8
    assert models[1].units[0].frames == {0: []}
    assert [d.name for d in load(tasks, role=CANDIDATE, selector="predictions=v2")] == ["x"]
    assert load(tasks, role=CANDIDATE, selector="annotations")[0].units[0].frames[0][0].score is None


def test_label_studio_video_rectangles_are_1_based() -> None:
    region = copy.deepcopy(example("ls_create_videorectangle_prediction.json")["request"]["json"]["result"][0])
    (dataset,) = load(
        [{"id": 1, "data": {"video": "v.mp4"}, "predictions": [{"model_version": "m", "result": [region]}]}],
        role=CANDIDATE,
    )
    unit = dataset.units[0]
    # LS frames 10 (enabled) to 20 (enabled false: the span ends there) are decoder frames 9..19, interpolated.
    assert sorted(unit.frames) == list(range(9, 20))
    assert unit.frames[14][0].xyxy == pytest.approx((7.0, 10.0, 27.0, 35.0))  # LS frame 15: x halfway, 5 -> 9
    assert not unit.pixel_size_known


def test_encord_image_example() -> None:
    (unit,) = load(example("encord_label_row_image.json"))[0].units
    car, _person, lesion = unit.frames[0]
    assert car.xyxy == pytest.approx((768, 594, 960, 864))  # 0..1 top-left boxes -> pixels of 1920x1080
    assert (car.label, car.class_key, car.score, car.box_src) == ("Car", "carBBox1", 0.87, (0.4, 0.55, 0.1, 0.25))
    assert car.attributes == (("Occluded", "No"),)
    assert lesion.kind is ShapeKind.POLYGON
    assert lesion.polygons[0][:2] == pytest.approx((384, 216))
    assert unit.tags == {(-1, "Weather", "Sunny")}


def test_encord_video_example_frames_and_human_scores() -> None:
    (unit,) = load(example("encord_label_row_video.json"))[0].units
    assert sorted(unit.frames) == [0, 1, 2, 10, 11]
    assert unit.object_order == ["VGYeKH93", "DurmJTjs"]
    human = encord_row(data_hash="d", title="t", label_hash="l", objects=[encord_box("A", CAR, (0, 0, 0.5, 0.5))])
    assert load(human)[0].units[0].frames[0][0].score is None  # manualAnnotation: confidence is not a score


@pytest.mark.parametrize(
    ("text", "name", "path", "selector"),
    [
        ("exports/ls.json", "ls", "exports/ls.json", None),
        ("exports/ls.json#predictions=yolo-v2", "ls", "exports/ls.json", "predictions=yolo-v2"),
        ("exports/ls.json#annotations", "ls", "exports/ls.json", "annotations"),
        ("weird#name.json", "weird#name", "weird#name.json", None),
    ],
)
def test_input_spec(text: str, name: str, path: str, selector: str | None) -> None:
    assert text_to_input_spec(text) == InputSpec(name, Path(path), selector)


def test_named_input_spec(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    spec = text_to_input_spec(f"alice={tmp_path / 'a.json'}#annotations")
    assert (spec.name, spec.path, spec.selector) == ("alice", tmp_path / "a.json", "annotations")


@pytest.mark.parametrize(
    ("content", "code", "fragment"),
    [
        (None, ErrorCode.INPUT_NOT_FOUND, "no such file"),
        (b"{not json", ErrorCode.INVALID_ARGUMENT, "not valid JSON"),
        (b"PK\x03\x04zip", ErrorCode.UNSUPPORTED_MEDIA, "unzip"),
        (b'{"hello": "world"}', ErrorCode.UNSUPPORTED_MEDIA, "not a COCO"),
        (b"[]", ErrorCode.UNSUPPORTED_MEDIA, "not a COCO"),
        (
            b'[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]',
            ErrorCode.INVALID_ARGUMENT,
            "can only be a candidate",
        ),
        (
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "a.jpg"}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 1}],
                    "categories": [{"id": 1, "name": "c"}],
                }
            ).encode(),
            ErrorCode.INVALID_ARGUMENT,
            "bbox",
        ),
        (
            json.dumps(
                darwin_item("a", [{"id": "x", "name": "car", "bounding_box": {"x": 0, "y": 0, "w": 1}}])
            ).encode(),
            ErrorCode.INVALID_ARGUMENT,
            "malformed darwin",
        ),
        (
            json.dumps(darwin_item("a", [darwin_box("car", (0, 0, float("inf"), 1))])).encode(),
            ErrorCode.INVALID_ARGUMENT,
            "non-finite",
        ),
        (json.dumps([ls_task(1, "a.jpg")]).encode(), ErrorCode.INVALID_ARGUMENT, "no labelled items"),
    ],
)
def test_bad_benchmark_files_name_the_file(
    tmp_path: Path, content: bytes | None, code: ErrorCode, fragment: str
) -> None:
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PreannotateError) as exc:
        load_benchmark(str(path))
    assert exc.value.code is code
    assert str(path) in exc.value.message
    assert fragment in exc.value.message


def test_a_directory_must_not_mix_formats(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(darwin_item("a", [])))
    (tmp_path / "b.json").write_text(json.dumps(encord_row(data_hash="d", title="t", label_hash="l")))
    with pytest.raises(PreannotateError) as exc:
        load_candidates(str(tmp_path), load(coco({"a": []}))[0])
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    assert "b.json" in exc.value.message
