"""``preannotate calibrate``: per-class score thresholds learned from benchmark labels.

Loads ``--benchmark`` and one ``--candidate`` exactly as ``evaluate`` does, picks each class's threshold
(``service.evaluate.calibration``), writes the thresholds file ``--thresholds`` reads, and prints a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.commands.common import load_settings
from service.commands.evaluate import read_label_config
from service.errors import ErrorCode, PreannotateError
from service.evaluate.calibration import Objective, calibrate
from service.evaluate.inputs import load_benchmark, load_candidates
from service.evaluate.pairing import nothing_paired_hint, pair_units
from service.files import write_atomic
from service.spec.thresholds import ThresholdsFile


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def thresholds_table(thresholds: ThresholdsFile) -> str:
    """The per-class table printed on stderr: one line a class, the uncalibrated ones with their reason."""
    width = max([5, *(len(name) for name in thresholds.classes)])
    lines = [f"{'class':<{width}}  support  threshold  precision  recall     f1  note"]
    for name, c in thresholds.classes.items():
        note = "calibrated" if c.calibrated else (c.reason or "not calibrated")
        lines.append(
            f"{name:<{width}}  {c.support:>7}  {c.threshold:>9.3f}  {_figure(c.precision):>9}  "
            f"{_figure(c.recall):>6}  {_figure(c.f1):>5}  {note}"
        )
    return "\n".join(lines)


def calibrate_from_args(args: argparse.Namespace) -> ThresholdsFile:
    """Load the inputs as ``evaluate`` does and calibrate; every bad input is a PreannotateError naming it."""
    settings = load_settings()
    try:
        objective = Objective.parse(args.objective)
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--objective: {exc}") from None
    label_config = read_label_config(args.label_config)
    benchmark = load_benchmark(args.benchmark, label_config=label_config)
    candidates = load_candidates(args.candidate, benchmark, label_config=label_config)
    if len(candidates) != 1:
        names = ", ".join(c.name for c in candidates) or "none"
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"{args.candidate}: calibrate takes one candidate, this holds {len(candidates)} ({names}); "
            "pick one: PRED#predictions=VERSION",
        )
    candidate = candidates[0]
    hint = nothing_paired_hint(pair_units(benchmark, candidate))
    if hint is not None:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{args.candidate}: {hint}")
    return calibrate(
        benchmark,
        candidate,
        objective=objective,
        iou_threshold=args.iou,
        global_threshold=settings.threshold if args.threshold is None else args.threshold,
        min_support=settings.calibrate_min_support if args.min_support is None else args.min_support,
        model_version=args.model_version or candidate.model_version or "",  # the flag names what the file fails to
    )


def _write(path: Path, thresholds: ThresholdsFile) -> None:
    try:
        write_atomic(path, thresholds.to_json_text())
    except OSError as exc:
        raise PreannotateError(ErrorCode.OUTPUT_FAILED, f"{path}: cannot write ({exc.strerror})") from None


def calibrate_command(args: argparse.Namespace) -> int:
    """Calibrate, write ``--out``, print the per-class table on stderr."""
    if args.out.is_dir():  # before loading: a bad --out must not cost the calibration
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{args.out}: is a directory; --out names a file")
    thresholds = calibrate_from_args(args)
    if getattr(args, "save", False) and not thresholds.model_version.strip():  # before anything is written
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"{args.candidate}: carries no model version to save the thresholds under; give --model-version",
        )
    _write(args.out, thresholds)
    print(thresholds_table(thresholds), file=sys.stderr)
    if getattr(args, "save", False):
        from service.jobs.calibrated import save_calibration  # the store's clients only when saving

        print(f"saved to {save_calibration(load_settings(), thresholds)}", file=sys.stderr)
    calibrated = sum(1 for c in thresholds.classes.values() if c.calibrated)
    version = thresholds.model_version or "unknown (give --model-version)"
    print(
        f"calibrated {calibrated} of {len(thresholds.classes)} classes for {thresholds.objective} "
        f"(model version {version}); wrote {args.out}",
        file=sys.stderr,
    )
    return 0
