"""Box geometry: letterbox and its inverse, per-class NMS, IoU, conversions, scale_to_fit."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from models.ops.boxes import (
    LETTERBOX_PAD_VALUE,
    Letterbox,
    box_iof_matrix,
    box_iou_matrix,
    clip_xyxy,
    cxcywh_to_xyxy,
    letterbox,
    nms_per_class,
    scale_to_fit,
    xyxy_to_xywh,
)


def _f32(rows: list[list[float]]) -> NDArray[np.float32]:
    return np.array(rows, np.float32).reshape(-1, 4)


@pytest.mark.parametrize(
    ("src_hw", "target_hw", "stride_px", "out_hw", "expected"),
    [
        pytest.param((480, 640), (640, 640), None, (640, 640), Letterbox(1.0, 1.0, 0.0, 80.0), id="landscape"),
        pytest.param((640, 300), (640, 640), None, (640, 640), Letterbox(1.0, 1.0, 170.0, 0.0), id="portrait"),
        pytest.param((960, 1280), (640, 640), None, (640, 640), Letterbox(0.5, 0.5, 0.0, 80.0), id="downscale"),
        pytest.param((100, 100), (640, 640), None, (640, 640), Letterbox(6.4, 6.4, 0.0, 0.0), id="upscale"),
        pytest.param((480, 640), (480, 640), None, (480, 640), Letterbox(1.0, 1.0, 0.0, 0.0), id="identity"),
        # Rounded resize: 400 * 1.0667 = 426.67 -> 427 rows, so the y scale is 427 / 400; pad 213 splits
        # 106 / 107 (Ultralytics' -0.1 rule).
        pytest.param(
            (400, 600), (640, 640), None, (640, 640), Letterbox(640 / 600, 427 / 400, 0.0, 106.0), id="rounded"
        ),
        # Ultralytics auto=True (dynamic exports): pad only to the next multiple of 32.
        pytest.param(
            (400, 600), (320, 320), 32, (224, 320), Letterbox(320 / 600, 213 / 400, 0.0, 5.0), id="auto-400x600"
        ),
        pytest.param((512, 200), (320, 320), 32, (320, 128), Letterbox(0.625, 0.625, 1.0, 0.0), id="auto-tall"),
        pytest.param((300, 512), (320, 320), 32, (192, 320), Letterbox(0.625, 188 / 300, 0.0, 2.0), id="auto-wide"),
        pytest.param((512, 512), (320, 320), 32, (320, 320), Letterbox(0.625, 0.625, 0.0, 0.0), id="auto-square"),
    ],
)
def test_letterbox_geometry(
    src_hw: tuple[int, int],
    target_hw: tuple[int, int],
    stride_px: int | None,
    out_hw: tuple[int, int],
    expected: Letterbox,
) -> None:
    image = np.full((*src_hw, 3), 7, np.uint8)
    out, lb = letterbox(image, *target_hw, stride_px=stride_px)
    assert out.shape == (*out_hw, 3)
    assert out.dtype == np.uint8
    assert lb.scale_x == pytest.approx(expected.scale_x, abs=1e-4)
    assert lb.scale_y == pytest.approx(expected.scale_y, abs=1e-4)
    assert (lb.pad_x_px, lb.pad_y_px) == (expected.pad_x_px, expected.pad_y_px)


def test_letterbox_pads_with_grey_and_keeps_content() -> None:
    image = np.full((480, 640, 3), 7, np.uint8)
    out, _ = letterbox(image, 640, 640)
    assert (out[:80] == LETTERBOX_PAD_VALUE).all()
    assert (out[560:] == LETTERBOX_PAD_VALUE).all()
    assert (out[80:560] == 7).all()


@pytest.mark.parametrize(("src_hw", "stride_px"), [((480, 640), None), ((400, 600), None), ((333, 517), 32)])
def test_letterbox_to_source_round_trip(src_hw: tuple[int, int], stride_px: int | None) -> None:
    # Given boxes in source pixels, mapped into the network input the way the resize moved them
    _, lb = letterbox(np.zeros((*src_hw, 3), np.uint8), 640, 640, stride_px=stride_px)
    source = _f32([[0, 0, src_hw[1], src_hw[0]], [10.5, 20.25, 100, 200]])
    scale = np.array([lb.scale_x, lb.scale_y] * 2, np.float32)
    pad = np.array([lb.pad_x_px, lb.pad_y_px] * 2, np.float32)
    # Then to_source gives them back
    np.testing.assert_allclose(lb.to_source(source * scale + pad), source, atol=1e-3)


def test_to_source_maps_the_image_area_to_the_whole_frame() -> None:
    _, lb = letterbox(np.zeros((480, 640, 3), np.uint8), 640, 640)
    np.testing.assert_allclose(lb.to_source(_f32([[0, 80, 640, 560]])), [[0, 0, 640, 480]])


@pytest.mark.parametrize(
    ("xyxy", "confidence", "class_id", "max_detections", "expected"),
    [
        pytest.param([], [], [], 300, [], id="empty"),
        pytest.param(
            [[0, 0, 10, 10], [0, 0, 10, 11]], [0.8, 0.9], [0, 0], 300, [1], id="same-class-overlap-keeps-best"
        ),
        pytest.param(
            [[0, 0, 10, 10], [0, 0, 10, 11]], [0.8, 0.9], [0, 1], 300, [1, 0], id="different-classes-both-kept"
        ),
        pytest.param(
            [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
            [0.5, 0.9, 0.7],
            [2, 0, 1],
            300,
            [1, 2, 0],
            id="best-first",
        ),
        pytest.param(
            [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.5, 0.9, 0.7], [0, 0, 0], 2, [1, 2], id="max-dets"
        ),
        pytest.param([[0, 0, 10, 10], [0, 0, 10, 12]], [0.9, 0.8], [0, 0], 300, [0], id="iou-0.83-suppressed"),
        pytest.param([[0, 0, 10, 10], [0, 0, 10, 20]], [0.9, 0.8], [0, 0], 300, [0, 1], id="iou-0.5-kept"),
    ],
)
def test_nms_per_class(
    xyxy: list[list[float]],
    confidence: list[float],
    class_id: list[int],
    max_detections: int,
    expected: list[int],
) -> None:
    kept = nms_per_class(
        _f32(xyxy),
        np.array(confidence, np.float32),
        np.array(class_id, np.int64),
        iou_threshold=0.7,
        max_detections=max_detections,
    )
    assert kept.tolist() == expected


def test_nms_caps_after_suppression_not_before() -> None:
    # Given five copies of one box scoring highest, then four disjoint boxes
    xyxy = _f32([[0, 0, 10, 10]] * 5 + [[20 * i, 50, 20 * i + 10, 60] for i in range(4)])
    confidence = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.5, 0.4, 0.3, 0.2], np.float32)
    # When at most 3 are kept
    kept = nms_per_class(xyxy, confidence, np.zeros(9, np.int64), iou_threshold=0.7, max_detections=3)
    # Then the cap applies to the survivors (a pre-suppression cap would leave only the first copy)
    assert kept.tolist() == [0, 5, 6]


def test_xyxy_to_xywh() -> None:
    np.testing.assert_array_equal(xyxy_to_xywh(_f32([[10, 20, 30, 60]])), [[10, 20, 20, 40]])


def test_cxcywh_to_xyxy() -> None:
    out = cxcywh_to_xyxy(_f32([[20, 40, 20, 40], [0.5, 0.5, 1, 1]]))
    np.testing.assert_array_equal(out, [[10, 20, 30, 60], [0, 0, 1, 1]])
    assert out.dtype == np.float32


def test_conversions_round_trip() -> None:
    xyxy = _f32([[1.5, 2.5, 10, 20]])
    xywh = xyxy_to_xywh(xyxy)
    cxcywh = np.concatenate([xywh[:, :2] + xywh[:, 2:] / 2, xywh[:, 2:]], axis=1)
    np.testing.assert_allclose(cxcywh_to_xyxy(cxcywh), xyxy)


def test_clip_xyxy() -> None:
    out = clip_xyxy(_f32([[-5, -5, 700, 500], [10, 10, 20, 20]]), 640, 480)
    np.testing.assert_array_equal(out, [[0, 0, 640, 480], [10, 10, 20, 20]])


@pytest.mark.parametrize(
    ("hw", "max_side_px", "multiple", "expected"),
    [
        ((480, 640), 640, 32, (480, 640)),
        ((1080, 1920), 640, 32, (352, 640)),
        ((1920, 1080), 640, 32, (640, 352)),
        ((100, 200), 640, 1, (100, 200)),  # never upscaled
        ((100, 200), 640, 32, (96, 192)),
        ((10, 1000), 640, 32, (32, 640)),  # at least one multiple
    ],
)
def test_scale_to_fit(hw: tuple[int, int], max_side_px: int, multiple: int, expected: tuple[int, int]) -> None:
    assert scale_to_fit(*hw, max_side_px, multiple=multiple) == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(
            [[0, 0, 10, 10], [0, 0, 0, 0]],
            [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]],
            [[1.0, 1 / 3, 0.0], [0.0, 0.0, 0.0]],
            id="overlap-half-apart-degenerate",
        ),
        pytest.param([[0, 0, 4, 4]], [[1, 1, 3, 3]], [[0.25]], id="contained"),
        pytest.param([[0, 0, 2, 2]], [[2, 0, 4, 2]], [[0.0]], id="touching-edges"),
        pytest.param(np.zeros((0, 4)), [[0, 0, 1, 1]], np.zeros((0, 1)), id="no-a"),
        pytest.param([[0, 0, 1, 1]], np.zeros((0, 4)), np.zeros((1, 0)), id="no-b"),
    ],
)
def test_box_iou_matrix(a: list[list[float]], b: list[list[float]], expected: list[list[float]]) -> None:
    iou = box_iou_matrix(np.asarray(a, np.float32), np.asarray(b, np.float64))
    assert iou.dtype == np.float64
    np.testing.assert_allclose(iou, np.asarray(expected, np.float64).reshape(iou.shape))


def test_box_iof_matrix_divides_by_the_first_box_area() -> None:
    a = np.array([[0, 0, 10, 10], [5, 5, 5, 9]], np.float64)  # the second has no area
    b = np.array([[5, 0, 20, 10], [100, 100, 110, 110]], np.float64)
    iof = box_iof_matrix(a, b)
    np.testing.assert_allclose(iof, [[0.5, 0.0], [0.0, 0.0]])
    assert box_iof_matrix(a[:0], b).shape == (0, 2)
