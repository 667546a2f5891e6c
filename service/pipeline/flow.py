"""The one pipeline every entry point runs: open/decode -> batch -> infer -> per-item result.

Stages overlap through bounded queues. ``decode_workers`` threads open and decode slots, in parallel across the
slots and items of a run, each into its own queue of at most ``queue_frames`` frames; the caller's thread takes
the frames back in input order, fills a batch, runs the detector on it and files each result under its item.
Items come out in input order, frames in time order within each slot, and memory stays bounded whatever the
length of a video: ``decode_workers x queue_frames`` decoded frames, plus, for a video whose every frame goes to a
detector, its key-frame segment decoders' read-ahead (``service.pipeline.segments``: at most 4 x 64 frames at the
detector's input size per slot).

Workers take slots strictly in input order and the consumer drains them in the same order, so the slot the
consumer waits on has always been taken by a worker: the bounded queues cannot deadlock.

Batching and out-of-memory splitting happen here only (``_infer``): a plain detector gets batches of at most
its ceiling, split in halves on device OOM (``models.oom``); a ``DynamicBatcher`` takes the same batches,
chunks them under its own ceiling, which it lowers on OOM, and shares its model with other callers.

With a box-prompted segmenter (``service.pipeline.masking``), each batch's kept boxes become masks in one
``segment`` call on the frames the detector saw, before boxes and masks are mapped back to source pixels.

Interactive requests (``/v1/predict``, V7's BYOM ``/v7/infer``) run one frame through the same stages from an
event loop (``detect_one``): open and decode on a worker thread, then the shared batcher, whose deadline drops
a frame that waited too long, then the infer stage's class filter, masks and box mapping.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeAlias

import anyio
import anyio.to_thread

from models.base import Segmenter, SegmenterInfo
from models.oom import BatchCeiling, detect_splitting_on_oom
from models.types import Detections, ModelInfo, RGBImage
from service.errors import ErrorCode, PartialMediaError, PreannotateError
from service.pipeline.appearance import crops_to_appearance
from service.pipeline.batching import DynamicBatcher
from service.pipeline.frames import Frame, FrameResult, SlotMeta, boxes_to_source
from service.pipeline.masking import MaskStage, SharedSegmenter
from service.pipeline.media import ItemSpec, SlotSpec
from service.pipeline.media import open_slot as open_local_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.predictions import at_stored_precision
from service.pipeline.readers import SlotReader
from service.pipeline.run import (
    DetectionFilter,
    FrameDetector,
    SlotFailure,
    detection_filter,
    report_failure,
    unexpected_failure,
)
from service.pipeline.tracks import TRACKED_MEDIA, TrackerOptions, assign_tracker_ids

log = logging.getLogger(__name__)

_STOP_WAIT_S = 10.0
"""How long stopping a run waits, all decode workers together."""
_POLL_S = 0.5
"""How often the consumer, waiting on a slot, checks that a decode worker is still there to fill it."""

SlotOpener = Callable[[str, SlotSpec], SlotReader]
"""``(item name, slot) -> an opened reader``; raises PreannotateError for bad input. Runs on a decode worker."""


@dataclass(frozen=True, slots=True)
class FlowOptions:
    """How one run detects and how far its stages may run ahead.

    Attributes:
        threshold: keep boxes scoring >= this.
        classes: keep only these class names (None: all); an unknown name is INVALID_ARGUMENT before any work.
        class_thresholds: ``{class: least score}`` over ``threshold`` (``calibrate``'s); the detector is asked at
            the least of them all, then each row kept at its class's (``run.detection_filter``). An unknown name is
            INVALID_ARGUMENT, as for ``classes``.
        batch_size: frames per model call; None = the detector's own (a batcher's current ceiling).
        decode_workers: slots opened and decoded at once (``PREANNOTATE_DECODE_WORKERS``).
        queue_frames: decoded frames each of them may hold ahead of the model (``PREANNOTATE_PREFETCH_FRAMES``).
        keep_partial: a slot that stops decoding part way (``PartialMediaError``) keeps the frames that decoded and
            the item records a warning (jobs, sync); False makes it a slot failure like any other (the CLI).
        describe_boxes: describe each box of a video-like frame by its pixels (``Detections.appearance``) for the
            track stage, while the frame is still there (``tracks.needs_appearance(tracker)``); about 35 us per
            box on the thread that feeds the model, so only when the tracker uses them.
    """

    threshold: float
    classes: Sequence[str] | None = None
    class_thresholds: Mapping[str, float] | None = None
    batch_size: int | None = None
    decode_workers: int = 2
    queue_frames: int = 16
    keep_partial: bool = True
    describe_boxes: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        for name, least in (self.class_thresholds or {}).items():
            if not 0.0 <= least <= 1.0:
                raise ValueError(f"threshold of class {name!r} must be in [0, 1], got {least}")
        for name in ("decode_workers", "queue_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True, slots=True)
class ItemOutput:
    """One item after the flow: the slots that opened, their frame results (time order per slot), what went wrong.

    Attributes:
        warnings: slots that decoded only in part (``keep_partial``); their frames are in ``frames``.
        failures: slots that failed (only with an ``on_error`` callback; without one the flow raises).
    """

    name: str
    slots: tuple[SlotMeta, ...]
    frames: tuple[FrameResult, ...]
    warnings: tuple[PreannotateError, ...] = ()
    failures: tuple[SlotFailure, ...] = ()


FinishItem = Callable[[ItemOutput], ItemOutput]
"""The per-item post-step (tracking fills tracker ids here, once per item)."""


def track_stage(tracker: TrackerOptions | None, *, stored_precision: bool = False) -> FinishItem:
    """The flow's track stage: fills each item's tracker ids once (``tracker`` None: tracking off, ids stay None).

    Args:
        stored_precision: round boxes and scores as the job store keeps them first, so a worker tracks and pushes
            exactly what it stores and a later ``GET /result`` agrees with the push.
    """

    def track(output: ItemOutput) -> ItemOutput:
        frames = [at_stored_precision(f) for f in output.frames] if stored_precision else list(output.frames)
        return replace(output, frames=tuple(assign_tracker_ids(frames, tracker)))

    return track


def options_filter(class_names: Sequence[str], options: FlowOptions) -> DetectionFilter:
    """``options``' classes and thresholds checked against ``class_names`` (``run.detection_filter``): the infer
    stage's filter, and the check a job's worker makes before fetching anything."""
    return detection_filter(
        class_names, threshold=options.threshold, classes=options.classes, class_thresholds=options.class_thresholds
    )


def detector_sampling(
    sampling: SamplingOptions, model: ModelInfo, segmenter: SegmenterInfo | None = None
) -> SamplingOptions:
    """``sampling`` for frames only a detector (and a segmenter) sees: the decoder may scale them to fit its input
    size while converting colours (far cheaper than full-size frames); the infer stage maps the boxes back to source
    pixels. Only for a model whose own resize keeps the aspect ratio: one that stretches to a fixed size gets full
    frames. With a segmenter, at least its input size (SAM draws masks at 1024 px, finer than a 640 px detector
    sees), and full frames when either side takes any size."""
    if not model.keeps_aspect:
        return sampling
    size_px = model.input_size_px
    if segmenter is not None:
        wanted_px = segmenter.input_size_px
        size_px = None if size_px is None or wanted_px is None else max(size_px, wanted_px)
    return replace(sampling, detector_size_px=size_px)


ONE_FRAME = SamplingOptions(fps=0, max_frames=1)
"""An interactive request's sampling: its first frame only."""

