"""item_to_darwin with masks: polygons (holes as extra paths) by default, ``mask`` + ``raster_layer`` on request."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pycocotools import mask as mask_utils

from models.masks import Masks
from service.convert.darwin import item_to_darwin
from service.convert.darwin_masks import RasterLayers, dense_rle
from service.convert.darwin_types import DarwinMaskStyle
from service.evaluate.geometry import dense_rle_to_labels
from service.pipeline.tracks import TrackBox
from tests.builders import make_detections, make_result, mask_shapes, masked_item
from tests.unit.service.convert.test_darwin import MODEL, schema_errors

H, W = 120, 160
SHAPES = mask_shapes(H, W)


def _doc(style: DarwinMaskStyle, *, track: bool = True) -> dict[str, Any]:
    return json.loads(json.dumps(item_to_darwin(masked_item(track=track), MODEL, masks=style)))


def _even_odd(paths: list[list[dict[str, float]]]) -> NDArray[np.bool_]:
    """The pixels a polygon's paths cover, filled even-odd (how V7 fills a complex polygon)."""
    out = np.zeros((H, W), np.bool_)
    for path in paths:
        ring = [v for p in path for v in (p["x"], p["y"])]
        out ^= mask_utils.decode(mask_utils.frPyObjects([ring], H, W)[0]).astype(bool)
    return out


def _slot(doc: dict[str, Any], slot: str) -> list[dict[str, Any]]:
    return [a for a in doc["annotations"] if a["slot_names"] == [slot]]


@pytest.mark.parametrize("style", ["polygon", "raster"])
@pytest.mark.parametrize("track", [True, False])
def test_valid_against_the_derived_schema(style: DarwinMaskStyle, track: bool) -> None:
    assert schema_errors(_doc(style, track=track)) == []


def test_image_masks_are_polygons_with_holes_as_extra_paths() -> None:
    disk, ring, two_parts, box = _slot(_doc("polygon"), "photo")
    for annotation, want in ((disk, SHAPES["disk"]), (ring, SHAPES["ring"]), (two_parts, SHAPES["two parts"])):
        np.testing.assert_array_equal(_even_odd(annotation["polygon"]["paths"]), want)
        ys, xs = np.nonzero(want)
        x, y = float(xs.min()), float(ys.min())
        assert annotation["bounding_box"] == {"x": x, "y": y, "w": xs.max() + 1 - x, "h": ys.max() + 1 - y}
        assert annotation["inference"]["confidence"] > 0
    assert [len(a["polygon"]["paths"]) for a in (disk, ring, two_parts)] == [1, 2, 2]
    assert "polygon" not in box
    assert box["bounding_box"] == {"x": 1.0, "y": 1.0, "w": 20.0, "h": 10.0}  # no mask: its box, as before


@pytest.mark.parametrize("track", [True, False])
def test_video_keyframes_carry_the_polygon_on_each_frame(track: bool) -> None:
    clip = _slot(_doc("polygon", track=track), "clip")
    frames = {int(k): v for a in clip for k, v in a["frames"].items() if len(v["polygon"]["paths"]) == 1}
    assert sorted(frames) == [0, 10, 20]
    for k, index in enumerate((0, 10, 20)):
        assert frames[index]["keyframe"] is True
        np.testing.assert_array_equal(
            _even_odd(frames[index]["polygon"]["paths"]), np.roll(SHAPES["disk"], 6 * k, axis=1)
        )
    if track:
        assert len(clip) == 2
        assert all(a["interpolated"] is True and a["ranges"] == [[0, 21]] for a in clip)


def test_a_frame_of_a_masked_track_without_a_mask_is_its_box_rectangle() -> None:
    item = masked_item()
    frames = list(item.frames)
    last = frames[-1]
    empty = Masks.empty(len(last.detections))
    frames[-1] = type(last)(info=last.info, detections=last.detections.with_masks(empty))
    doc = item_to_darwin(type(item)(name=item.name, slots=item.slots, frames=tuple(frames)), MODEL)
    for annotation in _slot(json.loads(json.dumps(doc)), "clip"):
        keyframe = annotation["frames"]["20"]
        (path,) = keyframe["polygon"]["paths"]
        x, y, w, h = (keyframe["bounding_box"][k] for k in "xywh")
        assert {(p["x"], p["y"]) for p in path} == {(x, y), (x + w, y), (x + w, y + h), (x, y + h)}


