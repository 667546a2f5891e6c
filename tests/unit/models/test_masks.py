"""Masks as run-length crops: encode, select, place, scale, and the JSON the store keeps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.masks import Masks
from models.types import Detections


def _disk(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r**2


def test_from_full_keeps_each_mask_in_its_tight_box() -> None:
    disk = _disk(60, 80, 30, 20, 8)
    masks = Masks.from_full(np.stack([disk, np.zeros_like(disk)]))
    assert masks.origin_xy.tolist() == [[23, 13], [0, 0]]
    assert masks.size_hw.tolist() == [[15, 15], [0, 0]]
    assert masks.has_mask().tolist() == [True, False]
    assert masks.area_px().tolist() == [float(disk.sum()), 0.0]
    np.testing.assert_array_equal(masks.full(0, 60, 80), disk)
    assert not masks.full(1, 60, 80).any()
    assert masks.xyxy().tolist() == [[23, 13, 38, 28], [0, 0, 0, 0]]


def test_crops_are_placed_where_their_origin_says_and_clipped_to_the_frame() -> None:
    crop = np.ones((4, 6), np.bool_)
    masks = Masks.from_crops([crop], np.array([[-2, 8]]))
    full = masks.full(0, 10, 10)
    assert full.sum() == 4 * 2  # 2 rows fall below the frame, 2 columns left of it
    assert full[8:10, 0:4].all()


def test_rows_follow_a_selection_and_json_round_trips() -> None:
    disks = np.stack([_disk(40, 40, 10, 10, r) for r in (3, 5, 7)])
    masks = Masks.from_full(disks)
    picked = masks[np.array([True, False, True])]
    assert picked.area_px().tolist() == [float(disks[0].sum()), float(disks[2].sum())]
    back = Masks.from_json(masks.to_json())
    assert back.counts == masks.counts
    np.testing.assert_array_equal(back.origin_xy, masks.origin_xy)
    np.testing.assert_array_equal(back.size_hw, masks.size_hw)


def test_scaling_maps_a_mask_to_the_source_frame() -> None:
    small = _disk(50, 80, 40, 25, 10)
    big = _disk(100, 160, 80, 50, 20)
    scaled = Masks.from_full(small[None]).scaled(2.0, 2.0, 100, 160)
    full = scaled.full(0, 100, 160)
    iou = (full & big).sum() / (full | big).sum()
    assert iou > 0.9


@pytest.mark.parametrize(("sx", "sy"), [(1.875, 1.875), (3.0, 2.5), (0.8, 0.8)])
def test_scaling_a_mask_matches_resizing_the_whole_frame(sx: float, sy: float) -> None:
    """Each crop resampled on its own lands where a bilinear resize of the whole frame puts it: same area, same
    pixels (to the interpolator's rounding), no outward stretch from the rounded-out window."""
    height, width = 64, 96
    out_h, out_w = round(height * sy), round(width * sx)
    shapes = [_disk(height, width, 20.3, 17.7, 9.4), _disk(height, width, 70, 40, 15), np.zeros((height, width), bool)]
    shapes[2][11:30, 41:52] = True  # a rectangle with an L cut out: straight edges at odd origins
    shapes[2][11:20, 41:46] = False
    shapes.append(np.eye(height, width, k=20, dtype=bool) | np.eye(height, width, k=21, dtype=bool))  # thin
    masks = Masks.from_full(np.stack(shapes))

    scaled = masks.scaled(out_w / width, out_h / height, out_h, out_w)

    for i, shape in enumerate(shapes):
        whole = cv2.resize(shape.astype(np.float32), (out_w, out_h), interpolation=cv2.INTER_LINEAR) >= 0.5
        mine = scaled.full(i, out_h, out_w)
        assert abs(int(mine.sum()) - int(whole.sum())) <= 0.005 * whole.sum() + 2
        assert (mine & whole).sum() / (mine | whole).sum() >= 0.99


def test_detections_carry_masks_through_selection_and_tracker_ids() -> None:
    masks = Masks.from_full(np.stack([_disk(20, 20, 5, 5, 3), _disk(20, 20, 14, 14, 4)]))
    dets = Detections.from_arrays(np.array([[2, 2, 8, 8], [10, 10, 18, 18]]), np.array([0.9, 0.4]), np.array([0, 1]))
    dets = dets.with_masks(masks)
    kept = dets[dets.confidence > 0.5]
    assert kept.masks is not None
    assert kept.masks.origin_xy.tolist() == [[3, 3]]
    tracked = dets.with_tracker_id(np.array([1, 2], np.int64))
    assert tracked.masks is masks
    with pytest.raises(ValueError, match="masks"):
        Detections.from_arrays(np.zeros((1, 4)), np.zeros(1), np.zeros(1), masks=masks)
