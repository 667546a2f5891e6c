"""Our own mask outputs (COCO RLE / polygons, Darwin polygons / raster layers) round-trip through ``evaluate``."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from service.convert.coco import frame_results_to_coco
from service.convert.darwin import item_to_darwin
from service.evaluate.api import CandidateIn, EvaluateRequest, request_to_evaluation
from service.evaluate.evaluation import candidate_figures
from tests.builders import masked_item
from tests.unit.service.convert.test_darwin import MODEL
from tests.unit.service.evaluate.fixtures import encord_polygon, encord_row

MASKED_ROWS = 3 + 2 * 3  # the photo's three masks, the clip's two masks on each of three frames


def _coco(style: str) -> dict[str, Any]:
    item = masked_item()
    doc = frame_results_to_coco(item.frames, class_names=MODEL.class_names, masks=style)  # type: ignore[arg-type]
    return json.loads(json.dumps(doc))


def _darwin(style: str, *, track: bool = True) -> list[Any]:
    return [json.loads(json.dumps(item_to_darwin(masked_item(track=track), MODEL, masks=style)))]  # type: ignore[arg-type]


def _figures(benchmark: Any, candidate: Any) -> Any:
    request = EvaluateRequest(benchmark=benchmark, candidates=[CandidateIn(name="ours", data=candidate)])
    (result,) = request_to_evaluation(request).candidates
    return candidate_figures(result)


@pytest.mark.parametrize("style", ["rle", "polygon"])
def test_coco_masks_against_themselves_score_iou_one(style: str) -> None:
    figures = _figures(_coco(style), _coco(style))
    assert (figures["fp"], figures["fn"]) == (0, 0)
    assert figures["mean_iou"] == pytest.approx(1.0)


def test_coco_polygons_against_the_rle_of_the_source_masks_score_iou_one() -> None:
    """Polygons on pixel corners rasterise back to exactly the mask: mask IoU 1.0 against the RLE."""
    figures = _figures(_coco("rle"), _coco("polygon"))
    assert figures["tp"] >= MASKED_ROWS
    assert figures["mean_iou"] == pytest.approx(1.0)


@pytest.mark.parametrize("style", ["polygon", "raster"])
@pytest.mark.parametrize("track", [True, False])
def test_darwin_masks_against_themselves_score_iou_one(style: str, track: bool) -> None:
    figures = _figures(_darwin(style, track=track), _darwin(style, track=track))
    assert (figures["fp"], figures["fn"]) == (0, 0)
    assert figures["tp"] >= MASKED_ROWS
    assert figures["mean_iou"] == pytest.approx(1.0)


def _ring_only(style: str) -> list[Any]:
    """The photo's ring (a mask with a hole) alone: a raster layer then holds exactly its pixels."""
    item = masked_item(track=False)
    photo = item.frames[0]
    ring = replace(photo, detections=photo.detections[np.array([1])])
    only = replace(item, slots=item.slots[:1], frames=(ring,))
    return [json.loads(json.dumps(item_to_darwin(only, MODEL, masks=style)))]  # type: ignore[arg-type]


def test_darwin_polygon_with_a_hole_against_its_raster_mask_scores_at_least_095() -> None:
    """The polygon's paths (the hole an extra path, filled even-odd as V7 does) against the mask's pixels."""
    figures = _figures(_ring_only("raster"), _ring_only("polygon"))
    assert (figures["tp"], figures["fp"], figures["fn"]) == (1, 0, 0)
    assert figures["mean_iou"] >= 0.95


def _encord_holed_row(*, hole: bool, known_size: bool) -> dict[str, Any]:
    """An Encord image row with one polygon: a square (0.2..0.8) with a square hole (0.4..0.6), as 0.1.211 writes
    ``polygons``; ``known_size`` False drops the data unit's width and height."""
    outer = [0.2, 0.2, 0.8, 0.2, 0.8, 0.8, 0.2, 0.8]
    inner = [0.4, 0.4, 0.6, 0.4, 0.6, 0.6, 0.4, 0.6]
    obj = encord_polygon("P0000000", [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)])
    obj["polygons"] = [[outer, inner]] if hole else [[outer]]
    row = encord_row(data_hash="d0", title="a.jpg", label_hash="l0", objects=[obj], width=500, height=500)
    if not known_size:
        for unit in row["data_units"].values():
            del unit["width"], unit["height"]
    return row


@pytest.mark.parametrize("known_size", [True, False])
def test_an_encord_polygon_keeps_its_hole_whether_or_not_the_frame_size_is_known(known_size: bool) -> None:
    """The hole is 1/9 of the square: filled, the ring would score IoU 1 against the plain square."""
    holed = [_encord_holed_row(hole=True, known_size=known_size)]
    plain = [_encord_holed_row(hole=False, known_size=known_size)]
    assert _figures(holed, holed)["mean_iou"] == pytest.approx(1.0)
    assert _figures(plain, holed)["mean_iou"] == pytest.approx(8 / 9, abs=0.01)
