"""``preannotate run``: inputs -> sampled frames -> detections -> COCO file."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base import DetectorOptions
from models.errors import ModelError
from models.registry import load_detector
from service.commands.common import (
    Progress,
    exit_code_for,
    load_settings,
    sampling_from_args,
    write_json_atomic,
)
from service.config import Settings
from service.convert.coco import frame_results_to_coco
from service.errors import ErrorCode, PreannotateError, from_model_error
from service.pipeline.frames import FrameResult
from service.pipeline.media import ItemSpec, item_from_path, parse_slot_arg
from service.pipeline.options import SamplingOptions
from service.pipeline.run import SlotFailure, detect_frames, iter_frames, prefetch


def items_from_args(inputs: list[Path], item: str | None, slots: list[str]) -> list[ItemSpec]:
    """Positional inputs (one item each) plus the --item/--slot item; names made unique."""
    items = [item_from_path(path) for path in inputs]
    if slots and not item:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "--slot needs --item NAME")
    if item:
        if not slots:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "--item needs at least one --slot SLOT=PATH")
        specs = tuple(parse_slot_arg(text) for text in slots)
        duplicates = [name for name, n in Counter(s.name for s in specs).items() if n > 1]
        if duplicates:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"slot names must be unique: {', '.join(duplicates)}")
        items.append(ItemSpec(name=item, slots=specs))
    if not items:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "nothing to do: give INPUT files or --item with --slot")
    # Two inputs called img.jpg in different folders must not become one item.
    clashes = {name for name, n in Counter(i.name for i in items).items() if n > 1}
    return [
        ItemSpec(name=str(i.slots[0].paths[0]), slots=i.slots) if i.name in clashes and len(i.slots) == 1 else i
        for i in items
    ]


def detector_options(args: argparse.Namespace, settings: Settings) -> DetectorOptions:
    base = settings.detector_options()
    try:
        return DetectorOptions(
            device=args.device or base.device,
            batch_size=args.batch_size or base.batch_size,
            input_size_px=args.input_size or base.input_size_px,
            num_threads=base.num_threads,
            fp16=base.fp16,
        )
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One ``run``: what to read, which model, how to sample, where to write."""

    items: list[ItemSpec]
    model_spec: str
    detector_options: DetectorOptions
    sampling: SamplingOptions
    threshold: float
    classes: list[str] | None
    out: Path
    quiet: bool


def run_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    threshold = settings.threshold if args.threshold is None else args.threshold
    if not 0.0 <= threshold <= 1.0:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--threshold must be in [0, 1], got {threshold}")
    request = RunRequest(
        items=items_from_args(args.inputs, args.item, args.slot),
        model_spec=args.model or settings.model,
        detector_options=detector_options(args, settings),
        sampling=sampling_from_args(args, settings),
        threshold=threshold,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
        out=args.out,
        quiet=args.quiet,
    )
    _, failures = execute_run(request, settings)
    return exit_code_for(failures)


def execute_run(request: RunRequest, settings: Settings) -> tuple[dict[str, Any], list[SlotFailure]]:
    """Load the model, run every item through it, write COCO; report per-slot failures."""
    try:
        detector = load_detector(request.model_spec, request.detector_options)
        detector.warmup()
    except ModelError as exc:
        raise from_model_error(exc) from None

    progress = Progress(quiet=request.quiet)
    results: list[FrameResult] = []
    try:
        frames = iter_frames(
            request.items,
            request.sampling,
            settings.media_limits(),
            on_slot=progress.on_slot,
            on_error=progress.on_error,
        )
        for result in detect_frames(
            prefetch(frames, settings.prefetch_frames), detector, threshold=request.threshold, classes=request.classes
        ):
            results.append(result)
            progress.advance()
    finally:
        progress.close()
        detector.close()

    coco = frame_results_to_coco(
        results,
        class_names=detector.info.class_names,
        multi_slot_items=frozenset(i.name for i in request.items if len(i.slots) > 1),
        model=detector.info,
    )
    write_json_atomic(request.out, coco)
    print(
        f"wrote {len(coco['images'])} images/frames and {len(coco['annotations'])} detections "
        f"({detector.info.name}, {detector.info.device}) to {request.out}",
        file=sys.stderr,
    )
    for failure in progress.failures:
        print(f"failed: {failure.item}/{failure.slot}: {failure.error}", file=sys.stderr)
    return coco, progress.failures
