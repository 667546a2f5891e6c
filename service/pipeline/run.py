"""decode -> batch -> infer, overlapped: a decode thread feeds the model through a bounded queue.

A bad slot (missing, corrupt, over a limit) is reported through ``on_error`` and skipped; the
other slots go on. Memory is bounded by the queue: decoded frames wait in it, and a frame's
pixels are dropped as soon as the model has seen them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.oom import BatchCeiling, detect_splitting_on_oom
from models.types import Detections, ModelInfo, RGBImage
from service.errors import ErrorCode, PartialMediaError, PreannotateError
from service.pipeline.frames import Frame, FrameResult, SlotMeta, boxes_to_source
from service.pipeline.media import ItemSpec, SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SlotFailure:
    """A slot that produced no (or not all) frames, and why."""

    item: str
    slot: str
    error: PreannotateError


class FrameDetector(Protocol):
    """A Detector, or anything that batches for one (the service's DynamicBatcher)."""

    @property
    def info(self) -> ModelInfo: ...

    def detect(self, images: Sequence[RGBImage], *, threshold: float) -> list[Detections]: ...


SlotCallback = Callable[[SlotMeta], None]
ErrorCallback = Callable[[SlotFailure], None]


def iter_frames(
    items: Iterable[ItemSpec],
    sampling: SamplingOptions,
    limits: MediaLimits,
    *,
    on_slot: SlotCallback | None = None,
    on_error: ErrorCallback | None = None,
) -> Iterator[Frame]:
    """Open every slot in order and yield its sampled frames; failures go to ``on_error``.

    A slot fails alone, whatever it raises: frames it yielded before failing are kept, and the
    next slot is opened. Only the consumer's own exceptions (and ``on_slot``'s) end the run.
    """
    for item in items:
        for slot in item.slots:
            try:
                reader = open_slot(item.name, slot, sampling, limits)
            except PreannotateError as exc:
                _report(on_error, SlotFailure(item.name, slot.name, exc))
                continue
            except Exception as exc:
                _report(on_error, _unexpected_failure(item.name, slot, exc))
                continue
            try:
                if on_slot is not None:
                    on_slot(reader.meta)
                try:
                    yield from reader
                except PreannotateError as exc:
                    _report(on_error, SlotFailure(item.name, slot.name, exc))
                except Exception as exc:
                    _report(on_error, _unexpected_failure(item.name, slot, exc))
            finally:
                reader.close()


def keep_partial(frames: Iterable[Frame], warnings: list[PreannotateError]) -> Iterator[Frame]:
    """A slot's frames; a ``PartialMediaError`` at their end (some frames undecodable) goes to ``warnings``
    instead of discarding the frames that did decode."""
    try:
        yield from frames
    except PartialMediaError as exc:
        log.warning("%s", exc)
        warnings.append(exc)


def _unexpected_failure(item: str, slot: SlotSpec, exc: Exception) -> SlotFailure:
    """A decoder's surprise (a bug, or input no check foresaw) as this slot's INTERNAL failure."""
    source = str(slot.paths[0]) if len(slot.paths) == 1 else f"{slot.paths[0].parent} ({len(slot.paths)} files)"
    log.info("slot %s/%s (%s) failed unexpectedly", item, slot.name, source, exc_info=exc)  # the stack, with -v
    return SlotFailure(item, slot.name, PreannotateError(ErrorCode.INTERNAL, f"{source}: {type(exc).__name__}: {exc}"))


def _report(on_error: ErrorCallback | None, failure: SlotFailure) -> None:
    log.info("slot %s/%s failed: %s", failure.item, failure.slot, failure.error)
    if on_error is not None:
        on_error(failure)


class _End:
    """Queue sentinel; carries the producer's unexpected exception, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetch(frames: Iterator[Frame], depth: int) -> Iterator[Frame]:
    """Run ``frames`` on a background thread, at most ``depth`` frames ahead of the consumer."""
    buffer: queue.Queue[Frame | _End] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        end = _End()
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        buffer.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            end = _End(exc)
        while not stop.is_set():
            try:
                buffer.put(end, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def class_filter(class_names: Sequence[str], wanted: Sequence[str] | None) -> Callable[[Detections], Detections]:
    """A function keeping only the named classes; unknown names are an error listing the known ones."""
    if not wanted:
        return lambda dets: dets
    unknown = [name for name in wanted if name not in class_names]
    if unknown:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"unknown class(es) {', '.join(unknown)}; the model has: {', '.join(class_names)}",
        )
    keep_ids = np.array([i for i, name in enumerate(class_names) if name in wanted], np.int64)
    return lambda dets: dets[np.isin(dets.class_id, keep_ids)]


def detect_frames(
    frames: Iterable[Frame],
    detector: FrameDetector,
    *,
    threshold: float,
    classes: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> Iterator[FrameResult]:
    """Batch frames through the detector, yielding one result per frame in input order.

    A batch that runs out of device memory is split and retried (``models.oom``, as the server's
    batcher does), and later batches stay at the lowered size; no frame is lost.

    Raises:
        DeviceOutOfMemoryError: a single frame does not fit on the device.
    """
    ceiling = BatchCeiling(batch_size or detector.info.batch_size, name=detector.info.name)
    keep = class_filter(detector.info.class_names, classes)
    batch: list[Frame] = []

    def detect(images: Sequence[RGBImage]) -> list[Detections]:
        return detector.detect(images, threshold=threshold)

    def flush() -> Iterator[FrameResult]:
        detections = detect_splitting_on_oom(detect, [frame.image for frame in batch], ceiling)
        for frame, dets in zip(batch, detections, strict=True):
            yield FrameResult(info=frame.info, detections=keep(boxes_to_source(dets, frame)))
        batch.clear()

    for frame in frames:
        batch.append(frame)
        if len(batch) >= ceiling.size:
            yield from flush()
    if batch:
        yield from flush()
