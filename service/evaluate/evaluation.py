"""Evaluate candidates against a benchmark: pair, match, count, mAP, seed rows, pass/fail; and the summary JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TypedDict

from service.errors import ErrorCode, PreannotateError
from service.evaluate.calibration import KeepAbove
from service.evaluate.coco_map import MapResult, compute_map
from service.evaluate.metrics import CountsJson, Score, score_pairing, worst_items
from service.evaluate.pairing import Pairing, pair_units
from service.evaluate.seed_csv import SeedRow, pairing_to_seed_rows
from service.evaluate.types import Dataset
from service.evaluate.worst import WorstErrors
from service.spec.thresholds import ThresholdsFile

_PIXEL_SOURCES = frozenset({"coco", "coco_results", "darwin"})


class CandidateFigures(CountsJson):
    """A candidate's headline figures: the leaderboard row, the threshold inputs (``candidate`` comes first)."""

    candidate: str
    map: float | None
    map50: float | None
    map_note: str | None
    tag_accuracy: float | None
    attribute_accuracy: float | None


class ClassJson(CountsJson):
    """One class's counts with its AP (when the candidate has mAP; without, an entry is the counts alone)."""

    ap: float | None
    ap50: float | None


class Tally(TypedDict):
    correct: int
    total: int


class ItemsJson(TypedDict):
    benchmark_units: int
    scored_units: int
    missing_in_candidate: list[str]
    candidate_only_units: int
    frames: int


class WorstItemJson(CountsJson):
    item: str
    slot: str
    in_candidate: bool
    frames: int


class ClassThresholdJson(TypedDict):
    """``evaluate --thresholds``: one class's F1 at the global threshold and at its calibrated one."""

    threshold: float | None
    calibrated: bool
    f1_global: float
    f1_calibrated: float
    precision_calibrated: float
    recall_calibrated: float


class CandidateJson(CandidateFigures):
    """Everything ``summary.json`` holds about one candidate (``class_thresholds``: None without ``--thresholds``)."""

    source: str
    format: str
    map_iou_type: str | None
    tags: Tally
    attributes: Tally
    per_class: dict[str, CountsJson | ClassJson]
    confusion: dict[str, dict[str, int]]
    items: ItemsJson
    ignored_in_crowd_regions: int
    skipped_shapes: dict[str, int]
    worst_items: list[WorstItemJson]
    passed: bool
    failed_checks: list[str]
    class_thresholds: dict[str, ClassThresholdJson] | None


class BenchmarkJson(TypedDict):
    source: str
    format: str
    units: int
    frames: int
    objects: int


class Summary(CandidateJson):
    """``summary.json`` (and the ``POST /v1/evaluate`` response): the first candidate's figures at the top."""

    iou_threshold: float
    benchmark: BenchmarkJson
    thresholds: dict[str, float]
    all_passed: bool
    candidates: list[CandidateJson]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Minimums a candidate must reach to pass (Benchmark QA routing); None = not checked. All in [0, 1]."""

    min_f1: float | None = None
    min_precision: float | None = None
    min_recall: float | None = None
    min_mean_iou: float | None = None
    min_map: float | None = None
    min_map50: float | None = None
    min_tag_accuracy: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not 0.0 <= value <= 1.0:
                flag = "--" + f.name.replace("_", "-")
                raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{flag} must be in [0, 1], got {value}")

    def to_json(self) -> dict[str, float]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def failures(self, figures: CandidateFigures) -> list[str]:
        """Human-readable failed checks, e.g. ``f1 0.6200 < 0.8000``; a missing figure fails its check."""
        by_name: Mapping[str, object] = figures  # each gate names its figure: min_f1 -> f1
        failed = []
        for name, minimum in self.to_json().items():
            metric = name.removeprefix("min_")
            value = by_name.get(metric)
            if not isinstance(value, int | float):
                failed.append(f"{metric} unavailable ({figures.get('map_note') or 'nothing to measure'})")
            elif value < minimum:
                failed.append(f"{metric} {value:.4f} < {minimum:.4f}")
        return failed


@dataclass(slots=True)
class CandidateResult:
    """One candidate's evaluation."""

    dataset: Dataset
    pairing: Pairing
    score: Score
    map: MapResult | None
    map_note: str | None
    seed_rows: list[SeedRow]
    failed: list[str] = field(default_factory=list)
    class_thresholds: dict[str, ClassThresholdJson] | None = None
    worst: WorstErrors | None = None  # kept only when the report shows thumbnails (``worst_per_class``)

    @property
    def passed(self) -> bool:
        return not self.failed


