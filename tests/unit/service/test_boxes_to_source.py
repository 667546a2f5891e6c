"""Boxes found on a frame the decoder scaled for the detector are mapped back to the source frame's pixels."""

from __future__ import annotations

import numpy as np

from models.types import Detections
from service.pipeline.frames import Frame, FrameInfo, MediaKind, boxes_to_source


def _frame(image_hw: tuple[int, int], source_hw: tuple[int, int]) -> Frame:
    info = FrameInfo("item", "0", "v.mp4", MediaKind.VIDEO, 0, 0.0, width=source_hw[1], height=source_hw[0])
    return Frame(info=info, image=np.zeros((*image_hw, 3), np.uint8))


def _dets(*rows: tuple[float, float, float, float]) -> Detections:
    return Detections.from_arrays(np.array(rows, np.float32), np.full(len(rows), 0.9), np.zeros(len(rows)))


def test_scaled_frame_boxes_scale_back_per_axis() -> None:
    mapped = boxes_to_source(_dets((10, 20, 320, 180), (0, 0, 640, 360)), _frame((360, 640), (720, 1280)))
    assert np.allclose(mapped.xyxy, [[20, 40, 640, 360], [0, 0, 1280, 720]])
    assert mapped.xyxy.dtype == np.float32
    assert np.array_equal(mapped.confidence, np.full(2, 0.9, np.float32))


def test_mapped_boxes_stay_inside_the_source() -> None:
    mapped = boxes_to_source(_dets((-1, -2, 641, 361)), _frame((360, 640), (721, 1281)))
    assert np.allclose(mapped.xyxy, [[0, 0, 1281, 721]])


def test_full_size_frame_boxes_are_untouched() -> None:
    dets = _dets((1.5, 2.5, 3.5, 4.5))
    assert boxes_to_source(dets, _frame((720, 1280), (720, 1280))) is dets
