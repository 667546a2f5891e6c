"""COCO ``segmentation`` from ``Detections.masks``, judged by pycocotools, faster-coco-eval and supervision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from models.masks import Masks
from service.convert.coco import frame_results_to_coco
from service.convert.coco_types import CocoDocument, CocoMaskStyle
from service.pipeline.frames import FrameResult
from tests.builders import make_detections, make_result, mask_shapes, with_shape_masks

NAMES = ("face", "person")
H, W = 480, 640  # make_info's frame
SHAPES = mask_shapes(H, W)
ORDER = ("disk", "ring", "two parts")


def _boxes_of(masks: list[NDArray[np.bool_] | None]) -> list[list[float]]:
    """Detector-like boxes: each mask's box grown by 2 px (so ``bbox`` is visibly not the mask's)."""
    boxes = []
    for m in masks:
        if m is None:
            boxes.append([1.0, 1.0, 21.0, 11.0])
            continue
        ys, xs = np.nonzero(m)
        boxes.append([float(xs.min()) - 2, float(ys.min()) - 2, float(xs.max()) + 3, float(ys.max()) + 3])
    return boxes


def _masked_results() -> tuple[list[FrameResult], list[NDArray[np.bool_] | None]]:
    rows: list[NDArray[np.bool_] | None] = [SHAPES[name] for name in ORDER]
    dets = make_detections(_boxes_of(rows), [0.9, 0.8, 0.7], [0, 1, 0])
    second: list[NDArray[np.bool_] | None] = [None, SHAPES["disk"]]  # one row without a mask
    dets2 = make_detections(_boxes_of(second), [0.6, 0.5], [1, 0])
    results = [
        make_result(with_shape_masks(dets, rows)),
        make_result(with_shape_masks(dets2, second), item="b.jpg", source="/data/b.jpg"),
    ]
    return results, [*rows, *second]


def _expected(masks: list[NDArray[np.bool_] | None]) -> list[NDArray[np.bool_]]:
    """What each row rasterises to: its mask, or for a row the segmenter found nothing in, its box."""
    out = []
    for mask, (x1, y1, x2, y2) in zip(masks, _boxes_of(masks), strict=True):
        if mask is None:
            mask = np.zeros((H, W), np.bool_)
            mask[int(y1) : int(y2), int(x1) : int(x2)] = True
        out.append(mask)
    return out


def _decode(coco: CocoDocument, path: Path) -> list[NDArray[np.bool_] | None]:
    """Each annotation's mask as pycocotools rasterises it (None: no segmentation)."""
    path.write_text(json.dumps(coco))
    gt = COCO(str(path))
    return [gt.annToMask(gt.anns[a["id"]]).astype(bool) if "segmentation" in a else None for a in coco["annotations"]]


@pytest.mark.parametrize("style", ["rle", "polygon"])
def test_pycocotools_rasterises_exactly_the_masks(style: CocoMaskStyle, tmp_path: Path) -> None:
    results, masks = _masked_results()
    coco = frame_results_to_coco(results, class_names=NAMES, masks=style)

    decoded = _decode(coco, tmp_path / "out.json")
    for got, want in zip(decoded, _expected(masks), strict=True):
        assert got is not None  # every row of a run with masks has a segmentation
        np.testing.assert_array_equal(got, want)
    for ann, mask, box in zip(coco["annotations"], masks, _boxes_of(masks), strict=True):
        x1, y1, x2, y2 = box
        assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]  # the detector's box, not the mask's
        assert ann["area"] == (float(mask.sum()) if mask is not None else (x2 - x1) * (y2 - y1))


def test_rle_is_the_default_and_covers_the_whole_image() -> None:
    results, masks = _masked_results()
    annotations = frame_results_to_coco(results, class_names=NAMES)["annotations"]
    for annotation, mask in zip(annotations, masks, strict=True):
        seg = annotation["segmentation"]
        if mask is None:  # nothing from the segmenter: the box as a polygon
            assert isinstance(seg, list)
            continue
        assert isinstance(seg, dict)
        assert seg["size"] == [H, W]
        assert isinstance(seg["counts"], str)


