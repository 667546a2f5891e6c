"""service.pipeline.flow: parallel decode workers -> one batching consumer -> per-item results, in order."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from models.errors import DeviceOutOfMemoryError
from models.types import Detections, RGBImage
from service.config import Settings
from service.errors import ErrorCode, PartialMediaError, PreannotateError
from service.pipeline.appearance import crops_to_appearance
from service.pipeline.batching import DynamicBatcher
from service.pipeline.flow import FlowOptions, ItemOutput, SlotOpener, detector_sampling, run_flow
from service.pipeline.frames import Frame, FrameInfo, MediaKind, SlotMeta
from service.pipeline.media import ItemSpec, SlotSpec
from service.pipeline.options import SamplingOptions
from service.pipeline.readers import SlotReader
from service.pipeline.run import SlotFailure
from tests.unit.service.test_batching import FakeDetector, caller_of, image_of

TIMEOUT_S = 10.0


class FakeReader:
    """``frames`` frames whose pixels encode (slot number * 100 + frame index); can fail, stall or wait."""

    def __init__(
        self,
        item: str,
        slot: str,
        number: int,
        frames: int,
        *,
        fail_after: int | None = None,
        error: Exception | None = None,
        gate: threading.Barrier | None = None,
        produced: list[int] | None = None,
    ) -> None:
        self.meta = SlotMeta(
            item=item,
            slot=slot,
            media=MediaKind.VIDEO,
            source_files=(f"{item}-{slot}.mp4",),
            width=6,
            height=4,
            fps=1.0,
            frame_count=frames,
            planned_frames=frames,
        )
        self.number = number
        self.frames = frames
        self.fail_after = fail_after
        self.error = error
        self.gate = gate
        self.produced = produced
        self.closed = False

    def __iter__(self) -> Iterator[Frame]:
        if self.gate is not None:
            self.gate.wait(TIMEOUT_S)  # every gated slot must be decoding at once to get past this
        for index in range(self.frames):
            if self.fail_after is not None and index == self.fail_after:
                raise self.error or PreannotateError(ErrorCode.CORRUPT_MEDIA, "bad packet")
            if self.produced is not None:
                self.produced.append(index)
            info = FrameInfo(self.meta.item, self.meta.slot, "src", MediaKind.VIDEO, index, float(index), 6, 4)
            yield Frame(info=info, image=image_of(self.number * 100 + index))

    def close(self) -> None:
        self.closed = True


class Opener:
    """Opens FakeReaders by slot name ``<frames>`` or ``<frames>:<how>``; remembers them."""

    def __init__(self, **reader_kwargs: object) -> None:
        self.readers: list[FakeReader] = []
        self.kwargs = reader_kwargs
        self.lock = threading.Lock()

    def __call__(self, item: str, slot: SlotSpec) -> SlotReader:
        frames, _, how = slot.name.partition(":")
        if how == "missing":
            raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"{item}/{slot.name}: no such file")
        if how == "bug":
            raise RuntimeError("a decoder surprise")
        kwargs: dict[str, object] = dict(self.kwargs)
        if how == "corrupt":
            kwargs.update(fail_after=2)
        if how == "partial":
            kwargs.update(fail_after=2, error=PartialMediaError(f"{item}: 2 of {frames} frames decoded"))
        with self.lock:
            number = int(str(slot.paths[0])) if slot.paths else len(self.readers)
            reader = FakeReader(item, slot.name, number, int(frames), **kwargs)  # type: ignore[arg-type]
            self.readers.append(reader)
        return reader


def items_of(*layout: tuple[str, ...]) -> list[ItemSpec]:
    """Items named i0, i1, ...; each slot's path is its global number (its frames' pixel codes are number*100+i)."""
    items, number = [], 0
    for n, slots in enumerate(layout):
        specs = []
        for name in slots:
            specs.append(SlotSpec(name, (Path(str(number)),)))
            number += 1
        items.append(ItemSpec(f"i{n}", tuple(specs)))
    return items


def codes(output: ItemOutput) -> list[int]:
    return [int(f.detections.class_id[0]) for f in output.frames]


def test_items_come_out_in_input_order_with_frames_in_time_order_per_slot() -> None:
    fake = FakeDetector()
    items = items_of(("3", "2"), ("1",), ("4", "1", "2"))
    options = FlowOptions(threshold=0.5, batch_size=4, decode_workers=3, queue_frames=2)

    outputs = list(run_flow(items, fake, options, open_slot=Opener()))

    assert [o.name for o in outputs] == ["i0", "i1", "i2"]
    assert [codes(o) for o in outputs] == [[0, 1, 2, 100, 101], [200], [300, 301, 302, 303, 400, 500, 501]]
    assert [[m.slot for m in o.slots] for o in outputs] == [["3", "2"], ["1"], ["4", "1", "2"]]
    # Batches span slots and items: every call but the last is full.
    assert [len(call) for call in fake.calls] == [4, 4, 4, 1]


def test_slots_decode_in_parallel_across_items() -> None:
    # Three slots that each wait until all three are decoding: a serial decoder would time out here.
    gate = threading.Barrier(3)
    options = FlowOptions(threshold=0.5, decode_workers=3)
    started = time.monotonic()
    outputs = list(run_flow(items_of(("2",), ("2", "2")), FakeDetector(), options, open_slot=Opener(gate=gate)))
    assert time.monotonic() - started < TIMEOUT_S / 2
    assert [codes(o) for o in outputs] == [[0, 1], [100, 101, 200, 201]]


def test_decoding_runs_at_most_queue_frames_ahead_per_worker() -> None:
    # Given one long slot and a model that records how far decoding had got at each call
    produced: list[int] = []
    seen: list[int] = []
    fake = FakeDetector(check=lambda images: seen.append(len(produced) - caller_of(images[-1]) - 1))
    options = FlowOptions(threshold=0.5, batch_size=2, decode_workers=2, queue_frames=3)

    (output,) = run_flow(items_of(("200",)), fake, options, open_slot=Opener(produced=produced))

    assert len(output.frames) == 200
    # Then decoding never ran more than the queue (plus the frame in hand) ahead: memory is constant in length.
    assert max(seen) <= 3 + 1


def test_a_bad_slot_fails_alone_and_keeps_the_frames_it_decoded() -> None:
    failures: list[SlotFailure] = []
    items = items_of(("2", "1:missing"), ("5:corrupt", "1:bug"), ("1",))
    options = FlowOptions(threshold=0.5, decode_workers=2, keep_partial=False)

    outputs = list(run_flow(items, FakeDetector(), options, open_slot=Opener(), on_error=failures.append))

    assert [codes(o) for o in outputs] == [[0, 1], [200, 201], [400]]
    assert [(f.item, f.slot, f.error.code) for f in failures] == [
        ("i0", "1:missing", ErrorCode.INPUT_NOT_FOUND),
        ("i1", "5:corrupt", ErrorCode.CORRUPT_MEDIA),
        ("i1", "1:bug", ErrorCode.INTERNAL),
    ]
    assert [len(o.failures) for o in outputs] == [1, 2, 0]
    assert "RuntimeError: a decoder surprise" in failures[2].error.message


def test_without_on_error_a_slot_failure_ends_the_run_and_every_reader_is_closed() -> None:
    opener = Opener()
    with pytest.raises(PreannotateError) as info:
        list(run_flow(items_of(("3", "5:corrupt", "50")), FakeDetector(), FlowOptions(threshold=0.5), open_slot=opener))
    assert info.value.code is ErrorCode.CORRUPT_MEDIA
    assert all(reader.closed for reader in opener.readers)


@pytest.mark.parametrize("keep_partial", [True, False])
def test_a_partly_decoded_slot_is_a_warning_with_keep_partial_else_a_failure(keep_partial: bool) -> None:
    failures: list[SlotFailure] = []
    options = FlowOptions(threshold=0.5, keep_partial=keep_partial)
    (output,) = run_flow(
        items_of(("5:partial",)), FakeDetector(), options, open_slot=Opener(), on_error=failures.append
    )
    assert codes(output) == [0, 1]
    assert len(output.warnings) == int(keep_partial)
    assert len(failures) == int(not keep_partial)


def test_a_callback_that_raises_stops_the_run_and_closes_the_readers() -> None:
    class StopError(Exception):
        pass

    opener = Opener()
    done: list[int] = []

    def on_frame(_: object) -> None:
        done.append(1)
        if len(done) == 3:
            raise StopError

    with pytest.raises(StopError):
        list(
            run_flow(
                items_of(("500", "500")),
                FakeDetector(),
                FlowOptions(threshold=0.5, batch_size=1),
                open_slot=opener,
                on_frame=on_frame,
            )
        )
    assert opener.readers
    assert all(reader.closed for reader in opener.readers)


def test_callbacks_run_in_input_order() -> None:
    events: list[str] = []
    list(
        run_flow(
            items_of(("2",), ("1", "1")),
            FakeDetector(),
            FlowOptions(threshold=0.5, batch_size=8, decode_workers=3),
            open_slot=Opener(),
            on_slot=lambda meta: events.append(f"{meta.item}/{meta.slot}"),
        )
    )
    assert events == ["i0/2", "i1/1", "i1/1"]


def test_finish_item_runs_once_per_item_on_its_output() -> None:
    seen: list[str] = []

    def finish(output: ItemOutput) -> ItemOutput:
        seen.append(output.name)
        return replace(output, frames=output.frames[:1])

    outputs = list(
        run_flow(
            items_of(("3",), ("2",)), FakeDetector(), FlowOptions(threshold=0.5), open_slot=Opener(), finish_item=finish
        )
    )
    assert seen == ["i0", "i1"]
    assert [len(o.frames) for o in outputs] == [1, 1]


def test_an_unknown_class_is_refused_before_anything_is_opened() -> None:
    opener = Opener()
    with pytest.raises(PreannotateError) as info:
        list(run_flow(items_of(("3",)), FakeDetector(), FlowOptions(threshold=0.5, classes=["dog"]), open_slot=opener))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert opener.readers == []


def test_a_plain_detector_out_of_memory_is_split_and_no_frame_is_lost() -> None:
    fake = FakeDetector(oom_above=3)
    (output,) = run_flow(items_of(("10",)), fake, FlowOptions(threshold=0.5, batch_size=8), open_slot=Opener())
    assert codes(output) == list(range(10))
    # 8 and then 4 ran out; the ceiling stayed at 2 for the rest of the run, the last frames included.
    assert [len(call) for call in fake.calls] == [8, 4, 2, 2, 2, 2, 2]
    assert [ids for ids in fake.calls if len(ids) <= 3] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_a_plain_detector_raises_when_one_frame_alone_does_not_fit() -> None:
    fake = FakeDetector(oom_above=0)
    with pytest.raises(DeviceOutOfMemoryError):
        list(run_flow(items_of(("2",)), fake, FlowOptions(threshold=0.5, batch_size=2), open_slot=Opener()))
    assert fake.calls == [[0, 1], [0]]


def test_through_a_batcher_out_of_memory_splits_and_every_frame_is_detected() -> None:
    # The job path: the flow hands batches to the model's shared batcher, which splits them on OOM.
    fake = FakeDetector(oom_above=2)
    batcher = DynamicBatcher(fake, max_batch_size=8, max_wait_ms=0, name=f"flow-{uuid.uuid4().hex[:8]}")
    batcher.start()
    try:
        (output,) = run_flow(items_of(("5", "6")), batcher, FlowOptions(threshold=0.5), open_slot=Opener())
    finally:
        batcher.close()
    assert codes(output) == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104, 105]
    sizes = [len(call) for call in fake.calls]
    assert sizes[:3] == [8, 4, 2]  # split in halves until it fit, and the ceiling stayed down
    assert max(sizes[3:]) <= 2
    assert batcher.max_batch_size == 2


def test_frames_scaled_down_by_the_decoder_get_boxes_in_source_pixels() -> None:
    def half_size(item: str, slot: SlotSpec) -> SlotReader:
        reader = FakeReader(item, slot.name, 0, 1)
        frame = next(iter(reader))
        info = replace(frame.info, width=12, height=8)  # the source is twice the delivered image

        class Scaled:
            meta = reader.meta

            def __iter__(self) -> Iterator[Frame]:
                yield Frame(info=info, image=frame.image)

            def close(self) -> None:
                pass

        return Scaled()

    (output,) = run_flow(items_of(("1",)), FakeDetector(), FlowOptions(threshold=0.9), open_slot=half_size)
    np.testing.assert_allclose(output.frames[0].detections.xyxy, [[0, 0, 2, 2]])


def test_decode_workers_and_queue_depth_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 2 <= Settings().decode_workers <= 8
    monkeypatch.setenv("PREANNOTATE_DECODE_WORKERS", "5")
    monkeypatch.setenv("PREANNOTATE_PREFETCH_FRAMES", "7")
    options = Settings().flow_options(threshold=0.5)
    assert (options.decode_workers, options.queue_frames) == (5, 7)
    monkeypatch.setenv("PREANNOTATE_DECODE_WORKERS", "0")
    with pytest.raises(ValueError, match="decode_workers"):
        Settings()


@pytest.mark.parametrize("field", ["decode_workers", "queue_frames", "batch_size"])
def test_flow_options_refuse_a_limit_below_one(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FlowOptions(threshold=0.5, **{field: 0})  # type: ignore[arg-type]


def test_an_empty_run_yields_nothing() -> None:
    assert list(run_flow([], FakeDetector(), FlowOptions(threshold=0.5), open_slot=Opener())) == []


@pytest.mark.parametrize("keeps_aspect", [True, False])
def test_frames_are_scaled_for_the_detector_only_when_its_resize_keeps_the_aspect(keeps_aspect: bool) -> None:
    detector = FakeDetector()
    detector.info = replace(detector.info, input_size_px=640, keeps_aspect=keeps_aspect)
    sampling = detector_sampling(SamplingOptions(fps=1.0), detector.info)
    # A model that stretches every frame to its fixed size (RT-DETR) must see full frames, not 640x360 ones.
    assert sampling.detector_size_px == (640 if keeps_aspect else None)
    assert replace(sampling, detector_size_px=None) == SamplingOptions(fps=1.0)


def test_a_surprise_in_a_fetching_opener_fails_the_slot_instead_of_hanging_the_run() -> None:
    """A job's opener fetches first: its slots have no local paths yet, and an OSError from the fetch (not a
    PreannotateError) must still end the slot, or the consumer would wait on its queue forever."""

    def fetching_opener(item: str, slot: SlotSpec) -> SlotReader:
        raise OSError("No space left on device")

    items = [ItemSpec("job-item", (SlotSpec("left", ()),))]
    failures: list[SlotFailure] = []
    started = time.monotonic()
    (output,) = run_flow(
        items, FakeDetector(), FlowOptions(threshold=0.0), open_slot=fetching_opener, on_error=failures.append
    )
    assert time.monotonic() - started < 5
    assert output.frames == ()
    (failure,) = failures
    assert failure.error.code is ErrorCode.INTERNAL
    assert failure.error.message == "left: OSError: No space left on device"


class FaceDetector(FakeDetector):
    """One box, on the astronaut's face, in every frame (whatever its size: the face's place scales with it)."""

    FACE = (173.0, 82.0, 274.0, 180.0)

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        return [
            Detections.from_arrays(np.array([self.FACE]) * image.shape[1] / 512, np.array([0.9]), np.array([0]))
            for image in images
        ]


def astronaut_slot(media: MediaKind, *, delivered_px: int = 512) -> SlotOpener:
    """The astronaut photo as a two-frame slot, delivered at ``delivered_px`` (a decoder scaling for the model)."""

    def open_slot(item: str, slot: SlotSpec) -> SlotReader:
        image = cv2.resize(skimage.data.astronaut(), (delivered_px, delivered_px), interpolation=cv2.INTER_AREA)
        meta = SlotMeta(item, slot.name, media, ("a",), 512, 512, 1.0, 2, 2)

        class Reader:
            def __init__(self) -> None:
                self.meta = meta

            def __iter__(self) -> Iterator[Frame]:
                for index in range(2):
                    yield Frame(FrameInfo(item, slot.name, "a", media, index, float(index), 512, 512), image)

            def close(self) -> None:
                pass

        return Reader()

    return open_slot


@pytest.mark.parametrize(
    ("media", "describe", "described"),
    [
        (MediaKind.VIDEO, True, True),
        (MediaKind.VIDEO, False, False),
        (MediaKind.IMAGE, True, False),
    ],
)
def test_video_boxes_are_described_by_their_pixels_only_when_asked(
    media: MediaKind, describe: bool, described: bool
) -> None:
    options = FlowOptions(threshold=0.5, describe_boxes=describe)

    (output,) = run_flow(items_of(("0",)), FaceDetector(), options, open_slot=astronaut_slot(media))

    looks = [f.detections.appearance for f in output.frames]
    if not described:
        assert looks == [None, None]
        return
    # from the frame the model saw (no second decode): the face's own descriptor
    face = crops_to_appearance(skimage.data.astronaut(), np.array([FaceDetector.FACE], np.float32))
    for look in looks:
        assert look is not None
        np.testing.assert_allclose(look, face)
    assert np.linalg.norm(face) == pytest.approx(1.0)


def test_a_frame_scaled_down_for_the_model_is_described_in_its_own_pixels() -> None:
    # Given a decoder that hands the model the 512 px photo at 256 px (the boxes then map back to 512)
    options = FlowOptions(threshold=0.5, describe_boxes=True)
    open_slot = astronaut_slot(MediaKind.VIDEO, delivered_px=256)

    (output,) = run_flow(items_of(("0",)), FaceDetector(), options, open_slot=open_slot)

    # Then the box is in source pixels, and its descriptor is of the face in the pixels the model saw
    frame = output.frames[0]
    np.testing.assert_allclose(frame.detections.xyxy, [FaceDetector.FACE], atol=1e-3)
    small = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    expected = crops_to_appearance(small, np.array([FaceDetector.FACE], np.float32) / 2)
    assert frame.detections.appearance is not None
    np.testing.assert_allclose(frame.detections.appearance, expected)
    # which the source-pixel box on the small frame (mostly off it) would not have given
    wrong = crops_to_appearance(small, np.array([FaceDetector.FACE], np.float32))
    assert not np.allclose(expected, wrong, atol=0.05)