FrameOpener = Callable[[SamplingOptions], Frame]
"""Open and decode an interactive request's one frame with the sampling given (blocking: it runs on a worker
thread); raises PreannotateError for bad input."""


def slot_opener(sampling: SamplingOptions, limits: MediaLimits) -> SlotOpener:
    """Open local files (``media.open_slot``) sampled and limited alike."""
    return lambda item, slot: open_local_slot(item, slot, sampling, limits)


def run_flow(
    items: Sequence[ItemSpec],
    detector: FrameDetector,
    options: FlowOptions,
    *,
    open_slot: SlotOpener,
    on_slot: Callable[[SlotMeta], None] | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    on_error: Callable[[SlotFailure], None] | None = None,
    finish_item: FinishItem | None = None,
    segmenter: Segmenter | None = None,
) -> Iterator[ItemOutput]:
    """Run every item through the detector (and ``segmenter``: a mask per kept box); yields each item once all its
    frames are detected, in input order.

    Callbacks run on the caller's thread, in input order: ``on_slot`` when a slot's frames are next in line,
    ``on_frame`` per detected frame, ``on_error`` per failed slot. Any of them may raise to stop the run (a job's
    cancel): the decode workers stop and their readers close before the exception leaves.

    Raises:
        PreannotateError: INVALID_ARGUMENT for an unknown class; a slot's failure when ``on_error`` is None;
            DEVICE_OUT_OF_MEMORY (through a batcher) when one frame alone does not fit.
        DeviceOutOfMemoryError: a single frame does not fit (a plain detector).
    """
    keep = options_filter(detector.info.class_names, options)
    slots = [(n, slot) for n, item in enumerate(items) for slot in item.slots]
    decode = _Decoders(items, slots, open_slot, options)
    infer = _Infer(detector, options, keep, on_frame, segmenter)
    ready: list[_ItemState] = []  # closed items, in order, whose last frames may still wait in the batch
    try:
        decode.start()
        position = 0
        for item in items:
            state = _ItemState(item.name)  # dropped once emitted: a run over many items holds only live ones
            for _ in item.slots:
                _drain_slot(decode, position, state, infer, options, on_slot, on_error)
                position += 1
            ready.append(state)
            yield from _emit(ready, finish_item)
        infer.flush()
        yield from _emit(ready, finish_item)
    finally:
        decode.stop()


