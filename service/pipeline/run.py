"""The pieces the flow (``service.pipeline.flow``) and the model-free ``frames`` command share: slot failures,
the detector interface, the class filter, and the serial frame iterator.

A bad slot (missing, corrupt, over a limit) is reported through ``on_error`` and skipped; the
other slots go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.types import Detections, ModelInfo, RGBImage
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import Frame, SlotMeta
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
                report_failure(on_error, SlotFailure(item.name, slot.name, exc))
                continue
            except Exception as exc:
                report_failure(on_error, unexpected_failure(item.name, slot, exc))
                continue
            try:
                if on_slot is not None:
                    on_slot(reader.meta)
                try:
                    yield from reader
                except PreannotateError as exc:
                    report_failure(on_error, SlotFailure(item.name, slot.name, exc))
                except Exception as exc:
                    report_failure(on_error, unexpected_failure(item.name, slot, exc))
            finally:
                reader.close()


def unexpected_failure(item: str, slot: SlotSpec, exc: BaseException) -> SlotFailure:
    """A decoder's surprise (a bug, or input no check foresaw) as this slot's INTERNAL failure; never raises.

    A slot opened by a fetching opener (a job's) has no local paths yet: it is named by its slot name.
    """
    if not slot.paths:
        source = slot.name
    elif len(slot.paths) == 1:
        source = str(slot.paths[0])
    else:
        source = f"{slot.paths[0].parent} ({len(slot.paths)} files)"
    log.info("slot %s/%s (%s) failed unexpectedly", item, slot.name, source, exc_info=exc)  # the stack, with -v
    return SlotFailure(item, slot.name, PreannotateError(ErrorCode.INTERNAL, f"{source}: {type(exc).__name__}: {exc}"))


def report_failure(on_error: ErrorCallback | None, failure: SlotFailure) -> None:
    log.info("slot %s/%s failed: %s", failure.item, failure.slot, failure.error)
    if on_error is not None:
        on_error(failure)


def class_filter(class_names: Sequence[str], wanted: Sequence[str] | None) -> Callable[[Detections], Detections]:
    """A function keeping only the named classes; unknown names are an error listing the known ones."""
    if not wanted:
        return lambda dets: dets
    _check_known(class_names, wanted, "class(es)")
    keep_ids = np.array([i for i, name in enumerate(class_names) if name in wanted], np.int64)
    return lambda dets: dets[np.isin(dets.class_id, keep_ids)]


def check_class_names(
    class_names: Sequence[str], *, classes: Sequence[str] | None, class_thresholds: Mapping[str, float] | None
) -> None:
    """Refuse a wanted class or a class threshold the model lacks (INVALID_ARGUMENT listing the known ones)."""
    class_filter(class_names, classes)
    if class_thresholds:
        _check_known(class_names, list(class_thresholds), "class(es) in thresholds")


@dataclass(frozen=True, slots=True)
class DetectionFilter:
    """What the infer stage asks the detector for and keeps of its answer.

    Attributes:
        threshold: the score the detector is asked at: the least of the global and every class threshold, so no
            class loses a row it would keep.
        keep: the rows kept: the wanted classes, each scoring at least its class's threshold (else the global one).
    """

    threshold: float
    keep: Callable[[Detections], Detections]


WRITTEN_SCORE_DECIMALS = 5
"""The decimals scores are written with (COCO ``score``, Darwin ``confidence``, Label Studio ``score``)."""
_SCORE_UNIT = 10.0**-WRITTEN_SCORE_DECIMALS


def detection_filter(
    class_names: Sequence[str],
    *,
    threshold: float,
    classes: Sequence[str] | None = None,
    class_thresholds: Mapping[str, float] | None = None,
) -> DetectionFilter:
    """The class filter and the per-class thresholds of a run, checked against the model's classes once.

    Raises:
        PreannotateError: INVALID_ARGUMENT for a class (wanted, or given a threshold) the model lacks.
    """
    check_class_names(class_names, classes=classes, class_thresholds=class_thresholds)
    by_class = class_filter(class_names, classes)
    if not class_thresholds:
        return DetectionFilter(threshold, by_class)
    least = np.array([class_thresholds.get(name, threshold) for name in class_names], np.float64)
    # Calibrated thresholds are scores as the outputs write them (5 decimals): asked and compared at that precision,
    # else a box whose written score is its class's threshold would be dropped for digits nobody sees.
    ask = max(0.0, min(threshold, *class_thresholds.values()) - _SCORE_UNIT)

    def keep(dets: Detections) -> Detections:
        dets = by_class(dets)
        ids = dets.class_id
        known = (ids >= 0) & (ids < len(least))  # a row outside the class list keeps the global threshold
        floor = np.full(ids.shape, threshold, np.float64)
        floor[known] = least[ids[known]]
        return dets[np.round(dets.confidence.astype(np.float64), WRITTEN_SCORE_DECIMALS) >= floor]

    return DetectionFilter(ask, keep)


def _check_known(class_names: Sequence[str], names: Sequence[str], what: str) -> None:
    unknown = [name for name in names if name not in class_names]
    if unknown:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"unknown {what} {', '.join(unknown)}; the model has: {', '.join(class_names)}",
        )
