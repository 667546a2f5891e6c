"""Per-class score thresholds calibrated on a benchmark (``preannotate calibrate``): pure, no I/O.

Each class's counts are measured at every distinct score its candidates carry, with the matching ``evaluate``
uses (``matching.match_class_aware``: a pair never joins two classes, so a class's counts depend on its own
shapes alone). That matching is an optimal assignment, not greedy by score, so it is re-run at each threshold
rather than read off one ranked list: what is reported at a threshold is what ``evaluate`` says there.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from service.errors import ErrorCode, PreannotateError
from service.evaluate.matching import in_crowd, match_class_aware, shapes_to_iou_matrix
from service.evaluate.metrics import Counts, unit_frames
from service.evaluate.pairing import pair_units
from service.evaluate.types import Dataset, Shape
from service.spec.thresholds import ClassThreshold, ThresholdsFile

ObjectiveKind = Literal["f1", "precision", "recall"]
_EPS = 1e-9  # precision 9/10 meets precision=0.9, and F1 12/18 ties 10/15, whatever the float rounding
_OBJECTIVE = re.compile(r"^\s*(f1|precision\s*=\s*(?P<p>[0-9.]+)|recall\s*=\s*(?P<r>[0-9.]+))\s*$")


@dataclass(frozen=True, slots=True)
class Objective:
    """What a class's threshold maximises: ``f1``; ``precision=P`` (the highest recall whose precision >= P);
    ``recall=R`` (the highest precision whose recall >= R)."""

    kind: ObjectiveKind = "f1"
    target: float | None = None

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``f1``, ``precision=0.9`` or ``recall=0.9``; ValueError on anything else."""
        m = _OBJECTIVE.match(text)
        value = None if m is None else (m.group("p") or m.group("r"))
        try:
            target = None if value is None else float(value)
        except ValueError:
            target = -1.0
        if m is None or (target is not None and not 0.0 <= target <= 1.0):
            raise ValueError(f"objective must be f1, precision=P or recall=R with P, R in [0, 1], got {text!r}")
        if target is None:
            return cls("f1")
        return cls("precision" if m.group("p") else "recall", target)

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}={self.target:g}"


@dataclass(slots=True)
class ClassCurve:
    """One class's counts at each distinct candidate score, highest first (keeping scores >= threshold).

    Attributes:
        thresholds: the distinct scores, descending.
        tp, fp: counts at each threshold (``fn`` is ``support - tp``; detections in crowd regions count neither).
        support: the class's benchmark objects (crowd regions excluded) over the scored frames.
    """

    thresholds: list[float] = field(default_factory=list)
    tp: list[int] = field(default_factory=list)
    fp: list[int] = field(default_factory=list)
    support: int = 0

    def counts(self, index: int | None) -> Counts:
        """Counts at ``thresholds[index]``; None: above every score (nothing kept)."""
        if index is None:
            return Counts(tp=0, fp=0, fn=self.support)
        return Counts(tp=self.tp[index], fp=self.fp[index], fn=self.support - self.tp[index])

    def index_at(self, threshold: float | None) -> int | None:
        """The index whose counts hold at ``threshold`` (the lowest listed score >= it); None keeps everything."""
        if threshold is None:
            return len(self.thresholds) - 1 if self.thresholds else None
        kept = [i for i, t in enumerate(self.thresholds) if t >= threshold]
        return kept[-1] if kept else None


def _prefix_counts(
    gt: Sequence[Shape], crowd: Sequence[Shape], dt: Sequence[Shape], ious: np.ndarray, iou_threshold: float
) -> Iterable[tuple[float, int, int]]:
    """(score, TP, FP) of one class on one frame, at each distinct score of its candidates (``dt`` sorted by
    score, descending). The assignment is re-run only when the scores just admitted bring a candidate that
    can match (IoU >= the threshold with some benchmark object); otherwise they are all extras."""
    scores = np.asarray([s.score for s in dt], dtype=np.float64)
    matchable = np.asarray((ious >= iou_threshold).any(axis=0), dtype=bool).reshape(len(dt))
    crowded = in_crowd(dt, crowd, iou_threshold=iou_threshold)
    tp = fp = 0
    start = 0
    while start < len(dt):
        end = start
        while end < len(dt) and scores[end] == scores[start]:
            end += 1
        if matchable[start:end].any():
            m = match_class_aware(gt, crowd, dt[:end], ious[:, :end], iou_threshold=iou_threshold)
            tp, fp = len(m.matches), len(m.extra)
        else:
            fp += sum(1 for c in range(start, end) if not crowded[c])
        yield float(scores[start]), tp, fp
        start = end