def test_raster_mode_writes_mask_annotations_and_one_layer_per_slot_and_frame() -> None:
    doc = _doc("raster")
    photo = _slot(doc, "photo")
    layer = photo[-1]
    assert layer["name"] == "__raster_layer__"
    masks = [a for a in photo if "mask" in a]
    assert [a["mask"] for a in masks] == [{"sparse_rle": None}] * 3
    assert "bounding_box" in photo[3]  # the row without a mask is still a box
    raster = layer["raster_layer"]
    assert raster["total_pixels"] == W * H
    labels = dense_rle_to_labels(raster["dense_rle"], W, H)
    # where masks overlap the more confident keeps the pixel: disk (0.9), then ring (0.8), then two parts (0.7)
    disk, ring, two_parts = (labels == raster["mask_annotation_ids_mapping"][a["id"]] for a in masks)
    np.testing.assert_array_equal(disk, SHAPES["disk"])
    np.testing.assert_array_equal(ring, SHAPES["ring"] & ~SHAPES["disk"])
    np.testing.assert_array_equal(two_parts, SHAPES["two parts"] & ~SHAPES["disk"] & ~SHAPES["ring"])

    clip = _slot(doc, "clip")
    clip_layer = next(a for a in clip if a["name"] == "__raster_layer__")
    assert sorted(map(int, clip_layer["frames"])) == [0, 10, 20]
    assert clip_layer["only_keyframes"] is True
    tracks = [a for a in clip if a is not clip_layer]
    assert all(f["mask"] == {"sparse_rle": None} and f["keyframe"] for a in tracks for f in a["frames"].values())
    for k, index in enumerate((0, 10, 20)):
        frame_layer = clip_layer["frames"][str(index)]["raster_layer"]
        values = dense_rle_to_labels(frame_layer["dense_rle"], W, H)
        moving = next(a for a in tracks if str(index) in a["frames"] and a["name"] == "face")
        want = np.roll(SHAPES["disk"], 6 * k, axis=1)
        np.testing.assert_array_equal(values == frame_layer["mask_annotation_ids_mapping"][moving["id"]], want)


def test_rows_without_masks_are_written_as_before() -> None:
    """An all-empty Masks writes the same bytes as no masks at all, in either mode."""
    item = masked_item()
    plain_frames = tuple(type(f)(info=f.info, detections=f.detections.with_masks(None)) for f in item.frames)
    empty_frames = tuple(
        type(f)(info=f.info, detections=f.detections.with_masks(Masks.empty(len(f.detections)))) for f in item.frames
    )
    plain = item_to_darwin(type(item)(name=item.name, slots=item.slots, frames=plain_frames), MODEL)
    for style in ("polygon", "raster"):
        masked = item_to_darwin(type(item)(name=item.name, slots=item.slots, frames=empty_frames), MODEL, masks=style)
        assert json.dumps(masked) == json.dumps(plain)


def test_dense_rle_runs_row_by_row() -> None:
    labels = np.array([[0, 0, 1], [1, 1, 0]], np.int64)
    assert dense_rle(labels) == [0, 2, 1, 3, 0, 1]
    np.testing.assert_array_equal(dense_rle_to_labels(dense_rle(labels), 3, 2), labels)


def test_an_image_whose_rows_have_no_pixels_gets_no_raster_layer() -> None:
    dets = make_detections([[1, 1, 5, 5]], [0.9], [0]).with_masks(Masks.empty(1))
    from service.pipeline.frames import MediaKind, SlotMeta
    from service.pipeline.predictions import ItemPredictions

    meta = SlotMeta("a", "0", MediaKind.IMAGE, ("/a",), 640, 480, None, 1, 1)
    doc = item_to_darwin(ItemPredictions("a", (meta,), (make_result(dets, item="a"),)), MODEL, masks="raster")
    assert [a["name"] for a in doc["annotations"]] == ["face"]


def test_a_raster_layer_holds_one_byte_frame_and_paints_masks_from_their_crops() -> None:
    """A 4000 x 3000 frame with three masks (one hanging off the frame) and a box: a byte per pixel (up to 255
    masks), never an int64 frame or a frame per mask; the layer reads back to the masks' pixels."""
    height, width = 3000, 4000
    layers = RasterLayers(width, height)
    crops = [np.ones((40, 60), np.bool_), np.eye(50, dtype=np.bool_), np.ones((30, 30), np.bool_)]
    origins = np.array([[100, 200], [3980, 2990], [110, 210]])
    for n, (crop, origin) in enumerate(zip(crops, origins, strict=True)):
        mask = Masks.from_crops([crop], origin.reshape(1, 2))
        box = TrackBox(0, None, tuple(float(v) for v in mask.xyxy()[0]), 0.5 + 0.1 * n, mask)  # type: ignore[arg-type]
        layers.add(0, f"m{n}", box)
    layers.add(0, "box", TrackBox(0, None, (0.0, 0.0, 10.0, 5.0), 0.1))
    tracemalloc.start()
    try:
        layer = layers.layer(0)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 3 * width * height  # the byte frame and its run starts, not 8 bytes a pixel
    labels = dense_rle_to_labels(layer["dense_rle"], width, height)
    ids = layer["mask_annotation_ids_mapping"]
    expected = np.zeros((height, width), np.int64)
    expected[:5, :10] = ids["box"]
    expected[200:240, 100:160] = ids["m0"]
    expected[2990:, 3980:] = np.where(np.eye(50, dtype=np.bool_)[:10, :20], ids["m1"], 0)
    expected[210:240, 110:140] = ids["m2"]  # the most confident, painted last
    np.testing.assert_array_equal(labels, expected)
