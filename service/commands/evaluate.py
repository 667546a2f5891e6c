"""``preannotate evaluate``: score candidates (model preannotations, annotators) against benchmark labels.

Writes summary.json, leaderboard.csv, iou_results.csv (Encord's script, for compatibility) and report.html.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.commands.common import check_output_dir, load_settings
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.evaluate.evaluation import Evaluation, Thresholds, candidate_figures, evaluate
from service.evaluate.inputs import load_benchmark, load_candidates
from service.evaluate.outputs import write_outputs
from service.evaluate.pairing import nothing_paired_hint
from service.evaluate.types import Dataset
from service.spec.thresholds import ThresholdsFile


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def read_thresholds(path: Path | None) -> ThresholdsFile | None:
    """``--thresholds``: a file ``preannotate calibrate`` wrote; INVALID_ARGUMENT naming it when it is not one."""
    if path is None:
        return None
    try:
        return ThresholdsFile.read(path)
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None


def read_label_config(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise PreannotateError(
            ErrorCode.INPUT_NOT_FOUND, f"{path}: cannot read the label config ({exc.strerror})"
        ) from None


def check_media_dirs(dirs: list[Path] | None) -> list[Path]:
    """``--media``: each must be a directory (INPUT_NOT_FOUND naming it, before any work)."""
    for path in dirs or []:
        if not path.is_dir():
            raise PreannotateError(ErrorCode.INPUT_NOT_FOUND, f"--media {path}: not a directory")
    return list(dirs or [])


def write_report(evaluation: Evaluation, out: Path, media: list[Path], settings: Settings) -> None:
    """The four files; with ``--media``, report.html shows the worst errors found in the media as thumbnails."""
    gallery = None
    if media:
        from service.evaluate.thumbnails import MediaLookup, ThumbnailOptions, make_gallery  # OpenCV, decoders

        options = ThumbnailOptions(settings.evaluate_thumbnails_per_class, settings.evaluate_thumbnail_px)
        gallery = make_gallery(evaluation, MediaLookup(media), options, settings.media_limits())
        if gallery.errors_without_media:
            print(
                f"warning: {gallery.errors_without_media} of the worst errors have no thumbnail: media of "
                f"{len(gallery.missing)} items not found under --media, {len(gallery.unreadable)} not decodable, "
                f"{len(gallery.off_frame)} with boxes outside the frame",
                file=sys.stderr,
            )
    write_outputs(evaluation, out, gallery)


GATE_FAILED_EXIT = 3  # distinct from 1 (our failure) and 2 (bad input): CI can tell a failed gate apart


def evaluate_command(args: argparse.Namespace) -> int:
    """Load, evaluate, write; one line per candidate on stderr. The outputs are written either way; the exit
    status is GATE_FAILED_EXIT when any candidate fails a ``--min-*`` threshold, so a CI step fails."""
    thresholds = Thresholds(
        min_f1=args.min_f1,
        min_precision=args.min_precision,
        min_recall=args.min_recall,
        min_mean_iou=args.min_mean_iou,
        min_map=args.min_map,
        min_map50=args.min_map50,
        min_tag_accuracy=args.min_tag_accuracy,
    )
    check_output_dir(args.out)  # before loading: a bad --out must not cost the evaluation
    media = check_media_dirs(args.media)
    settings = load_settings()
    label_config = read_label_config(args.label_config)
    class_thresholds = read_thresholds(args.thresholds)
    benchmark = load_benchmark(args.benchmark, label_config=label_config)
    candidates: list[Dataset] = []
    for text in args.candidate:
        candidates += load_candidates(text, benchmark, label_config=label_config)
    evaluation = evaluate(
        benchmark,
        candidates,
        iou_threshold=args.iou,
        thresholds=thresholds,
        class_thresholds=class_thresholds,
        worst_per_class=settings.evaluate_thumbnails_per_class if media else 0,  # kept only to be shown
    )
    write_report(evaluation, args.out, media, settings)
    for result in evaluation.candidates:
        f = candidate_figures(result)
        verdict = ("pass" if result.passed else "FAIL: " + "; ".join(result.failed)) if thresholds.to_json() else ""
        print(
            f"{f['candidate']}: TP {f['tp']} FP {f['fp']} FN {f['fn']}  P {_figure(f['precision'])} "
            f"R {_figure(f['recall'])} F1 {_figure(f['f1'])}  mean IoU {_figure(f['mean_iou'])}  "
            f"mAP {_figure(f['map'])} mAP50 {_figure(f['map50'])}  {verdict}".rstrip(),
            file=sys.stderr,
        )
        hint = nothing_paired_hint(result.pairing)
        if hint is not None:
            print(f"warning: {f['candidate']}: {hint}", file=sys.stderr)
    print(f"wrote summary.json, leaderboard.csv, iou_results.csv and report.html to {args.out}", file=sys.stderr)
    failed = [c.dataset.name for c in evaluation.candidates if not c.passed]
    if failed:
        print(f"gate failed: {', '.join(failed)}", file=sys.stderr)
        return GATE_FAILED_EXIT
    return 0
