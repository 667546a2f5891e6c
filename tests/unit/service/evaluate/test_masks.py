"""Darwin ``mask`` + ``raster_layer`` and Label Studio ``brushlabels`` are scored by mask IoU (hand-built masks)."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from service.errors import ErrorCode, PreannotateError
from service.evaluate import geometry
from service.evaluate.evaluation import evaluate, evaluation_to_summary
from service.evaluate.geometry import (
    coco_counts_to_runs,
    dense_rle_to_labels,
    ls_brush_rle_to_mask,
    mask_utils,
    shape_to_rle,
)
from service.evaluate.inputs import BENCHMARK, CANDIDATE, documents_to_datasets
from service.evaluate.types import Dataset, FormatError, Shape, ShapeKind
from tests.unit.service.evaluate.fixtures import darwin_box, darwin_masks, dense_rle, ls_brush_rle, ls_brush_task


def load(doc: Any, role: str = BENCHMARK) -> Dataset:
    return documents_to_datasets([("f.json", doc)], name="x", role=role)[0]


def summary(bench: Any, cand: Any, iou: float = 0.5) -> dict[str, Any]:
    b = load(bench)
    c = documents_to_datasets([("c.json", cand)], name="c", role=CANDIDATE, benchmark=b)[0]
    return evaluation_to_summary(evaluate(b, [c], iou_threshold=iou))


def rect(rows: slice, cols: slice, size: tuple[int, int] = (10, 12)) -> NDArray[np.bool_]:
    """A (height, width) mask with one filled rectangle."""
    mask = np.zeros(size, np.bool_)
    mask[rows, cols] = True
    return mask


def decoded(rle: dict[str, Any]) -> NDArray[np.bool_]:
    """A COCO RLE (string counts) as a (height, width) mask: runs of 0s and 1s, column by column."""
    height, width = rle["size"]
    runs = coco_counts_to_runs(rle["counts"])
    return np.repeat(np.arange(len(runs)) % 2 == 1, runs).reshape(width, height).T


# --- Darwin raster layers --------------------------------------------------------------------------------------


def test_dense_rle_is_value_count_pairs_row_by_row() -> None:
    # darwin-py's own COCO-export test: a 4x3 layer where cat is value 1 and dog value 2.
    labels = dense_rle_to_labels([0, 1, 1, 2, 0, 1, 2, 1, 1, 1, 0, 2, 2, 2, 0, 2], 4, 3)
    assert labels.tolist() == [[0, 1, 1, 0], [2, 1, 0, 0], [2, 2, 0, 0]]


@pytest.mark.parametrize("runs", [[0, 11], [0, 13], [0, 1, 1], "ABCD", [0, -1, 1, 13]])
def test_a_dense_rle_that_does_not_cover_the_slot_is_refused(runs: Any) -> None:
    with pytest.raises(FormatError):
        dense_rle_to_labels(runs, 4, 3)


def test_darwin_masks_are_the_raster_layer_pixels_of_their_value() -> None:
    cat, dog = rect(slice(0, 2), slice(1, 3)), rect(slice(5, 9), slice(0, 4))
    (unit,) = load(darwin_masks("a.jpg", {"m-cat": ("cat", cat), "m-dog": ("dog", dog)})).units
    shapes = {s.label: s for s in unit.frames[0]}
    assert {s.kind for s in shapes.values()} == {ShapeKind.MASK}
    assert (decoded(shapes["cat"].rle or {}) == cat).all()
    assert (decoded(shapes["dog"].rle or {}) == dog).all()
    assert shapes["cat"].xyxy == (1.0, 0.0, 3.0, 2.0)
    assert unit.skipped == {}


def test_a_mask_the_raster_layer_gives_no_pixel_is_counted_as_skipped() -> None:
    doc = darwin_masks("a.jpg", {"m1": ("cat", rect(slice(0, 2), slice(0, 2)))})
    doc["annotations"].insert(0, {"id": "orphan", "name": "cat", "mask": {"sparse_rle": None}, "slot_names": ["0"]})
    (unit,) = load(doc).units
    assert len(unit.frames[0]) == 1
    assert unit.skipped == {"mask": 1}


def test_darwin_masks_score_by_mask_iou() -> None:
    # 4x6 = 24 px each, overlapping on 4x4 = 16: IoU 16 / 32 = 0.5.
    gt = darwin_masks("a.jpg", {"g": ("car", rect(slice(2, 6), slice(2, 8)))})
    shifted = darwin_masks("a.jpg", {"d": ("car", rect(slice(2, 6), slice(4, 10)))})
    s = summary(gt, shifted)
    assert (s["tp"], s["fp"], s["fn"], s["mean_iou"]) == (1, 0, 0, pytest.approx(0.5))
    assert s["skipped_shapes"] == {}
    # An L with the benchmark's box: box IoU 1.0, but 18 of its 24 px: mask IoU 0.75, below a 0.8 threshold.
    ell = rect(slice(2, 6), slice(2, 8))
    ell[4:6, 5:8] = False
    assert summary(gt, darwin_masks("a.jpg", {"d": ("car", ell)}))["mean_iou"] == pytest.approx(0.75)
    s = summary(gt, darwin_masks("a.jpg", {"d": ("car", ell)}), iou=0.8)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 1, 1)


def test_a_box_candidate_against_a_mask_benchmark_is_scored_box_to_box() -> None:
    gt = darwin_masks("a.jpg", {"g": ("car", rect(slice(2, 6), slice(2, 8)))})
    s = summary(gt, {**gt, "annotations": [darwin_box("car", (2, 2, 8, 6))]})
    assert (s["tp"], s["mean_iou"]) == (1, pytest.approx(1.0))


def test_a_darwin_video_raster_layer_gives_masks_per_frame() -> None:
    first, later = rect(slice(0, 2), slice(0, 2)), rect(slice(4, 6), slice(4, 6))
    layer = {"mask_annotation_ids_mapping": {"m": 1}, "total_pixels": 120}
    doc = darwin_masks("v.mp4", {"m": ("car", first)})
    doc["item"]["slots"][0] |= {"type": "video", "fps": 25.0, "frame_count": 5}
    doc["annotations"] = [
        {"id": "m", "name": "car", "slot_names": ["0"], "frames": {"0": {"mask": {}}, "3": {"mask": {}}}},
        {
            "id": "raster",
            "name": "__raster_layer__",
            "slot_names": ["0"],
            "frames": {
                "0": {"raster_layer": {**layer, "dense_rle": dense_rle(first)}},
                "3": {"raster_layer": {**layer, "dense_rle": dense_rle(later)}},
            },
        },
    ]
    (unit,) = load(doc).units
    assert sorted(unit.frames) == [0, 3]
    assert (decoded(unit.frames[0][0].rle or {}) == first).all()
    assert (decoded(unit.frames[3][0].rle or {}) == later).all()
    assert unit.fps == 25.0


def test_a_malformed_raster_layer_names_the_file() -> None:
    doc = darwin_masks("a.jpg", {"m": ("cat", rect(slice(0, 2), slice(0, 2)))})
    doc["annotations"][-1]["raster_layer"]["dense_rle"] = [0, 3]
    with pytest.raises(PreannotateError) as exc:
        documents_to_datasets([("bad.json", doc)], name="b", role=BENCHMARK)
    assert exc.value.code is ErrorCode.INVALID_ARGUMENT
    assert "bad.json" in exc.value.message
    assert "raster_layer" in exc.value.message


# --- Label Studio brush --------------------------------------------------------------------------------------


def bits(text: str) -> list[int]:
    """Bytes of a bit string (spaces ignored), zero-padded to whole bytes."""
    flat = text.replace(" ", "")
    flat += "0" * (-len(flat) % 8)
    return [int(flat[i : i + 8], 2) for i in range(0, len(flat), 8)]


HEADER_16 = f"{16:032b} 00111 0010 0011 0111 1111"  # 16 values, 8-bit words, length fields of 3, 4, 8, 16 bits


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        # Pixels (0,0,0,0) (255 x4) (255 x4) (0,0,0,0) as three repeat runs: 4 zeros, 8 x 255, 4 zeros.
        (f"{HEADER_16} 1 00 011 00000000  1 01 0111 11111111  1 00 011 00000000", [[False, True], [True, False]]),
        # The same pixels as one literal run of 16 words (length field 8 bits: choice 10, length - 1 = 15).
        (
            f"{HEADER_16} 0 10 00001111 " + " ".join(f"{v:08b}" for v in [0, 0, 0, 0] + [9] * 8 + [7, 7, 7, 0]),
            [[False, True], [True, False]],
        ),
        # A literal run then a repeat run; only alpha (every 4th value) counts: the first pixel's RGB is 0 but
        # its alpha 1 (on), the rest transparent whatever their colour.
        (
            f"{HEADER_16} 0 00 011 00000000 00000000 00000000 00000001  1 01 1011 00000000",
            [[True, False], [False, False]],
        ),
    ],
)
def test_ls_brush_rle_hand_built(stream: str, expected: list[list[bool]]) -> None:
    assert ls_brush_rle_to_mask(bits(stream), 2, 2).tolist() == expected


@pytest.mark.parametrize(
    "rle",
    [
        bits(f"{HEADER_16} 1 00 011"),  # truncated inside a run
        bits(f"{20:032b} 00111 0010 0011 0111 1111"),  # 20 values are not 2 x 2 RGBA pixels
        "abc",
        [0, 256],
    ],
)
def test_a_bad_brush_rle_is_refused(rle: Any) -> None:
    with pytest.raises(FormatError):
        ls_brush_rle_to_mask(rle, 2, 2)


def test_ls_brush_against_a_darwin_mask_by_mask_iou() -> None:
    gt = darwin_masks("a.jpg", {"g": ("car", rect(slice(2, 6), slice(2, 8)))})
    brush = ls_brush_task(1, "a.jpg", [("car", rect(slice(2, 6), slice(4, 10)))])
    (unit,) = load([brush], role=CANDIDATE).units
    (shape,) = unit.frames[0]
    assert (shape.kind, shape.label, shape.xyxy) == (ShapeKind.MASK, "car", (4.0, 2.0, 10.0, 6.0))
    s = summary(gt, [brush])
    assert (s["tp"], s["fp"], s["fn"], s["mean_iou"]) == (1, 0, 0, pytest.approx(16 / 32))
    assert s["skipped_shapes"] == {}
    s = summary(gt, [brush], iou=0.6)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 1, 1)


def test_a_brush_without_a_size_or_in_another_format_is_reported_unscored() -> None:
    brush = ls_brush_task(1, "a.jpg", [("car", rect(slice(2, 6), slice(4, 10)))] * 2)
    regions = brush["annotations"][0]["result"]
    del regions[0]["original_width"], regions[0]["original_height"]
    regions[1]["value"]["format"] = "base64"
    (unit,) = load([brush]).units
    assert unit.skipped == {"brushlabels": 2}


def test_the_brush_encoder_used_by_the_fixtures_round_trips() -> None:
    mask = rect(slice(1, 3), slice(0, 5), size=(4, 5))
    rgba = np.repeat(mask.astype(np.uint8)[..., None] * 200, 4, axis=2).ravel().tolist()
    assert (ls_brush_rle_to_mask(ls_brush_rle(rgba), 5, 4) == mask).all()


def _squares(count: int, side_px: int) -> tuple[tuple[float, ...], ...]:
    """``count`` concentric squares 8 px apart, the outermost ``side_px`` wide, as flat rings."""
    rings = []
    for k in range(count):
        lo, hi = 8.0 * k, float(side_px - 8 * k)
        rings.append((lo, lo, hi, lo, hi, hi, lo, hi))
    return tuple(rings)


def test_even_odd_rings_fill_alternately_in_memory_of_two_frames() -> None:
    """Each ring flips the pixels it covers, one ring at a time: 60 rings on a 1000 x 1000 frame must not decode
    60 frames at once (60 MB)."""
    side = 1000
    shape = Shape("a", "ring", (0.0, 0.0, float(side), float(side)), ShapeKind.POLYGON, polygons=_squares(60, side))
    shape = replace(shape, even_odd=True)
    tracemalloc.start()
    try:
        rle = shape_to_rle(shape, side, side)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rle is not None
    assert peak_bytes < 8 * side * side  # a few frames of uint8 at most
    drawn = np.asarray(mask_utils().decode({**rle}), np.bool_)
    # band k (between ring k and ring k + 1) is filled when k is even
    assert [bool(drawn[8 * k + 4, side // 2]) for k in range(59)] == [k % 2 == 0 for k in range(59)]


def test_even_odd_rings_on_a_frame_over_the_raster_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geometry, "MAX_RASTER_PIXELS", 99 * 99)
    shape = replace(
        Shape("a", "ring", (0.0, 0.0, 100.0, 100.0), ShapeKind.POLYGON, polygons=_squares(2, 100)), even_odd=True
    )
    with pytest.raises(FormatError, match="too large"):
        shape_to_rle(shape, 100, 100)