def class_curves(benchmark: Dataset, candidate: Dataset, *, iou_threshold: float) -> dict[str, ClassCurve]:
    """Every class's curve (benchmark classes and candidate classes alike).

    Cost: one IoU matrix per frame (as ``evaluate``), then per class and frame one assignment per distinct score
    that admits a matchable candidate: for k such candidates and g benchmark objects, O(k * g * k * min(g, k))
    at worst, on matrices no larger than the frame's; extras that cannot match are counted without solving.
    """
    deltas: dict[str, dict[float, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    support: dict[str, int] = defaultdict(int)
    for b_unit, c_unit in pair_units(benchmark, candidate).pairs:
        for frame in unit_frames(b_unit, c_unit):
            scored = [s for s in frame.gt if not s.crowd]
            for s in scored:
                support[s.label] += 1
            if not frame.dt:
                continue
            order = sorted(range(len(frame.dt)), key=lambda j: -(frame.dt[j].score or 0.0))
            dt_all = [frame.dt[j] for j in order]
            ious = shapes_to_iou_matrix(scored, dt_all, width=frame.width, height=frame.height)
            for label in {s.label for s in dt_all}:
                rows = [i for i, s in enumerate(scored) if s.label == label]
                cols = [j for j, s in enumerate(dt_all) if s.label == label]
                gt = [scored[i] for i in rows]
                crowd = [s for s in frame.gt if s.crowd and s.label == label]
                sub = ious[np.ix_(rows, cols)] if rows else np.zeros((0, len(cols)))
                before = (0, 0)
                for score, tp, fp in _prefix_counts(gt, crowd, [dt_all[j] for j in cols], sub, iou_threshold):
                    delta = deltas[label][score]
                    delta[0] += tp - before[0]
                    delta[1] += fp - before[1]
                    before = (tp, fp)
    curves: dict[str, ClassCurve] = {}
    for label in sorted(set(support) | set(deltas)):
        curve = curves[label] = ClassCurve(support=support.get(label, 0))
        tp = fp = 0
        for score in sorted(deltas.get(label, {}), reverse=True):
            d_tp, d_fp = deltas[label][score]
            tp, fp = tp + d_tp, fp + d_fp
            curve.thresholds.append(score)
            curve.tp.append(tp)
            curve.fp.append(fp)
    return curves


def best_index(curve: ClassCurve, objective: Objective) -> int | None:
    """The threshold index that maximises ``objective`` (ties, within the rounding of two equal ratios: the
    higher threshold); None when no threshold meets it or none finds a single benchmark object."""
    best: int | None = None
    best_key = -1.0
    for i in range(len(curve.thresholds)):  # descending: a later index must do strictly better to win
        c = curve.counts(i)
        if c.tp == 0:
            continue
        if objective.kind == "f1":
            key = c.f1
        elif objective.kind == "precision":
            key = c.recall if c.precision >= (objective.target or 0.0) - _EPS else -1.0
        else:
            key = c.precision if c.recall >= (objective.target or 0.0) - _EPS else -1.0
        if key >= 0.0 and key > best_key + _EPS:
            best, best_key = i, key
    return best


def _entry(curve: ClassCurve, index: int | None, threshold: float, reason: str | None) -> ClassThreshold:
    has_rows = curve.support > 0 or bool(curve.thresholds)
    c = curve.counts(index)
    return ClassThreshold(
        threshold=threshold,
        precision=c.precision if has_rows else None,
        recall=c.recall if has_rows else None,
        f1=c.f1 if has_rows else None,
        support=curve.support,
        calibrated=reason is None,
        reason=reason,
    )


def calibrate_class(
    curve: ClassCurve, objective: Objective, *, global_threshold: float, min_support: int
) -> ClassThreshold:
    """One class's threshold and what it achieves; the global threshold (and why) when it cannot be calibrated."""
    at_global = curve.index_at(global_threshold)
    if curve.support < min_support:
        reason = f"support {curve.support} < min support {min_support}: keeps the global threshold"
        return _entry(curve, at_global, global_threshold, reason)
    if not curve.thresholds:
        return _entry(curve, None, global_threshold, "no candidate detections of this class")
    index = best_index(curve, objective)
    if index is None:
        return _entry(curve, at_global, global_threshold, f"no threshold meets {objective}")
    return _entry(curve, index, curve.thresholds[index], None)


def calibrate(
    benchmark: Dataset,
    candidate: Dataset,
    *,
    objective: Objective,
    iou_threshold: float,
    global_threshold: float,
    min_support: int,
    model_version: str = "",
) -> ThresholdsFile:
    """Each class's threshold maximising ``objective`` on the benchmark, as the file ``--thresholds`` reads.

    Raises:
        PreannotateError: INVALID_ARGUMENT when the candidate carries no scores (nothing to threshold).
    """
    if not candidate.has_scores():
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"{candidate.source}: the candidate has shapes without a score (human labels?): nothing to calibrate",
        )
    curves = class_curves(benchmark, candidate, iou_threshold=iou_threshold)
    return ThresholdsFile(
        model_version=model_version,
        objective=str(objective),
        iou=iou_threshold,
        global_threshold=global_threshold,
        classes={
            label: calibrate_class(curve, objective, global_threshold=global_threshold, min_support=min_support)
            for label, curve in curves.items()
        },
    )


@dataclass(frozen=True, slots=True)
class KeepAbove:
    """A ``score_pairing`` filter: keep a shape whose score reaches its class's threshold, else the global one
    (None: no global threshold, keep it); a shape without a score is kept."""

    global_threshold: float | None
    per_class: dict[str, float] = field(default_factory=dict)

    def __call__(self, shape: Shape) -> bool:
        least = self.per_class.get(shape.label, self.global_threshold)
        return least is None or shape.score is None or shape.score >= least
