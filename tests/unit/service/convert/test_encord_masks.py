"""Masks in Encord rows: polygon objects (rings with holes) or bitmask objects, as the ontology's shape says,
judged by the Encord SDK (encord 0.1.211: its bitmask encoder, ``LabelRowV2``) and by our evaluate's loader."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from models.masks import Masks
from service.convert.encord import EncordOntology, build_encord_label_row, default_ontology, iter_object_entries
from service.convert.encord_shapes import mask_to_encord_rle
from service.convert.types import ModelRef
from service.evaluate.evaluation import evaluate, evaluation_to_summary
from service.evaluate.geometry import encord_rle_to_coco_rle
from service.evaluate.load_encord import encord_to_dataset
from service.pipeline.frames import FrameResult, MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from tests.builders import make_detections, make_result
from tests.mask_shapes import H, W, box_of, disk, masked_result, ring, shapes, two_parts
from tests.unit.service.convert.test_encord import sdk_label_row

encord = pytest.importorskip("encord")

WHEN = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
MODEL = ModelRef(spec="onnx:/m/seg.onnx", version="seg-0123", class_names=("car", "person"))


def ontology(shape: str) -> EncordOntology:
    return EncordOntology.from_json(
        {
            "objects": [
                {"name": "Car", "color": "#D33115", "shape": shape, "featureNodeHash": "carShap1"},
                {"name": "Person", "color": "#FCDC00", "shape": "bounding_box", "featureNodeHash": "persBBx1"},
            ]
        }
    )


def image_item(masks: list[np.ndarray | None], classes: list[int] | None = None) -> ItemPredictions:
    meta = SlotMeta("item", "0", MediaKind.IMAGE, ("/data/a.jpg",), W, H, None, 1, 1)
    return ItemPredictions("item", (meta,), (masked_result(masks, classes or [0] * len(masks), item="item"),))


def row_of(it: ItemPredictions, onto: EncordOntology) -> Any:
    return build_encord_label_row(it, MODEL, onto, created_by="svc@example.com", created_at=WHEN).row


def entries(row: Any) -> list[dict[str, Any]]:
    return [dict(e) for _, e in iter_object_entries(row)]


def filled(rings: list[list[float]]) -> np.ndarray:
    """Normalised flat rings, the first the outer one, the others holes, rasterised on the frame."""
    out = np.zeros((H, W), np.bool_)
    for k, flat in enumerate(rings):
        pixels = (np.asarray(flat).reshape(-1, 2) * [W, H]).ravel().tolist()
        part = mask_utils.decode(mask_utils.frPyObjects([pixels], H, W)[0]).astype(bool)
        out = out | part if k == 0 else out & ~part
    return out


def polygons_mask(polygons: list[list[list[float]]]) -> np.ndarray:
    out = np.zeros((H, W), np.bool_)
    for rings in polygons:
        out |= filled(rings)
    return out


# --- the bitmask RLE --------------------------------------------------------------------------------------------


def test_rle_string_is_the_sdks_own_and_our_decoder_reads_it_back() -> None:
    from encord.objects.bitmask import BitmaskCoordinates

    rng = np.random.default_rng(5)
    corner = np.zeros((H, W), np.bool_)
    corner[0, 0] = True  # a mask starting with a 1: the runs start with an empty run of 0s
    for name, mask in {**shapes(), "noise": rng.random((H, W)) > 0.5, "corner": corner}.items():
        ours = mask_to_encord_rle(mask)
        assert ours == BitmaskCoordinates(mask).to_dict()["rleString"], name
        coco = encord_rle_to_coco_rle(ours, W, H)
        decoded = mask_utils.decode({"size": coco["size"], "counts": str(coco["counts"]).encode()})
        np.testing.assert_array_equal(decoded.astype(bool), mask, err_msg=name)


# --- rows the SDK loads -----------------------------------------------------------------------------------------


def test_polygon_objects_carry_every_part_and_hole_and_the_sdk_gives_them_back() -> None:
    sources = list(shapes().values())
    built = build_encord_label_row(image_item([*sources, None]), MODEL, ontology("polygon"), created_at=WHEN)
    row, written = built.row, entries(built.row)
    assert [e["shape"] for e in written] == ["polygon"] * 3
    assert built.stats.unmapped == {"car": 1}  # a box (no mask) goes to bounding-box objects only, as before
    for entry, mask in zip(written, sources, strict=False):
        assert "boundingBox" not in entry
        assert polygons_mask(entry["polygons"]).tolist() == mask.tolist()
        outer = entry["polygons"][0][0]
        assert [[p["x"], p["y"]] for p in entry["polygon"].values()] == np.reshape(outer, (-1, 2)).tolist()
    assert [len(p) for p in written[1]["polygons"]] == [2]  # the ring: one polygon, one hole
    assert len(written[2]["polygons"]) == 2  # two parts
    label_row = sdk_label_row(row, ontology("polygon"))
    assert label_row.to_encord_dict()["data_units"] == row["data_units"]
    instances = sorted(label_row.get_object_instances(), key=lambda i: -i.get_annotation(0).confidence)
    for instance, entry in zip(instances, written, strict=True):
        coordinates = instance.get_annotation(0).coordinates
        assert coordinates.to_dict("multiple_polygons") == entry["polygons"]


def test_box_only_rows_and_box_only_ontologies_are_written_as_before() -> None:
    masked, plain = image_item([disk(60, 45, 20), None]), image_item([None, None])
    masked_rows = entries(row_of(masked, ontology("bounding_box")))
    assert [e["shape"] for e in masked_rows] == ["bounding_box"] * 2
    boxes_only = image_item([disk(60, 45, 20), None])
    frames = tuple(f.__class__(f.info, f.detections.with_masks(None)) for f in boxes_only.frames)
    assert masked_rows == entries(row_of(ItemPredictions("item", boxes_only.slots, frames), ontology("bounding_box")))
    # A class whose only object is a polygon takes masked rows only; boxes are not drawn as polygons.
    assert [e["shape"] for e in entries(row_of(image_item([None], [0]), ontology("polygon")))] == []
    assert entries(row_of(plain, ontology("polygon"))) == []


def test_bitmask_objects_are_frame_sized_masks_the_sdk_reads_back() -> None:
    sources = list(shapes().values())
    row = row_of(image_item(sources), ontology("bitmask"))
    written = entries(row)
    assert all(e["bitmask"]["height"] == H and e["bitmask"]["width"] == W for e in written)
    label_row = sdk_label_row(row, ontology("bitmask"))
    assert label_row.to_encord_dict()["data_units"] == row["data_units"]
    got = sorted(label_row.get_object_instances(), key=lambda i: -i.get_annotation(0).confidence)
    for instance, mask in zip(got, sources, strict=True):
        np.testing.assert_array_equal(instance.get_annotation(0).coordinates.to_numpy_array(), mask)


def test_video_tracks_carry_their_mask_on_every_keyframe() -> None:
    meta = SlotMeta("item", "0", MediaKind.VIDEO, ("/data/0.mp4",), W, H, 25.0, 10, 3, duration_s=0.4)
    masks = {0: disk(40, 45, 20), 1: ring(50, 45, 25, 10), 2: None}  # the segmenter left frame 2 empty

    def frame(i: int, mask: np.ndarray | None) -> FrameResult:
        box = box_of(mask) if mask is not None else [10.0, 10.0, 30.0, 30.0]
        dets = make_detections([box], [0.8], [0]).with_tracker_id(np.array([1], np.int64))
        dets = dets.with_masks(Masks.from_full(mask[None]) if mask is not None else Masks.empty(1))
        return make_result(
            dets, item="item", media=MediaKind.VIDEO, frame_index=i, timestamp_s=i / 25, width=W, height=H
        )

    item = ItemPredictions("item", (meta,), tuple(frame(i, m) for i, m in masks.items()))
    row = row_of(item, ontology("polygon"))
    per_frame = dict(iter_object_entries(row))
    assert set(per_frame) == {"0", "1", "2"}
    assert len({e["objectHash"] for e in per_frame.values()}) == 1  # one track, one object
    for frame, mask in masks.items():
        expected = mask if mask is not None else np.pad(np.ones((20, 20), bool), ((10, H - 30), (10, W - 30)))
        assert polygons_mask(per_frame[str(frame)]["polygons"]).tolist() == expected.tolist()
    label_row = sdk_label_row(row, ontology("polygon"))
    assert label_row.to_encord_dict()["data_units"] == row["data_units"]


def test_default_ontology_for_masks_adds_a_polygon_object_per_class() -> None:
    onto = default_ontology(MODEL.class_names, masks=True)
    assert [(o.name, o.shape) for o in onto.objects] == [
        ("car", "bounding_box"),
        ("person", "bounding_box"),
        ("car", "polygon"),
        ("person", "polygon"),
    ]
    assert onto.objects[:2] == default_ontology(MODEL.class_names).objects
    written = entries(row_of(image_item([disk(60, 45, 20), None], [1, 1]), onto))
    assert [(e["name"], e["shape"]) for e in written] == [("person", "polygon"), ("person", "bounding_box")]
    sdk_label_row(row_of(image_item([disk(60, 45, 20), None], [1, 1]), onto), onto)


# --- our own evaluate reads them back ---------------------------------------------------------------------------


def sdk_bitmask_row(row: Any, onto: EncordOntology, mask: np.ndarray) -> Any:
    """``row`` with its objects replaced by one the SDK itself draws from ``mask``: an independent benchmark."""
    from encord.objects import Object
    from encord.objects.bitmask import BitmaskCoordinates

    label_row = sdk_label_row(row, onto)
    for instance in label_row.get_object_instances():
        label_row.remove_object(instance)
    instance = label_row.ontology_structure.get_child_by_hash("carShap1", type_=Object).create_instance()
    instance.set_for_frames(BitmaskCoordinates(mask), frames=0, manual_annotation=True)
    label_row.add_object_instance(instance)
    return label_row.to_encord_dict()


@pytest.mark.parametrize("shape", ["polygon", "bitmask"])
def test_evaluate_scores_our_masks_against_themselves_and_the_source(shape: str) -> None:
    for name, mask in {"disk": disk(60, 45, 25), "ring": ring(60, 45, 30, 12), "two parts": two_parts()}.items():
        row = row_of(image_item([mask]), ontology(shape))
        ours = encord_to_dataset([row], name="ours", source="ours")
        summary = evaluation_to_summary(evaluate(ours, [encord_to_dataset([row], name="c", source="c")]))
        assert (summary["tp"], summary["mean_iou"]) == (1, pytest.approx(1.0)), name
        blank = row_of(image_item([mask]), ontology("bitmask"))
        source = encord_to_dataset([sdk_bitmask_row(blank, ontology("bitmask"), mask)], name="src", source="src")
        summary = evaluation_to_summary(evaluate(source, [ours]))
        assert summary["tp"] == 1, name
        assert summary["mean_iou"] >= (0.95 if shape == "polygon" else 1.0), name
