"""``preannotate sync label-studio``: parse the flags, load the model, run ``service.intake.ls_sync`` and print
what it did. The task loop (skip, predict, reconcile, set the model version) lives in intake.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from models.errors import ModelError
from models.registry import load_detector
from service.backends.label_studio import (
    LabelStudioClient,
    LabelStudioConfig,
    as_preannotate_error,
    config_from_settings,
)
from service.backends.retry import BackendError
from service.commands.common import Progress, load_settings, prompted_detector, thresholds_from_args
from service.config import Settings
from service.convert.ls_prompts import PromptMap, describe, read_prompt_map
from service.errors import ErrorCode, PreannotateError, from_model_error
from service.intake.ls_sync import SyncOptions, SyncReport, sync_project
from service.pipeline.masking import open_segmenter
from service.pipeline.options import SamplingOptions
from service.remote_models import prompts_refused_message
from service.spec.requests import prompt_set

log = logging.getLogger(__name__)

API_KEY_ENV = "PREANNOTATE_LABEL_STUDIO_API_KEY"
"""Read when ``--api-key`` is not given: a key on the command line shows in ``ps`` and shell history."""


def sync_command(args: argparse.Namespace) -> int:
    """Run ``preannotate sync label-studio``; 0 when every task worked, else the worst failure's exit code."""
    settings = load_settings()
    threshold = settings.threshold if args.threshold is None else args.threshold
    if not 0.0 <= threshold <= 1.0:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--threshold must be in [0, 1], got {threshold}")
    class_thresholds = thresholds_from_args(getattr(args, "thresholds", None))
    try:
        sampling = SamplingOptions(fps=settings.fps if args.fps is None else args.fps, mode=settings.sampling)
        config = _ls_config(args, settings)
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None
    options = SyncOptions(
        project_id=args.project,
        model_spec=args.model or settings.model,
        sampling=sampling,
        threshold=threshold,
        class_thresholds=class_thresholds,
        replace=args.replace,
        aliases=parse_aliases(args.alias or []),
        # explicit: over the project's
        prompts=prompt_set(getattr(args, "prompts", None), field="--prompts", max_classes=settings.max_prompt_classes),
        prompt_map=_prompt_map(getattr(args, "prompt_map", None), settings),
    )
    _refuse_flags_prompts_replace(options)
    try:
        loaded = load_detector(options.model_spec, settings.detector_options())
    except ModelError as exc:
        raise from_model_error(exc) from None
    if options.prompt_map is not None and not loaded.info.open_vocabulary:
        loaded.close()
        raise PreannotateError(
            ErrorCode.INVALID_PROMPTS,
            f"--prompt-map: {prompts_refused_message(options.model_spec, loaded.info.class_names)}",
        )
    segmenter_spec = getattr(args, "segmenter", None) or settings.segmenter
    try:
        # An open-vocabulary model is prompted by the sync (--prompts, else the project's labels); a fixed-class
        # one given --prompts is refused here, before Label Studio is asked anything.
        detector = loaded if loaded.info.open_vocabulary else prompted_detector(loaded, options.prompts)
        detector.warmup()
        segmenter = None if segmenter_spec is None else open_segmenter(segmenter_spec, settings.detector_options())
    except ModelError as exc:
        loaded.close()
        raise from_model_error(exc) from None
    except BaseException:
        loaded.close()
        raise
    progress = Progress(quiet=args.quiet)
    try:
        with LabelStudioClient(config, fetch_policy=settings.fetch_policy()) as client:
            report = sync_project(
                client,
                detector,
                options,
                settings,
                on_slot=progress.on_slot,
                on_frame=lambda _: progress.advance(),
                on_warning=_print_warning,
                segmenter=segmenter,
            )
    except BackendError as exc:
        raise as_preannotate_error(exc) from None
    finally:
        progress.close()
        loaded.close()  # a view shares the loaded model's weights
        if segmenter is not None:
            segmenter.close()
    _print_report(options.project_id, report)
    return min((e.code.exit_code for e in report.failed.values()), default=0)


def _refuse_flags_prompts_replace(options: SyncOptions) -> None:
    """``--prompts`` names the classes and their prompts itself: a prompt map over the project's labels, or an
    alias map sending model classes to labels, would do nothing, so either is refused rather than ignored.

    Raises:
        PreannotateError: INVALID_ARGUMENT (exit 2).
    """
    if options.prompts is None:
        return
    if options.prompt_map is not None:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            "--prompt-map changes the prompts of the project's labels, which --prompts replaces: give one of them",
        )
    if options.aliases:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            "--alias maps model classes to labels; --prompts names its classes itself (LABEL=prompt): give one",
        )


def _ls_config(args: argparse.Namespace, settings: Settings) -> LabelStudioConfig:
    """Flags over the settings (``PREANNOTATE_LABEL_STUDIO_URL`` / ``_API_KEY``)."""
    configured = config_from_settings(settings)
    url = args.url or (configured.url if configured else "")
    # The environment variable directly too, until the settings carry the key.
    key = args.api_key or (configured.api_key.get_secret_value() if configured else os.environ.get(API_KEY_ENV, ""))
    if not url:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "give --url or set PREANNOTATE_LABEL_STUDIO_URL")
    if not key.strip():
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"give --api-key or set {API_KEY_ENV}")
    return LabelStudioConfig(url=url, api_key=SecretStr(key))


def parse_aliases(pairs: Sequence[str]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for pair in pairs:
        name, sep, label = pair.partition("=")
        if not sep or not name.strip() or not label.strip():
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--alias expects CLASS=LABEL, got {pair!r}")
        aliases[name.strip()] = label.strip()
    return aliases


def _prompt_map(path: Path | None, settings: Settings) -> PromptMap | None:
    """``--prompt-map FILE``, read (``PREANNOTATE_MAX_PROMPT_MAP_BYTES`` at most); None without the flag."""
    return None if path is None else read_prompt_map(path, max_bytes=settings.max_prompt_map_bytes)


def _print_warning(task_id: int, warning: PreannotateError) -> None:
    print(f"warning: task task-{task_id}: {warning}", file=sys.stderr)


def _print_report(project_id: int, report: SyncReport) -> None:
    print(
        f"label studio project {project_id} ({report.model_version}): {report.created} created, "
        f"{report.replaced} replaced, {report.skipped} skipped, {len(report.failed)} failed",
        file=sys.stderr,
    )
    if report.prompts is not None:
        print(f"prompts: {describe(report.prompts)}", file=sys.stderr)
    if report.model_version_set:
        print(f"project {project_id} now shows model version {report.model_version}", file=sys.stderr)
    if report.dropped:
        counts = ", ".join(f"{name} x{n}" for name, n in report.dropped.most_common())
        print(f"not in the labeling config (dropped): {counts}; map them with --alias CLASS=LABEL", file=sys.stderr)
    for task_id, error in sorted(report.failed.items()):
        print(f"failed: task {task_id}: {error}", file=sys.stderr)
