"""service.pipeline.flow with a box-prompted segmenter: one ``segment`` call per batch on the frames the detector saw,
a mask per kept box, in source pixels; the interactive path too."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from models.masks import Masks
from models.types import Detections, RGBImage
from service.errors import ErrorCode, PreannotateError
from service.pipeline.batching import DynamicBatcher
from service.pipeline.flow import FlowOptions, detect_one, detector_sampling, run_flow, track_stage
from service.pipeline.frames import Frame, FrameInfo, MediaKind
from service.pipeline.masking import SharedSegmenter
from service.pipeline.options import SamplingOptions
from service.pipeline.tracks import TrackerOptions
from tests.fakes.segmenter import EllipseSegmenter, ellipse_in
from tests.unit.service.test_batching import RESULT_TIMEOUT_S, FakeDetector, caller_of, image_of, make_batcher
from tests.unit.service.test_flow import FaceDetector, Opener, astronaut_slot, items_of

__all__ = ["make_batcher"]  # the fixture, imported for this module's tests

BOX = (1.0, 0.0, 5.0, 4.0)  # fills most of the fake readers' 6x4 frames


class EvenFramesDetector(FakeDetector):
    """One box (``BOX``) on frames whose code is even, none on the others."""

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        self.calls.append([caller_of(image) for image in images])
        return [
            Detections.from_arrays(np.array([BOX]), np.array([0.9]), np.array([0]))
            if caller_of(image) % 2 == 0
            else Detections.empty()
            for image in images
        ]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_each_kept_box_gets_its_mask_in_source_pixels_from_the_frame_the_detector_saw() -> None:
    # Given video frames the decoder scaled to 256 px for the model (source 512 px), and tracking on
    segmenter = EllipseSegmenter()
    open_slot = astronaut_slot(MediaKind.VIDEO, delivered_px=256)
    finish = track_stage(TrackerOptions(min_length=1))

    (output,) = run_flow(
        items_of(("0",)),
        FaceDetector(),
        FlowOptions(threshold=0.5),
        open_slot=open_slot,
        finish_item=finish,
        segmenter=segmenter,
    )

    # Then the segmenter ran once, on the two 256 px frames the detector saw
    assert segmenter.calls == [2]
    assert segmenter.seen == [(256, 256, 1), (256, 256, 1)]
    # and each frame's box carries its mask, scaled back to the 512 px source with the box (through tracking)
    expected = ellipse_in(FaceDetector.FACE, 512, 512)
    for frame in output.frames:
        masks = frame.detections.masks
        assert masks is not None
        assert len(masks) == 1
        assert iou(masks.full(0, 512, 512), expected) >= 0.95
        assert frame.detections.tracker_id is not None


def test_one_segment_call_per_batch_and_frames_without_boxes_never_reach_the_model() -> None:
    segmenter = EllipseSegmenter()
    items = items_of(("5", "3"))  # frame codes 0..4 and 100..102: 5 of the 8 are even

    (output,) = run_flow(
        items, EvenFramesDetector(), FlowOptions(threshold=0.5, batch_size=4), open_slot=Opener(), segmenter=segmenter
    )

    assert segmenter.calls == [4, 4]
    assert segmenter.seen == [(4, 6, 1)] * 5
    with_masks = [f.info.frame_index for f in output.frames if f.detections.masks is not None]
    assert with_masks == [0, 2, 4, 0, 2]
    for frame in output.frames:
        if frame.detections.masks is not None:
            np.testing.assert_array_equal(frame.detections.masks.full(0, 4, 6), ellipse_in(BOX, 4, 6))
        else:
            assert len(frame.detections) == 0


def test_only_boxes_the_class_filter_kept_are_segmented() -> None:
    # The echo detector labels each frame's boxes with the frame's code; only code 0 is the class "caller".
    segmenter = EllipseSegmenter()
    options = FlowOptions(threshold=0.5, classes=["caller"])

    (output,) = run_flow(items_of(("3",)), FakeDetector(), options, open_slot=Opener(), segmenter=segmenter)

    assert [len(f.detections) for f in output.frames] == [3, 0, 0]
    assert [rows for _, _, rows in segmenter.seen] == [3]


def test_without_a_segmenter_nothing_has_masks() -> None:
    (output,) = run_flow(items_of(("2",)), EvenFramesDetector(), FlowOptions(threshold=0.5), open_slot=Opener())
    assert [f.detections.masks for f in output.frames] == [None, None]


def test_segmenter_out_of_memory_splits_the_batch_and_no_frame_loses_its_masks() -> None:
    segmenter = EllipseSegmenter(oom_above=2)
    options = FlowOptions(threshold=0.5, batch_size=8)

    (output,) = run_flow(items_of(("8",)), EvenFramesDetector(), options, open_slot=Opener(), segmenter=segmenter)

    # 8 and 4 ran out; the ceiling stays at 2 for the rest of the batch
    assert segmenter.calls == [8, 4, 2, 2, 2, 2]
    assert [f.detections.masks is not None for f in output.frames] == [True, False] * 4


def test_a_frame_that_alone_does_not_fit_the_segmenter_is_a_clear_error_not_boxes_without_masks() -> None:
    """A segmenter splits one frame's boxes itself (SAM halves its decoder calls); when a single frame still runs
    out, the item fails (retryable in jobs) rather than being stored as if its boxes had no masks."""
    segmenter = EllipseSegmenter(oom_above=0)
    with pytest.raises(PreannotateError) as info:
        list(
            run_flow(
                items_of(("1",)),
                EvenFramesDetector(),
                FlowOptions(threshold=0.5),
                open_slot=Opener(),
                segmenter=segmenter,
            )
        )
    assert info.value.code is ErrorCode.DEVICE_OUT_OF_MEMORY
    assert info.value.code.retryable


@pytest.mark.parametrize(
    ("model_px", "keeps_aspect", "segmenter_px", "decoded_px"),
    [
        (640, True, 1024, 1024),  # SAM needs more detail than the detector: decoded at SAM's size
        (1280, True, 1024, 1280),  # the detector already asks for more
        (None, True, 1024, None),  # the detector takes any size: full frames
        (640, True, None, None),  # the segmenter takes any size: full frames
        (640, False, 1024, None),  # a stretching detector gets full frames anyway
    ],
)
def test_with_a_segmenter_frames_are_decoded_at_least_at_its_input_size(
    model_px: int | None, keeps_aspect: bool, segmenter_px: int | None, decoded_px: int | None
) -> None:
    detector = FakeDetector()
    detector.info = replace(detector.info, input_size_px=model_px, keeps_aspect=keeps_aspect)
    segmenter = EllipseSegmenter(input_size_px=segmenter_px)

    sampling = detector_sampling(SamplingOptions(fps=1.0), detector.info, segmenter.info)

    assert sampling.detector_size_px == decoded_px
    assert replace(sampling, detector_size_px=None) == SamplingOptions(fps=1.0)


def test_detect_one_segments_off_the_loop_and_maps_masks_to_source_pixels(
    make_batcher: Callable[..., DynamicBatcher],
) -> None:
    fake = EvenFramesDetector()
    fake.info = replace(fake.info, input_size_px=32, keeps_aspect=True)
    batcher = make_batcher(fake)
    segmenter = EllipseSegmenter(input_size_px=64)
    opened: list[SamplingOptions] = []

    def open_frame(sampling: SamplingOptions) -> Frame:
        opened.append(sampling)
        info = FrameInfo("item", "0", "src", MediaKind.IMAGE, 0, None, 12, 8)
        return Frame(info=info, image=image_of(0))  # decoded at half size

    async def main() -> tuple[Detections, str]:
        shared = SharedSegmenter(segmenter)
        result = await detect_one(open_frame, batcher, threshold=0.5, timeout_s=RESULT_TIMEOUT_S, segmenter=shared)
        return result.detections, threading.current_thread().name

    detections, loop_thread = asyncio.run(main())

    assert [s.detector_size_px for s in opened] == [64]  # sized for the segmenter, the larger of the two
    assert segmenter.calls == [1]
    assert loop_thread not in segmenter.threads
    assert detections.masks is not None
    assert iou(detections.masks.full(0, 8, 12), ellipse_in(np.array(BOX) * 2, 8, 12)) >= 0.7
    np.testing.assert_allclose(detections.xyxy, [np.array(BOX) * 2])


class MaskingFaceDetector(FaceDetector):
    """The face box with a mask of its own: the whole box."""

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        out = []
        for image, dets in zip(images, super()._detect_batch(images, threshold), strict=True):
            full = np.zeros((1, *image.shape[:2]), np.bool_)
            x1, y1, x2, y2 = (int(v) for v in dets.xyxy[0])
            full[0, y1:y2, x1:x2] = True
            out.append(dets.with_masks(Masks.from_full(full)))
        return out


def test_a_segmenters_masks_replace_a_mask_making_detectors() -> None:
    run = partial(run_flow, items_of(("0",)), MaskingFaceDetector(), FlowOptions(threshold=0.5))
    (own,) = run(open_slot=astronaut_slot(MediaKind.IMAGE))
    (segmented,) = run(open_slot=astronaut_slot(MediaKind.IMAGE), segmenter=EllipseSegmenter())

    box = np.zeros((512, 512), np.bool_)
    x1, y1, x2, y2 = (int(v) for v in FaceDetector.FACE)
    box[y1:y2, x1:x2] = True
    own_masks, segmented_masks = own.frames[0].detections.masks, segmented.frames[0].detections.masks
    assert own_masks is not None
    assert segmented_masks is not None
    np.testing.assert_array_equal(own_masks.full(0, 512, 512), box)
    assert iou(segmented_masks.full(0, 512, 512), ellipse_in(FaceDetector.FACE, 512, 512)) >= 0.95
