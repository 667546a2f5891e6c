"""Counts over every paired frame: TP/FP/FN, precision, recall, F1, mean IoU (overall, per class, per item),
class confusion, tag accuracy and attribute accuracy on matched pairs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from service.evaluate.matching import FrameMatch, match_frame
from service.evaluate.pairing import Pairing, frame_indices
from service.evaluate.types import Shape, Unit


def ratio(num: float, den: float, *, empty: float) -> float:
    """``num / den``, and ``empty`` when there is nothing to divide by."""
    return num / den if den else empty


class CountsJson(TypedDict):
    """``Counts`` in ``summary.json`` (overall, per class, per item)."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_iou: float | None


@dataclass(slots=True)
class Counts:
    """TP/FP/FN plus the IoU sum of the TPs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    @property
    def precision(self) -> float:
        """TP / claimed. Claiming nothing is perfect only when there was nothing to find (an empty frame left
        empty); with objects to find it is 0.0, or an annotator who submits nothing would pass --min-precision."""
        return ratio(self.tp, self.tp + self.fp, empty=0.0 if self.fn else 1.0)

    @property
    def recall(self) -> float:
        """TP / to find. With nothing to find nothing was missed: 1.0, extra boxes or not; those are what
        precision and F1 (both 0.0 then) count, and recall is undefined anyway."""
        return ratio(self.tp, self.tp + self.fn, empty=1.0)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def mean_iou(self) -> float | None:
        """Mean IoU of the matched pairs; None without any."""
        return self.iou_sum / self.tp if self.tp else None

    def to_json(self) -> CountsJson:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "mean_iou": self.mean_iou,
        }


@dataclass(slots=True)
class ItemScore:
    """One benchmark unit's counts (for the worst-items table)."""

    item: str
    slot: str
    counts: Counts
    in_candidate: bool
    frames: int


@dataclass(slots=True)
class FramePair:
    """A scored frame, kept for COCO mAP: its shapes on both sides and the frame's pixel size."""

    key: tuple[str, str, int]
    gt: list[Shape]
    dt: list[Shape]
    width: int | None
    height: int | None


@dataclass(slots=True)
class Score:
    """Everything counted for one candidate against the benchmark."""

    overall: Counts = field(default_factory=Counts)
    per_class: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    confusion: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    items: list[ItemScore] = field(default_factory=list)
    frame_pairs: list[FramePair] = field(default_factory=list)
    ignored: int = 0
    tags_correct: int = 0
    tags_total: int = 0
    attributes_correct: int = 0
    attributes_total: int = 0

    @property
    def tag_accuracy(self) -> float | None:
        return self.tags_correct / self.tags_total if self.tags_total else None

    @property
    def attribute_accuracy(self) -> float | None:
        return self.attributes_correct / self.attributes_total if self.attributes_total else None


def _tag_answers(unit: Unit | None) -> dict[tuple[int, str], str]:
    answers: dict[tuple[int, str], list[str]] = defaultdict(list)
    for frame, question, answer in unit.tags if unit is not None else ():
        answers[(frame, question)].append(answer)
    return {key: "|".join(sorted(values)) for key, values in answers.items()}


def tags_to_counts(benchmark: Unit, candidate: Unit | None) -> tuple[int, int]:
    """(correct, total) over every (frame, question) either side answers: a missing or extra answer is wrong."""
    b, c = _tag_answers(benchmark), _tag_answers(candidate)
    keys = set(b) | set(c)
    return sum(1 for k in keys if b.get(k) == c.get(k)), len(keys)


def _attributes_to_counts(gt: Shape, dt: Shape) -> tuple[int, int]:
    """(correct, total) of the benchmark object's attributes that the matched candidate object got right."""
    answers = dict(dt.attributes)
    return sum(1 for name, value in gt.attributes if answers.get(name) == value), len(gt.attributes)


@dataclass(frozen=True, slots=True)
class ScoredFrame:
    """One frame to score: its shapes on both sides and its pixel size (None: fit the shapes)."""

    frame: int
    gt: list[Shape]
    dt: list[Shape]
    width: int | None
    height: int | None


def unit_frames(b_unit: Unit, c_unit: Unit | None, keep: Callable[[Shape], bool] | None = None) -> list[ScoredFrame]:
    """The frames of a unit pair that are scored, with the candidate shapes ``keep`` accepts (all when None)."""
    width = b_unit.width or (c_unit.width if c_unit else None)
    height = b_unit.height or (c_unit.height if c_unit else None)
    frames = []
    for frame in frame_indices(b_unit, c_unit):
        dt = c_unit.frames.get(frame, []) if c_unit is not None else []
        kept = list(dt) if keep is None else [s for s in dt if keep(s)]
        frames.append(ScoredFrame(frame, list(b_unit.frames.get(frame, [])), kept, width, height))
    return frames


FrameHook = Callable[[Unit, Unit | None, ScoredFrame, FrameMatch], None]
"""Called with each matched frame (the report's worst errors): benchmark unit, candidate unit, frame, outcome."""


def score_pairing(
    pairing: Pairing,
    *,
    iou_threshold: float,
    keep: Callable[[Shape], bool] | None = None,
    on_frame: FrameHook | None = None,
) -> Score:
    """Match every frame of every benchmark unit and count (see ``matching.match_frame``); ``keep`` filters
    the candidate's shapes before matching (a score threshold per class), None keeps them all; ``on_frame``
    sees every frame's outcome."""
    score = Score()
    for b_unit, c_unit in pairing.pairs:
        item = Counts()
        frames = unit_frames(b_unit, c_unit, keep)
        for scored in frames:
            frame, gt, dt, width, height = scored.frame, scored.gt, scored.dt, scored.width, scored.height
            m = match_frame(gt, dt, iou_threshold=iou_threshold, width=width, height=height)
            if on_frame is not None:
                on_frame(b_unit, c_unit, scored, m)
            score.frame_pairs.append(FramePair((b_unit.item, b_unit.slot, frame), list(gt), list(dt), width, height))
            for g, d, iou in m.matches:
                for counts in (item, score.overall, score.per_class[gt[g].label]):
                    counts.tp += 1
                    counts.iou_sum += iou
                correct, total = _attributes_to_counts(gt[g], dt[d])
                score.attributes_correct += correct
                score.attributes_total += total
            for g in m.missed:
                for counts in (item, score.overall, score.per_class[gt[g].label]):
                    counts.fn += 1
            for d in m.extra:
                for counts in (item, score.overall, score.per_class[dt[d].label]):
                    counts.fp += 1
            score.ignored += len(m.ignored)
            for g_label, d_label in m.confusion:
                score.confusion[g_label][d_label] += 1
        correct, total = tags_to_counts(b_unit, c_unit)
        score.tags_correct += correct
        score.tags_total += total
        score.items.append(ItemScore(b_unit.item, b_unit.slot, item, c_unit is not None, len(frames)))
    return score


def worst_items(score: Score, limit: int = 20) -> list[ItemScore]:
    """Units with errors, lowest F1 first, then most errors: where a reviewer should look first."""
    with_errors = [i for i in score.items if i.counts.fp or i.counts.fn]
    return sorted(with_errors, key=lambda i: (i.counts.f1, -(i.counts.fp + i.counts.fn), i.item, i.slot))[:limit]