async def detect_one(
    open_frame: FrameOpener,
    batcher: DynamicBatcher,
    *,
    threshold: float,
    classes: Sequence[str] | None = None,
    class_thresholds: Mapping[str, float] | None = None,
    timeout_s: float | None,
    segmenter: SharedSegmenter | None = None,
) -> FrameResult:
    """One interactive frame through the flow, from an event loop: ``open_frame`` on a worker thread (off the
    loop), then the model's shared batcher, then the infer stage's class filter and box mapping.

    ``open_frame`` gets ``ONE_FRAME`` sized for the detector and ``segmenter`` (``detector_sampling``): a decoder
    that can may scale the frame down; the boxes (and masks) come back in source pixels either way. The segmenter
    runs on its own thread after the batcher (``_segment_one``); ``timeout_s`` bounds the batcher's part and the
    wait for the segmenter together.

    Raises:
        PreannotateError: INVALID_ARGUMENT for an unknown class (wanted or given a threshold), before anything is
            opened; what ``open_frame``
            raises; DEADLINE_EXCEEDED when no result came within ``timeout_s`` (a frame still queued then is
            never run) or the segmenter stayed busy past it; the batcher's DEVICE_OUT_OF_MEMORY, NOT_READY or
            the model's own error; ``MaskStage.attach``'s.
    """
    keep = detection_filter(
        batcher.info.class_names, threshold=threshold, classes=classes, class_thresholds=class_thresholds
    )
    sampling = detector_sampling(ONE_FRAME, batcher.info, None if segmenter is None else segmenter.info)
    frame = await anyio.to_thread.run_sync(open_frame, sampling)
    deadline_s = None if timeout_s is None else time.monotonic() + timeout_s
    detections = keep.keep(await batcher.detect_async(frame.image, threshold=keep.threshold, timeout_s=timeout_s))
    if segmenter is not None and len(detections):
        detections = await _segment_one(segmenter, frame.image, detections, deadline_s)
    return _frame_result(frame, detections)


async def _segment_one(
    segmenter: SharedSegmenter, image: RGBImage, detections: Detections, deadline_s: float | None
) -> Detections:
    """``detections`` with their masks, on the segmenter's own thread (``SharedSegmenter.limiter``); waiting for
    the model (behind other requests, or a job's batch) ends at ``deadline_s`` (``time.monotonic()``).

    Raises:
        PreannotateError: DEADLINE_EXCEEDED when the model stayed busy that long; ``MaskStage.attach``'s errors.
    """
    stage = MaskStage(segmenter.until(deadline_s), max_frames=1)
    wait_s = math.inf if deadline_s is None else max(0.0, deadline_s - time.monotonic())
    # Cuts short the wait for the limiter only: once the thread runs, run_sync shields it (and keeps its result).
    with anyio.move_on_after(wait_s):
        (masked,) = await anyio.to_thread.run_sync(stage.attach, [image], [detections], limiter=segmenter.limiter)
        return masked
    raise PreannotateError(
        ErrorCode.DEADLINE_EXCEEDED, f"segmenter {segmenter.info.name} was busy past the request's deadline"
    )


