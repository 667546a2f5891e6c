"""Mask -> polygon rings on pixel corners: rasterised again they give back the mask's pixels."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from models.masks import Masks
from service.convert.masks import Polygon, mask_to_coco_rle, mask_to_polygons

H, W = 120, 140


def _shapes() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    r2 = (xx - 70) ** 2 + (yy - 60) ** 2
    rng = np.random.default_rng(0)
    import cv2

    blob = cv2.GaussianBlur(rng.random((H, W)), (0, 0), 4) > 0.5
    return {
        "ring": (r2 < 40**2) & (r2 >= 15**2),
        "one pixel": (xx == 5) & (yy == 7),
        "diagonal": np.eye(H, W, dtype=bool),
        "blob with holes and islands": blob,
        "island in a hole": ((r2 < 40**2) & (r2 >= 20**2)) | (r2 < 8**2),
    }


def _fill(ring: np.ndarray, height: int, width: int) -> np.ndarray:
    rle = mask_utils.frPyObjects([ring.ravel().tolist()], height, width)[0]
    return mask_utils.decode(rle).astype(bool)


def _rasterise(polygons: list[Polygon], height: int, width: int) -> np.ndarray:
    """Each polygon is its outer ring less its holes; the mask is their union."""
    out = np.zeros((height, width), np.bool_)
    for polygon in polygons:
        part = _fill(polygon.outer_xy, height, width)
        for hole in polygon.holes_xy:
            part &= ~_fill(hole, height, width)
        out |= part
    return out


@pytest.mark.parametrize("name", list(_shapes()))
def test_rings_rasterise_back_to_the_mask(name: str) -> None:
    mask = _shapes()[name]
    masks = Masks.from_full(mask[None])
    polygons = mask_to_polygons(masks, 0)
    np.testing.assert_array_equal(_rasterise(polygons, H, W), mask)
    even_odd = np.zeros((H, W), np.bool_)
    for polygon in polygons:
        for ring in polygon.rings():
            even_odd ^= _fill(ring, H, W)
    np.testing.assert_array_equal(even_odd, mask)
    assert all(len(r) >= 3 for p in polygons for r in p.rings())


def test_a_ring_shape_is_one_polygon_with_one_hole() -> None:
    polygons = mask_to_polygons(Masks.from_full(_shapes()["ring"][None]), 0)
    assert [len(p.holes_xy) for p in polygons] == [1]


def test_an_island_in_a_hole_is_a_polygon_of_its_own() -> None:
    polygons = mask_to_polygons(Masks.from_full(_shapes()["island in a hole"][None]), 0)
    assert [len(p.holes_xy) for p in polygons] == [1, 0]  # largest first


def test_empty_mask_has_no_polygons() -> None:
    assert mask_to_polygons(Masks.empty(1), 0) == []


def test_coco_rle_is_on_the_whole_frame() -> None:
    mask = _shapes()["ring"]
    rle = mask_to_coco_rle(Masks.from_full(mask[None]), 0, H, W)
    assert rle["size"] == [H, W]
    decoded = mask_utils.decode({"size": [H, W], "counts": str(rle["counts"]).encode()})
    np.testing.assert_array_equal(decoded.astype(bool), mask)


def test_coco_rle_equals_pycocotools_encode_of_the_full_frame_for_random_crops() -> None:
    """Built from the crop's runs, the counts are exactly encode's: crops touching every edge, runs that continue
    from one column's bottom to the next column's top, empty masks, a mask reaching the last pixel."""
    rng = np.random.default_rng(1)
    for _ in range(2000):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        full = np.zeros((height, width), np.bool_)
        y0, y1 = sorted(int(v) for v in rng.integers(0, height + 1, 2))
        x0, x1 = sorted(int(v) for v in rng.integers(0, width + 1, 2))
        full[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > rng.random()
        want = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))["counts"].decode()
        got = mask_to_coco_rle(Masks.from_full(full[None]), 0, height, width)
        assert got == {"size": [height, width], "counts": want}


def test_coco_rle_drops_what_lies_outside_the_frame() -> None:
    masks = Masks.from_crops([np.ones((4, 6), np.bool_)], np.array([[-2, 8]]))
    rle = mask_to_coco_rle(masks, 0, 10, 10)
    decoded = mask_utils.decode({"size": [10, 10], "counts": str(rle["counts"]).encode()})
    np.testing.assert_array_equal(decoded.astype(bool), masks.full(0, 10, 10))
