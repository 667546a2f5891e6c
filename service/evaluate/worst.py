"""The worst errors of a candidate, per class: its highest-scoring false positives and the benchmark objects it
missed most plainly, kept while the frames are matched (only when the report will show them)."""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.evaluate.matching import FrameMatch, shapes_to_iou_matrix
from service.evaluate.metrics import ScoredFrame
from service.evaluate.types import BoxXYXY, Shape, Unit


class ErrorKind(enum.StrEnum):
    FALSE_POSITIVE = "false positive"
    FALSE_NEGATIVE = "false negative"


@dataclass(frozen=True, slots=True)
class ErrorCase:
    """One unmatched shape on one frame, with the nearest shape of the other side.

    Attributes:
        kind: a false positive (``shape`` is the candidate's) or a false negative (``shape`` is the benchmark's).
        item: the benchmark unit's item key; ``slot`` its slot.
        frame: the frame index, counted at ``fps`` (None: the source's own frames).
        pixels: whether the boxes are in pixels (False: percent of the frame, when neither side knew its size).
        nearest: the other side's shape with the highest IoU (any class), when one overlaps at all.
        iou: that IoU (0.0 when nothing overlaps).
        width, height: the size of the frame the boxes are pixels of (the benchmark's, else the candidate's),
            when known: media found at another size (a smaller copy) are drawn on with the boxes scaled.
    """

    kind: ErrorKind
    item: str
    slot: str
    frame: int
    fps: float | None
    pixels: bool
    shape: Shape
    nearest: Shape | None
    iou: float
    width: int | None = None
    height: int | None = None

    @property
    def benchmark_box(self) -> BoxXYXY | None:
        return self.shape.xyxy if self.kind is ErrorKind.FALSE_NEGATIVE else _box(self.nearest)

    @property
    def candidate_box(self) -> BoxXYXY | None:
        return self.shape.xyxy if self.kind is ErrorKind.FALSE_POSITIVE else _box(self.nearest)

    @property
    def score(self) -> float | None:
        """The candidate's confidence: the false positive's own, or that of the box nearest a miss."""
        candidate = self.shape if self.kind is ErrorKind.FALSE_POSITIVE else self.nearest
        return None if candidate is None else candidate.score

    def badness(self) -> tuple[float, float, float, str, str, int]:
        """Sort key, worst first. A false positive: highest score, then least overlap with any benchmark object
        (a box on nothing before a poorly placed one), then largest. A miss: least overlap with any candidate
        shape (nothing drawn near it), then largest. Ties go by place, so the order is stable."""
        x1, y1, x2, y2 = self.shape.xyxy
        area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        if self.kind is ErrorKind.FALSE_POSITIVE:
            first = -(self.shape.score if self.shape.score is not None else 1.0)
            return (first, self.iou, -area, self.item, self.slot, self.frame)
        return (self.iou, -area, 0.0, self.item, self.slot, self.frame)


def _box(shape: Shape | None) -> BoxXYXY | None:
    return None if shape is None else shape.xyxy


def _nearest(ious: NDArray[np.float64], row: int, others: list[Shape], *, axis: int) -> tuple[Shape | None, float]:
    """The other side's shape with the highest IoU to ``row`` (along ``axis``), or None when none overlaps."""
    line = ious[row, :] if axis == 0 else ious[:, row]
    if line.size == 0:
        return None, 0.0
    best = int(np.argmax(line))
    iou = float(line[best])
    return (others[best], iou) if iou > 0 else (None, 0.0)


class WorstErrors:
    """Collects a candidate's false positives and misses frame by frame, keeping at most ``per_class`` of each
    kind per class (memory bounded by classes, not by the benchmark's size)."""

    def __init__(self, per_class: int) -> None:
        if per_class < 1:
            raise ValueError(f"per_class must be at least 1, got {per_class}")
        self.per_class = per_class
        self._kept: dict[tuple[str, ErrorKind], list[ErrorCase]] = defaultdict(list)

    def add_frame(self, b_unit: Unit, c_unit: Unit | None, scored: ScoredFrame, match: FrameMatch) -> None:
        """Keep the frame's unmatched shapes (the IoU matrix is computed again only for frames with errors)."""
        if not match.missed and not match.extra:
            return
        gt = [s for s in scored.gt if not s.crowd]  # crowd regions neither miss nor match: never "nearest"
        ious = shapes_to_iou_matrix(gt, scored.dt, width=scored.width, height=scored.height)
        row_of = {id(s): r for r, s in enumerate(gt)}
        fps = b_unit.fps if b_unit.fps is not None else (c_unit.fps if c_unit is not None else None)
        place = (b_unit.item, b_unit.slot, scored.frame, fps, b_unit.pixel_size_known)
        size = (scored.width, scored.height)
        for g in match.missed:
            shape = scored.gt[g]
            nearest, iou = _nearest(ious, row_of[id(shape)], scored.dt, axis=0)
            self._keep(ErrorCase(ErrorKind.FALSE_NEGATIVE, *place, shape, nearest, iou, *size))
        for d in match.extra:
            nearest, iou = _nearest(ious, d, gt, axis=1)
            self._keep(ErrorCase(ErrorKind.FALSE_POSITIVE, *place, scored.dt[d], nearest, iou, *size))

    def _keep(self, case: ErrorCase) -> None:
        kept = self._kept[(case.shape.label, case.kind)]
        kept.append(case)
        if len(kept) > 2 * self.per_class:  # trim now and then: amortised O(1) per case
            kept.sort(key=ErrorCase.badness)
            del kept[self.per_class :]

    def worst(self) -> dict[str, dict[ErrorKind, list[ErrorCase]]]:
        """Class -> kind -> at most ``per_class`` cases, worst first; classes sorted by name."""
        out: dict[str, dict[ErrorKind, list[ErrorCase]]] = {}
        for (label, kind), cases in sorted(self._kept.items()):
            out.setdefault(label, {})[kind] = sorted(cases, key=ErrorCase.badness)[: self.per_class]
        return out