def _frame_result(frame: Frame, kept: Detections, *, describe: bool = False) -> FrameResult:
    """A frame's kept detections (their masks, if any, on ``frame.image``) as the flow hands them on: boxes and
    masks in source pixels, and for frames the tracker links, each box's appearance, from the pixels the detector
    saw (then they are dropped)."""
    if describe and frame.info.media in TRACKED_MEDIA and len(kept):
        kept = kept.with_appearance(crops_to_appearance(frame.image, kept.xyxy))
    return FrameResult(info=frame.info, detections=boxes_to_source(kept, frame))


def _drain_slot(
    decode: _Decoders,
    position: int,
    state: _ItemState,
    infer: _Infer,
    options: FlowOptions,
    on_slot: Callable[[SlotMeta], None] | None,
    on_error: Callable[[SlotFailure], None] | None,
) -> None:
    """Take one slot's frames into the batch (flushing it whenever it fills) until the slot ends."""
    stream = decode.stream(position)
    while True:
        entry = decode.next_entry(stream)
        if isinstance(entry, Frame):
            infer.add(entry, state)
            if infer.full():
                infer.flush()
            continue
        if isinstance(entry, SlotMeta):
            state.slots.append(entry)
            if on_slot is not None:
                on_slot(entry)
            continue  # the slot's frames follow
        decode.forget(position)
        if isinstance(entry, _Failed):
            failure = entry.failure
            if options.keep_partial and isinstance(failure.error, PartialMediaError):
                log.warning("%s", failure.error)
                state.warnings.append(failure.error)
            elif on_error is None:
                raise failure.error
            else:
                report_failure(on_error, failure)
                state.failures.append(failure)
        return


def _emit(ready: list[_ItemState], finish: FinishItem | None) -> Iterator[ItemOutput]:
    """Every closed item whose frames are all detected, in order: an item's last frames may wait in the batch
    for the next items' frames to fill it."""
    while ready and ready[0].waiting == 0:
        output = ready.pop(0).output()
        yield finish(output) if finish is not None else output


@dataclass(slots=True)
class _ItemState:
    name: str
    slots: list[SlotMeta] = field(default_factory=list)
    frames: list[FrameResult] = field(default_factory=list)
    warnings: list[PreannotateError] = field(default_factory=list)
    failures: list[SlotFailure] = field(default_factory=list)
    waiting: int = 0  # frames in the batch, not yet detected

    def output(self) -> ItemOutput:
        return ItemOutput(
            name=self.name,
            slots=tuple(self.slots),
            frames=tuple(self.frames),
            warnings=tuple(self.warnings),
            failures=tuple(self.failures),
        )


class _Infer:
    """The batch and the model call: the one place frames are chunked, and split on device OOM."""

    def __init__(
        self,
        detector: FrameDetector,
        options: FlowOptions,
        keep: DetectionFilter,
        on_frame: Callable[[FrameResult], None] | None,
        segmenter: Segmenter | None = None,
    ) -> None:
        self._detector = detector
        self._threshold = keep.threshold
        self._keep = keep.keep
        self._describe = options.describe_boxes
        self._fixed = options.batch_size
        # A batcher lowers its own ceiling on OOM (it never raises it to us): ``_size`` reads it before every batch.
        self._ceiling = BatchCeiling(options.batch_size or detector.info.batch_size, name=detector.info.name)
        self._batch: list[tuple[Frame, _ItemState]] = []
        self._on_frame = on_frame
        self._masks = None if segmenter is None else MaskStage(segmenter, max_frames=self._ceiling.size)

    def add(self, frame: Frame, state: _ItemState) -> None:
        self._batch.append((frame, state))
        state.waiting += 1

    def full(self) -> bool:
        return len(self._batch) >= self._size()

    def flush(self) -> None:
        """Detect (and segment) every frame in the batch and file the results under their items."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        images = [frame.image for frame, _ in batch]
        detections = [self._keep(d) for d in detect_splitting_on_oom(self._detect, images, self._ceiling)]
        if self._masks is not None:
            detections = self._masks.attach(images, detections)
        for (frame, state), dets in zip(batch, detections, strict=True):
            result = _frame_result(frame, dets, describe=self._describe)
            state.frames.append(result)
            state.waiting -= 1
            if self._on_frame is not None:
                self._on_frame(result)

    def _size(self) -> int:
        if self._fixed is None:
            live = getattr(self._detector, "max_batch_size", None)  # a DynamicBatcher's ceiling, lowered on OOM
            if isinstance(live, int) and live >= 1:
                return min(live, self._ceiling.size)
        return self._ceiling.size

    def _detect(self, images: Sequence[RGBImage]) -> list[Detections]:
        return self._detector.detect(images, threshold=self._threshold)


@dataclass(frozen=True, slots=True)
class _Failed:
    failure: SlotFailure


class _End:
    """A slot's last entry when it decoded to the end."""


