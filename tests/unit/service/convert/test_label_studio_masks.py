"""Masks in Label Studio: brushlabels (LS's brush RLE) and polygonlabels as the config asks, judged by
label-studio-sdk 2.1.2 (its validator and its converter's own brush encoder / decoder, in LS's venv) and by
our evaluate's loader."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from models.masks import Masks
from service.convert.label_studio import default_label_config_xml, item_to_ls_result, parse_label_config
from service.convert.ls_brush import mask_to_ls_brush_rle
from service.convert.types import ModelRef
from service.evaluate.evaluation import evaluate, evaluation_to_summary
from service.evaluate.geometry import ls_brush_rle_to_mask
from service.evaluate.load_label_studio import label_studio_to_datasets
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, TrackBox
from tests.builders import make_detections, make_result, with_tracks
from tests.ls_sdk import BRUSH, VALIDATE, run_ls_sdk
from tests.mask_shapes import H, W, disk, masked_result, shapes, two_parts
from tests.unit.service.evaluate.fixtures import ls_brush_task

MODEL = ModelRef(spec="onnx:/m/seg.onnx", version="seg-0123", class_names=("car", "person"))
LABELS = '<Label value="car"/><Label value="person"/>'
BRUSH_CONFIG = (
    f'<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">{LABELS}</RectangleLabels>'
    f'<BrushLabels name="mask" toName="image">{LABELS}</BrushLabels></View>'
)
POLYGON_CONFIG = (
    f'<View><Image name="image" value="$image"/>'
    f'<PolygonLabels name="poly" toName="image">{LABELS}</PolygonLabels></View>'
)
RECT_CONFIG = (
    f'<View><Image name="image" value="$image"/>'
    f'<RectangleLabels name="box" toName="image">{LABELS}</RectangleLabels></View>'
)


def item(masks: list[np.ndarray | None], classes: list[int] | None = None) -> ItemPredictions:
    meta = SlotMeta("a.jpg", "0", MediaKind.IMAGE, ("a.jpg",), W, H, None, 1, 1)
    frame = masked_result(masks, classes or [0] * len(masks), item="a.jpg")
    return ItemPredictions(name="a.jpg", slots=(meta,), frames=(frame,))


def regions(config: str, it: ItemPredictions) -> list[Any]:
    return list(item_to_ls_result(it, MODEL, parse_label_config(config)).result)


def without_masks(it: ItemPredictions) -> ItemPredictions:
    frames = tuple(replace(f, detections=f.detections.with_masks(None)) for f in it.frames)
    return replace(it, frames=frames)


# --- the brush RLE --------------------------------------------------------------------------------------------


def brush_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    full = np.ones((130, 520), np.bool_)  # 270,400 RGBA values: a run longer than one 16-bit field holds
    return {**shapes(), "noise": rng.random((23, 31)) > 0.5, "empty": np.zeros((4, 6), np.bool_), "full": full}


def test_brush_rle_is_the_converters_own_encoding_and_both_decoders_read_it_back() -> None:
    cases = brush_cases()
    ours = {name: mask_to_ls_brush_rle(mask) for name, mask in cases.items()}
    sdk = run_ls_sdk(BRUSH, [{"mask": m.astype(int).tolist(), "rle": ours[n]} for n, m in cases.items()])
    for (name, mask), judged in zip(cases.items(), sdk, strict=True):
        assert ours[name] == judged["encoded"], name  # label-studio-converter's mask2rle(mask * 255), bit for bit
        np.testing.assert_array_equal(np.asarray(judged["alpha"], np.bool_), mask, err_msg=name)
        np.testing.assert_array_equal(ls_brush_rle_to_mask(ours[name], mask.shape[1], mask.shape[0]), mask)


# --- which control a row goes to ------------------------------------------------------------------------------


def test_a_brush_config_gets_each_mask_exactly_and_rows_without_one_stay_boxes() -> None:
    sources = list(shapes().values())
    result = regions(BRUSH_CONFIG, item([*sources, None]))
    assert [r["type"] for r in result] == ["brushlabels"] * 3 + ["rectanglelabels"]
    for region, mask in zip(result, sources, strict=False):
        assert (region["from_name"], region["to_name"], region["value"]["format"]) == ("mask", "image", "rle")
        assert (region["original_width"], region["original_height"]) == (W, H)
        np.testing.assert_array_equal(ls_brush_rle_to_mask(region["value"]["rle"], W, H), mask)
    box = regions(RECT_CONFIG, item([None]))[0]
    assert (result[-1]["from_name"], result[-1]["value"]) == (box["from_name"], box["value"])


def test_a_polygon_config_gets_the_outer_ring_of_the_largest_part_in_percent() -> None:
    cases = shapes()
    result = regions(POLYGON_CONFIG, item(list(cases.values())))
    assert [r["type"] for r in result] == ["polygonlabels"] * 3
    filled = {"disk": cases["disk"], "ring": disk(60, 45, 30), "two parts": disk(30, 40, 18)}
    for region, (name, expected) in zip(result, filled.items(), strict=True):
        points = np.asarray(region["value"]["points"], np.float64)
        assert region["value"]["closed"] is True
        assert 0 <= points.min() <= points.max() <= 100
        pixels = (points / 100 * [W, H]).ravel().tolist()
        drawn = mask_utils.decode(mask_utils.frPyObjects([pixels], H, W)[0]).astype(bool)
        np.testing.assert_array_equal(drawn, expected, err_msg=name)  # holes filled, small parts left out


def test_without_a_mask_control_masks_are_boxes_byte_for_byte() -> None:
    it = item(list(shapes().values()))
    assert regions(RECT_CONFIG, it) == regions(RECT_CONFIG, without_masks(it))
    assert [r["type"] for r in regions(RECT_CONFIG, it)] == ["rectanglelabels"] * 3


def test_boxes_go_to_a_polygon_or_brush_control_when_no_rectangle_has_their_label() -> None:
    (poly,) = regions(POLYGON_CONFIG, item([None]))
    corners = [[5, 5], [25, 5], [25, 20], [5, 20]]  # the box's, clockwise from top-left
    np.testing.assert_allclose(np.asarray(poly["value"]["points"]) / 100 * [W, H], corners, atol=1e-3)
    brush_only = BRUSH_CONFIG.replace("RectangleLabels", "Labels")
    (brush,) = regions(brush_only, item([None]))
    drawn = ls_brush_rle_to_mask(brush["value"]["rle"], W, H)
    assert (drawn.sum(), drawn[5:20, 5:25].all()) == (20 * 15, True)


def test_a_boxes_only_run_fills_box_controls_only_as_before_masks() -> None:
    """Without masks a box never becomes a brush or polygon region: a class only a shape control labels is dropped
    and counted, and an object only shape controls point at is no target (what the converter did before masks)."""
    boxes = without_masks(item([None, None], [0, 1]))
    car_boxes = BRUSH_CONFIG.replace(
        f'<RectangleLabels name="box" toName="image">{LABELS}',
        '<RectangleLabels name="box" toName="image"><Label value="car"/>',
    )
    for masks in (None, False):
        found = item_to_ls_result(boxes, MODEL, parse_label_config(car_boxes), masks=masks)
        assert [(r["type"], r["from_name"]) for r in found.result] == [("rectanglelabels", "box")]
        assert found.dropped == {"person": 1}
        shaped = item_to_ls_result(boxes, MODEL, parse_label_config(POLYGON_CONFIG), masks=masks)
        assert (shaped.result, shaped.dropped) == ([], {})  # the slot has no target: nothing read, nothing dropped
    assert parse_label_config(POLYGON_CONFIG).for_run(masks=False).targets() == []
    assert [o.name for o in parse_label_config(POLYGON_CONFIG).for_run(masks=True).targets()] == ["image"]
    # the same run making masks: the person box goes to the brush control, drawn as its box
    masked = item_to_ls_result(boxes, MODEL, parse_label_config(car_boxes), masks=True)
    assert [(r["type"], r["from_name"]) for r in masked.result] == [("rectanglelabels", "box"), ("brushlabels", "mask")]


def test_video_tracks_stay_boxes_whatever_their_masks() -> None:
    config = (
        f'<View><Labels name="videoLabels" toName="video">{LABELS}</Labels><Video name="video" value="$video"/>'
        f'<VideoRectangle name="box" toName="video"/></View>'
    )
    meta = SlotMeta("clip", "video", MediaKind.VIDEO, ("clip.mp4",), W, H, 25.0, 10, 2)
    frames = tuple(
        make_result(
            make_detections(), item="clip", slot="video", media=MediaKind.VIDEO, frame_index=i, width=W, height=H
        )
        for i in (0, 1)
    )
    one = Masks.from_full(disk(60, 45, 20)[None])
    boxes = tuple(TrackBox(i, None, (40.0, 25.0, 80.0, 65.0), 0.8, mask) for i in (0, 1) for mask in (one,))
    plain = tuple(replace(b, mask=None) for b in boxes)
    masked = with_tracks(ItemPredictions("clip", (meta,), frames), [Track(1, "video", 0, boxes)])
    unmasked = with_tracks(ItemPredictions("clip", (meta,), frames), [Track(1, "video", 0, plain)])
    parsed = parse_label_config(config)
    assert item_to_ls_result(masked, MODEL, parsed).result == item_to_ls_result(unmasked, MODEL, parsed).result


def test_default_config_with_masks_has_brush_labels_beside_the_boxes() -> None:
    assert default_label_config_xml(MODEL.class_names) == RECT_CONFIG.replace('name="box"', 'name="label"')
    config = parse_label_config(default_label_config_xml(MODEL.class_names, masks=True))
    assert {(c.result_type, c.labels) for c in config.controls} == {
        ("rectanglelabels", MODEL.class_names),
        ("brushlabels", MODEL.class_names),
    }
    written = regions(default_label_config_xml(MODEL.class_names, masks=True), item([disk(9, 9, 5), None]))
    assert [r["type"] for r in written] == ["brushlabels", "rectanglelabels"]


# --- judged by label-studio-sdk ---------------------------------------------------------------------------------


def test_label_studio_sdk_validates_brush_and_polygon_predictions() -> None:
    it = item([*shapes().values(), None], [0, 1, 0, 1])
    configs = [BRUSH_CONFIG, POLYGON_CONFIG, RECT_CONFIG, default_label_config_xml(MODEL.class_names, masks=True)]
    cases = [
        {"config": c, "prediction": item_to_ls_result(it, MODEL, parse_label_config(c)).to_json()} for c in configs
    ]
    assert all(len(case["prediction"]["result"]) == 4 for case in cases)
    assert run_ls_sdk(VALIDATE, cases) == [[], [], [], []]


# --- our own evaluate reads them back ---------------------------------------------------------------------------


def task_with(result: list[Any]) -> dict[str, Any]:
    return {
        "id": 1,
        "data": {"image": "/data/local-files/?d=a.jpg"},
        "annotations": [{"id": 1, "completed_by": 1, "was_cancelled": False, "ground_truth": True, "result": result}],
        "predictions": [{"id": 2, "model_version": MODEL.version, "score": 0.5, "result": result}],
    }


def mean_iou(benchmark_task: dict[str, Any], candidate_task: dict[str, Any]) -> tuple[int, float]:
    (bench,) = label_studio_to_datasets([benchmark_task], name="b", source="b", side="annotations")
    (cand,) = label_studio_to_datasets([candidate_task], name="c", source="c", side="predictions")
    summary = evaluation_to_summary(evaluate(bench, [cand]))
    return summary["tp"], summary["mean_iou"]


@pytest.mark.parametrize("config", [BRUSH_CONFIG, POLYGON_CONFIG])
def test_evaluate_scores_our_masks_against_themselves_and_the_source(config: str) -> None:
    # A polygon is the largest part only (LS polygons have one ring): scored against that part.
    polygons = "PolygonLabels" in config
    cases = {"disk": (disk(60, 45, 25),) * 2, "two parts": (two_parts(), disk(30, 40, 18) if polygons else two_parts())}
    for name, (mask, expected) in cases.items():
        result = regions(config, item([mask]))
        ours = task_with(result)
        assert mean_iou(ours, ours) == (1, pytest.approx(1.0)), name
        source = ls_brush_task(1, "a.jpg", [("car", expected)])
        source["annotations"][0]["result"][0]["from_name"] = result[0]["from_name"]
        tp, iou = mean_iou(source, ours)
        assert tp == 1, name
        assert iou >= (0.95 if polygons else 1.0), name
