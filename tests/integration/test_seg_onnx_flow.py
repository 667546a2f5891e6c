"""A ``-seg`` ONNX export through the real flow (decode, detector-sized frames, infer, tracks) into the stored result:
its masks come back in source pixels, on photos and on every tracked video frame."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from models.registry import load_detector
from models.types import Detections
from service.pipeline.flow import FlowOptions, detector_sampling, run_flow, slot_opener, track_stage
from service.pipeline.media import ItemSpec, SlotSpec
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.predictions import ItemPredictions, item_predictions_from_json, item_predictions_to_json
from service.pipeline.tracks import TrackerOptions
from service.samples import write_pan_video
from tests.unit.models import seg_graphs
from tests.unit.models.seg_graphs import BAND_INPUT_Y, BOXES


def _stored(paths: list[Path], model: Path, *, fps: float = 2.0) -> list[ItemPredictions]:
    """Run the files through the flow as the CLI does, and read the items back from their stored JSON."""
    detector = load_detector(f"onnx:{model}")
    items = [ItemSpec(p.name, (SlotSpec(p.name, (p,)),)) for p in paths]
    sampling = detector_sampling(SamplingOptions(fps=fps), detector.info)
    outputs = run_flow(
        items,
        detector,
        FlowOptions(threshold=0.25),
        open_slot=slot_opener(sampling, MediaLimits()),
        finish_item=track_stage(TrackerOptions()),
    )
    stored = [
        json.loads(json.dumps(item_predictions_to_json(ItemPredictions(o.name, o.slots, o.frames)))) for o in outputs
    ]
    return [item_predictions_from_json(p.name, s) for p, s in zip(paths, stored, strict=True)]


def _hband_row(dets: Detections) -> int:
    (row,) = np.flatnonzero(np.isclose(dets.confidence, BOXES["hband"][5]))
    return int(row)


def _band_in_frame(scale: float, pad_x: int, pad_y: int, size: tuple[int, int]) -> np.ndarray:
    """The horizontal band cut to its box, in a frame letterboxed at ``scale`` with that padding."""
    x1, x2 = ((v - pad_x) / scale for v in (BOXES["hband"][0], BOXES["hband"][2]))
    y1, y2 = ((v - pad_y) / scale for v in BAND_INPUT_Y)
    rows, cols = np.mgrid[: size[0], : size[1]]
    return (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)


def test_photo_masks_are_stored_in_source_pixels(tmp_path: Path) -> None:
    # Given a 1280 x 960 photo: the decoder hands the detector a 640 x 480 frame, whose masks are scaled back
    photo = tmp_path / "photo.png"
    rgb = np.random.default_rng(0).integers(1, 255, (960, 1280, 3), dtype=np.uint8)
    cv2.imwrite(str(photo), rgb[:, :, ::-1])
    model = seg_graphs.write(tmp_path / "seg.onnx")

    (item,) = _stored([photo], model)

    (frame,) = item.frames
    dets = frame.detections
    assert dets.masks is not None
    assert dets.masks.has_mask().all()
    # Then the band is exactly where the prototypes put it on the 1280 x 960 source (letterbox scale 0.5, pad y 80)
    got = dets.masks.full(_hband_row(dets), 960, 1280)
    np.testing.assert_array_equal(got, _band_in_frame(0.5, 0, 80, (960, 1280)))
    # and every mask is the one the detector gives on the full-size frame, to within the rescaling's edge pixels
    (direct,) = load_detector(f"onnx:{model}").detect([rgb], threshold=0.25)
    assert direct.masks is not None
    for i in range(len(dets)):
        a, b = dets.masks.full(i, 960, 1280), direct.masks.full(i, 960, 1280)
        assert (a & b).sum() / (a | b).sum() > 0.97


def test_every_tracked_video_frame_keeps_its_masks(tmp_path: Path) -> None:
    video = tmp_path / "pan.mp4"
    write_pan_video(skimage.data.astronaut(), video, duration_s=2.0, fps=10)  # 320 x 240: scale 2, pad y 80

    (item,) = _stored([video], seg_graphs.write(tmp_path / "seg.onnx"))

    assert len(item.frames) >= 4
    expected = _band_in_frame(2.0, 0, 80, (240, 320))
    for frame in item.frames:
        dets = frame.detections
        assert dets.tracker_id is not None
        assert (dets.tracker_id > 0).all()
        assert dets.masks is not None
        np.testing.assert_array_equal(dets.masks.full(_hband_row(dets), 240, 320), expected)