_Entry: TypeAlias = Frame | SlotMeta | _Failed | _End


class _Decoders:
    """``workers`` threads opening and decoding slots in input order, each slot into its own bounded queue."""

    def __init__(
        self,
        items: Sequence[ItemSpec],
        slots: list[tuple[int, SlotSpec]],
        open_slot: SlotOpener,
        options: FlowOptions,
    ) -> None:
        self._items = items
        self._slots = slots
        self._open = open_slot
        self._depth = options.queue_frames
        self._workers = min(options.decode_workers, max(1, len(slots)))
        self._lock = threading.Lock()
        self._next = 0
        self._streams: dict[int, queue.Queue[_Entry]] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"decode-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the workers: each ends at its next frame; one shared deadline, so a cancel waits 10 s at most
        (a worker inside a slow fetch or open finishes it alone, then sees the stop and ends)."""
        self._stop.set()
        deadline = time.monotonic() + _STOP_WAIT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("decode worker %s still running after the run ended", thread.name)

    def alive(self) -> bool:
        """Whether any worker still runs (a slot no worker will ever finish must not be waited on)."""
        return any(thread.is_alive() for thread in self._threads)

    def stream(self, position: int) -> queue.Queue[_Entry]:
        """Slot ``position``'s queue (created by whichever side asks first)."""
        with self._lock:
            stream = self._streams.get(position)
            if stream is None:
                stream = self._streams[position] = queue.Queue(maxsize=self._depth)
            return stream

    def next_entry(self, stream: queue.Queue[_Entry]) -> _Entry:
        """The slot's next entry, waiting for it; INTERNAL if every worker is gone and it never came (a worker
        always ends a slot it took, so this is a last guard against a hang, not a path taken)."""
        while True:
            try:
                return stream.get(timeout=_POLL_S)
            except queue.Empty:
                if not self.alive() and stream.empty():
                    raise PreannotateError(ErrorCode.INTERNAL, "decoding stopped before the slot ended") from None

    def forget(self, position: int) -> None:
        """Drop a slot's queue once its last entry was taken: a run over many items keeps only live queues."""
        with self._lock:
            self._streams.pop(position, None)

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self._slots) or self._stop.is_set():
                return None
            position, self._next = self._next, self._next + 1
            return position

    def _work(self) -> None:
        while (position := self._take()) is not None:
            self._decode(position, self.stream(position))

    def _decode(self, position: int, out: queue.Queue[_Entry]) -> None:
        index, slot = self._slots[position]
        name = self._items[index].name
        last: _Entry | None
        try:
            last = self._read(name, slot, out)
        except BaseException as exc:  # whatever happens, the slot ends: the consumer waits on its queue
            last = _Failed(unexpected_failure(name, slot, exc))
        if last is not None:
            self._put(out, last)

    def _read(self, name: str, slot: SlotSpec, out: queue.Queue[_Entry]) -> _Entry | None:
        """Open and decode one slot into ``out``; returns its last entry (None: the run stopped)."""
        try:
            reader = self._open(name, slot)
        except PreannotateError as exc:
            return _Failed(SlotFailure(name, slot.name, exc))
        except Exception as exc:
            return _Failed(unexpected_failure(name, slot, exc))
        try:
            if not self._put(out, reader.meta):
                return None
            for frame in reader:
                if not self._put(out, frame):
                    return None
            return _End()
        except PreannotateError as exc:
            return _Failed(SlotFailure(name, slot.name, exc))
        except Exception as exc:
            return _Failed(unexpected_failure(name, slot, exc))
        finally:
            try:
                reader.close()
            except Exception:
                log.warning("closing %s/%s failed", name, slot.name, exc_info=True)

    def _put(self, out: queue.Queue[_Entry], entry: _Entry) -> bool:
        """Put, waiting while the queue is full; False once the run stopped."""
        while not self._stop.is_set():
            try:
                out.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