def test_polygon_mode_writes_rle_for_a_mask_with_holes() -> None:
    """COCO polygons cannot hold a hole (pycocotools unions every list): the ring stays RLE."""
    results, _ = _masked_results()
    anns = frame_results_to_coco(results, class_names=NAMES, masks="polygon")["annotations"]
    kinds = [type(a.get("segmentation")).__name__ for a in anns]
    assert kinds == ["list", "dict", "list", "list", "list"]
    two_parts = anns[2]["segmentation"]
    assert isinstance(two_parts, list)
    assert len(two_parts) == 2  # one flat list per connected part
    assert all(len(ring) >= 6 and len(ring) % 2 == 0 for ring in two_parts)


def test_a_box_the_segmenter_found_nothing_in_is_its_box_as_a_polygon() -> None:
    """Every annotation of a run with masks has a segmentation (pycocotools' segm eval needs one on each)."""
    dets = make_detections([[10, 20, 110, 70], [0, 0, 5, 5]], [0.9, 0.55], [0, 1])
    plain = frame_results_to_coco([make_result(dets)], class_names=NAMES)
    assert all("segmentation" not in a for a in plain["annotations"])  # no masks in the run: as before
    for style in ("rle", "polygon"):
        masked = frame_results_to_coco([make_result(dets.with_masks(Masks.empty(2)))], class_names=NAMES, masks=style)
        assert [a.get("segmentation") for a in masked["annotations"]] == [
            [[10, 20, 110, 20, 110, 70, 10, 70]],
            [[0, 0, 5, 0, 5, 5, 0, 5]],
        ]
        assert [{**a, "segmentation": None} for a in masked["annotations"]] == [
            {**a, "segmentation": None} for a in plain["annotations"]
        ]


def test_cocoeval_segm_scores_our_output_against_itself_as_one(tmp_path: Path) -> None:
    """Our whole file as ground truth and as results, unchanged."""
    results, _ = _masked_results()
    for style in ("rle", "polygon"):
        coco = frame_results_to_coco(results, class_names=NAMES, masks=style)
        masked = coco["annotations"]
        path = tmp_path / f"{style}.json"
        path.write_text(json.dumps(coco))
        gt = COCO(str(path))
        evaluation = COCOeval(gt, gt.loadRes(masked), iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0)  # AP@[.5:.95], all areas
        assert evaluation.stats[8] == pytest.approx(1.0)  # AR@100


def test_faster_coco_eval_loads_our_masks_and_runs_segm(tmp_path: Path) -> None:
    faster = pytest.importorskip("faster_coco_eval")
    results, masks = _masked_results()
    for style in ("rle", "polygon"):
        coco = frame_results_to_coco(results, class_names=NAMES, masks=style)
        masked = coco["annotations"]
        path = tmp_path / f"{style}.json"
        path.write_text(json.dumps(coco))
        gt = faster.COCO(str(path))
        for ann, want in zip(masked, _expected(masks), strict=True):
            np.testing.assert_array_equal(gt.annToMask(gt.anns[ann["id"]]).astype(bool), want)
        evaluation = faster.COCOeval_faster(gt, gt.loadRes(masked), iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(1.0)


def test_supervision_reads_our_masks(tmp_path: Path) -> None:
    sv = pytest.importorskip("supervision")
    results, masks = _masked_results()
    root = tmp_path / "images"
    root.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (root / name).write_bytes(b"")  # supervision resolves file names only; it does not open them here
    for style in ("rle", "polygon"):
        path = tmp_path / f"{style}.json"
        path.write_text(json.dumps(frame_results_to_coco(results, class_names=NAMES, masks=style)))
        dataset = sv.DetectionDataset.from_coco(str(root), str(path), force_masks=True)
        loaded = [dataset.annotations[str((root / n).resolve())].mask for n in ("a.jpg", "b.jpg")]
        got = [m for frame in loaded for m in frame]
        for mask, want, box_only in zip(got, _expected(masks), [m is None for m in masks], strict=True):
            if style == "rle" and not box_only:
                np.testing.assert_array_equal(mask, want)
            else:  # supervision fills with cv2.fillPoly, which also takes the pixels right of and below an edge
                assert not (want & ~mask).any()
                assert box_only or (mask & want).sum() / (mask | want).sum() >= 0.9


def test_segmentation_rle_matches_pycocotools_encode() -> None:
    """The RLE is pycocotools' own ``encode`` of the full-image mask."""
    results, masks = _masked_results()
    seg = frame_results_to_coco(results, class_names=NAMES)["annotations"][1]["segmentation"]
    ring = masks[1]
    assert ring is not None
    assert isinstance(seg, dict)
    assert seg["counts"] == mask_utils.encode(np.asfortranarray(ring.astype(np.uint8)))["counts"].decode()