@dataclass(slots=True)
class Evaluation:
    benchmark: Dataset
    iou_threshold: float
    thresholds: Thresholds
    candidates: list[CandidateResult]
    class_thresholds: ThresholdsFile | None = None


def _map_or_note(candidate: Dataset, score: Score, benchmark: Dataset) -> tuple[MapResult | None, str | None]:
    if not candidate.has_scores():
        return None, "the candidate carries no scores (human labels): no mAP, use precision/recall/F1"
    result = compute_map(
        score.frame_pairs,
        gt_exact=benchmark.format in _PIXEL_SOURCES,
        dt_exact=candidate.format in _PIXEL_SOURCES,
    )
    return result, None if result is not None else "the benchmark has no objects"


def compare_class_thresholds(
    pairing: Pairing, class_thresholds: ThresholdsFile, *, iou_threshold: float
) -> dict[str, ClassThresholdJson]:
    """Per class, F1 with the candidate cut at the file's global threshold vs at each class's calibrated one
    (candidates filtered before matching, as a run applying the file would have produced them)."""
    per_class = class_thresholds.class_thresholds()
    at_global = score_pairing(pairing, iou_threshold=iou_threshold, keep=KeepAbove(class_thresholds.global_threshold))
    tuned = score_pairing(
        pairing, iou_threshold=iou_threshold, keep=KeepAbove(class_thresholds.global_threshold, per_class)
    )
    rows: dict[str, ClassThresholdJson] = {}
    for label in sorted(set(at_global.per_class) | set(tuned.per_class) | set(per_class)):
        before, after = at_global.per_class[label], tuned.per_class[label]
        rows[label] = {
            "threshold": per_class.get(label, class_thresholds.global_threshold),
            "calibrated": label in per_class,
            "f1_global": before.f1,
            "f1_calibrated": after.f1,
            "precision_calibrated": after.precision,
            "recall_calibrated": after.recall,
        }
    return rows


def evaluate_candidate(
    benchmark: Dataset,
    candidate: Dataset,
    *,
    iou_threshold: float,
    thresholds: Thresholds,
    class_thresholds: ThresholdsFile | None = None,
    worst_per_class: int = 0,
) -> CandidateResult:
    """Score one candidate: one-to-one counts, COCO mAP when it has scores, the seed's rows, the gate; with
    ``class_thresholds``, each class's F1 at the global threshold vs at its calibrated one; with
    ``worst_per_class``, that many of its worst false positives and misses per class."""
    pairing = pair_units(benchmark, candidate)
    worst = WorstErrors(worst_per_class) if worst_per_class > 0 else None
    score = score_pairing(pairing, iou_threshold=iou_threshold, on_frame=None if worst is None else worst.add_frame)
    map_result, note = _map_or_note(candidate, score, benchmark)
    result = CandidateResult(
        candidate, pairing, score, map_result, note, pairing_to_seed_rows(pairing, candidate_name=candidate.name)
    )
    result.worst = worst
    result.failed = thresholds.failures(candidate_figures(result))
    if class_thresholds is not None:
        result.class_thresholds = compare_class_thresholds(pairing, class_thresholds, iou_threshold=iou_threshold)
    return result


def evaluate(
    benchmark: Dataset,
    candidates: list[Dataset],
    *,
    iou_threshold: float = 0.5,
    thresholds: Thresholds | None = None,
    class_thresholds: ThresholdsFile | None = None,
    worst_per_class: int = 0,
) -> Evaluation:
    """Evaluate every candidate against the benchmark (names made unique: ``alice``, ``alice#2``);
    ``class_thresholds`` (``--thresholds``) adds each class's F1 at the global vs the calibrated threshold;
    ``worst_per_class`` > 0 keeps each candidate's worst errors per class (``evaluate --media``'s thumbnails)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--iou must be in (0, 1], got {iou_threshold}")
    if not candidates:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "give at least one candidate")
    seen: dict[str, int] = {}
    for candidate in candidates:
        seen[candidate.name] = seen.get(candidate.name, 0) + 1
        if seen[candidate.name] > 1:
            candidate.name = f"{candidate.name}#{seen[candidate.name]}"
    gates = thresholds or Thresholds()
    results = [
        evaluate_candidate(
            benchmark,
            c,
            iou_threshold=iou_threshold,
            thresholds=gates,
            class_thresholds=class_thresholds,
            worst_per_class=worst_per_class,
        )
        for c in candidates
    ]
    return Evaluation(benchmark, iou_threshold, gates, results, class_thresholds)


def candidate_figures(result: CandidateResult) -> CandidateFigures:
    """The headline figures of a candidate (the leaderboard row, the threshold inputs)."""
    overall = result.score.overall
    return {
        "candidate": result.dataset.name,
        **overall.to_json(),
        "map": None if result.map is None else result.map.map,
        "map50": None if result.map is None else result.map.map50,
        "map_note": result.map_note,
        "tag_accuracy": result.score.tag_accuracy,
        "attribute_accuracy": result.score.attribute_accuracy,
    }


def candidate_to_json(result: CandidateResult) -> CandidateJson:
    """Everything ``summary.json`` holds about one candidate."""
    score = result.score
    per_class: dict[str, CountsJson | ClassJson] = {}
    for label in sorted(set(score.per_class) | set(result.map.per_class if result.map else {})):
        counts = score.per_class[label].to_json()
        if result.map is None:
            per_class[label] = counts
        else:
            per_class[label] = {**counts, **result.map.per_class.get(label, {"ap": None, "ap50": None})}
    skipped: dict[str, int] = {}
    for unit in result.dataset.units:
        for kind, n in unit.skipped.items():
            skipped[kind] = skipped.get(kind, 0) + n
    pairing = result.pairing
    return {
        **candidate_figures(result),
        "source": result.dataset.source,
        "format": result.dataset.format,
        "map_iou_type": None if result.map is None else result.map.iou_type,
        "tags": {"correct": score.tags_correct, "total": score.tags_total},
        "attributes": {"correct": score.attributes_correct, "total": score.attributes_total},
        "per_class": per_class,
        "confusion": {g: dict(sorted(row.items())) for g, row in sorted(score.confusion.items())},
        "items": {
            "benchmark_units": len(pairing.pairs),
            "scored_units": sum(1 for _, c in pairing.pairs if c is not None),
            "missing_in_candidate": sorted(f"{b.item}/{b.slot}" for b, c in pairing.pairs if c is None),
            "candidate_only_units": len(pairing.candidate_only),
            "frames": len(score.frame_pairs),
        },
        "ignored_in_crowd_regions": score.ignored,
        "skipped_shapes": skipped,
        "worst_items": [
            {"item": i.item, "slot": i.slot, "in_candidate": i.in_candidate, "frames": i.frames, **i.counts.to_json()}
            for i in worst_items(score)
        ],
        "passed": result.passed,
        "failed_checks": result.failed,
        "class_thresholds": result.class_thresholds,
    }


def evaluation_to_summary(evaluation: Evaluation) -> Summary:
    """``summary.json``: the first candidate's figures at the top level (usually the only one), every
    candidate under ``candidates``, and the benchmark, IoU threshold and gates used."""
    candidates = [candidate_to_json(c) for c in evaluation.candidates]
    bench = evaluation.benchmark
    return {
        **candidates[0],
        "iou_threshold": evaluation.iou_threshold,
        "benchmark": {
            "source": bench.source,
            "format": bench.format,
            "units": len(bench.units),
            "frames": sum(len(u.frames) for u in bench.units),
            "objects": sum(len(s) for u in bench.units for s in u.frames.values()),
        },
        "thresholds": evaluation.thresholds.to_json(),
        "all_passed": all(c.passed for c in evaluation.candidates),
        "candidates": candidates,
    }
