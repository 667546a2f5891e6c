"""``preannotate sync label-studio``: preannotate every task of a Label Studio project in place.

A task that already has a prediction of this model version is skipped (or, with ``--replace``, its
prediction is overwritten): a second run creates nothing. Every push is reconciled against the task's
predictions first (``LabelStudioClient.upsert_prediction``), so a crash or a retry cannot leave two.
Afterwards the project's ``model_version`` is set, or annotators would not see the predictions.

Unlike Pixeltable's sync (seeds/004), which remembers in its own store what it pushed, the state lives
in Label Studio only: deleting predictions there, or running from another machine, just works.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import SecretStr

from models.errors import ModelError
from models.registry import load_detector
from service.backends.label_studio import (
    LabelStudioClient,
    LabelStudioConfig,
    PushOutcome,
    as_preannotate_error,
    config_from_settings,
)
from service.backends.retry import BackendError
from service.commands.common import Progress, load_settings
from service.config import Settings
from service.convert.label_studio import item_to_ls_result, parse_label_config
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError, from_model_error
from service.intake.ls_tasks import has_prediction, preannotate_task
from service.pipeline.flow import flow_options
from service.pipeline.options import SamplingOptions
from service.pipeline.predictions import track_item
from service.pipeline.run import FrameDetector

log = logging.getLogger(__name__)

API_KEY_ENV = "PREANNOTATE_LABEL_STUDIO_API_KEY"
"""Read when ``--api-key`` is not given: a key on the command line shows in ``ps`` and shell history."""
MAX_CONSECUTIVE_OUTAGES = 3
"""Stop after this many tasks in a row failed because Label Studio itself was unreachable or erroring."""


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """One sync run: which project, which model, how to sample and score."""

    project_id: int
    model_spec: str
    sampling: SamplingOptions
    threshold: float
    replace: bool = False
    aliases: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class SyncReport:
    """What a run did; ``failed`` maps task id to its error."""

    model_version: str
    created: int = 0
    replaced: int = 0
    skipped: int = 0
    failed: dict[int, PreannotateError] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)
    model_version_set: bool = False

    def count(self, outcome: PushOutcome) -> None:
        if outcome is PushOutcome.CREATED:
            self.created += 1
        elif outcome is PushOutcome.REPLACED:
            self.replaced += 1
        else:
            self.skipped += 1


def sync_command(args: argparse.Namespace) -> int:
    """Run ``preannotate sync label-studio``; 0 when every task worked, else the worst failure's exit code."""
    settings = load_settings()
    threshold = settings.threshold if args.threshold is None else args.threshold
    if not 0.0 <= threshold <= 1.0:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--threshold must be in [0, 1], got {threshold}")
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
        replace=args.replace,
        aliases=_parse_aliases(args.alias or []),
    )
    try:
        detector = load_detector(options.model_spec, settings.detector_options())
        detector.warmup()
    except ModelError as exc:
        raise from_model_error(exc) from None
    progress = Progress(quiet=args.quiet)
    try:
        with LabelStudioClient(config, fetch_policy=settings.fetch_policy()) as client:
            report = sync_project(client, detector, options, settings, progress=progress)
    except BackendError as exc:
        raise as_preannotate_error(exc) from None
    finally:
        progress.close()
        detector.close()
    _print_report(options.project_id, report)
    return min((e.code.exit_code for e in report.failed.values()), default=0)


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


def _parse_aliases(pairs: Sequence[str]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for pair in pairs:
        name, sep, label = pair.partition("=")
        if not sep or not name.strip() or not label.strip():
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--alias expects CLASS=LABEL, got {pair!r}")
        aliases[name.strip()] = label.strip()
    return aliases


def sync_project(
    client: LabelStudioClient,
    detector: FrameDetector,
    options: SyncOptions,
    settings: Settings,
    *,
    progress: Progress | None = None,
) -> SyncReport:
    """Preannotate every task of the project that lacks this model version's prediction.

    Raises:
        BackendError: reading the project or listing its tasks failed, or Label Studio kept failing.
        PreannotateError: ``INVALID_ARGUMENT`` when the project has no box control to fill.
    """
    info = detector.info
    model = ModelRef(spec=options.model_spec, version=info.version, class_names=info.class_names)
    project = client.get_project(options.project_id)
    config = parse_label_config(str(project.get("label_config") or ""))
    if not config.targets():
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"project {options.project_id} has no RectangleLabels (on an Image) or VideoRectangle (on a Video)",
        )
    report = SyncReport(model_version=model.version)
    outages = 0
    for task in client.iter_tasks(options.project_id):
        task_id = int(task["id"])
        if not options.replace and has_prediction(task, model.version):
            report.skipped += 1  # cheap pre-filter; upsert_prediction checks again before writing
            continue
        try:
            found = preannotate_task(
                task,
                config,
                download=lambda value, scratch: client.download(value, scratch).path,
                detector=detector,
                sampling=options.sampling,
                limits=settings.media_limits(),
                options=flow_options(settings, threshold=options.threshold),
                work_dir=settings.work_dir,
                on_slot=None if progress is None else progress.on_slot,
                on_frame=None if progress is None else lambda _: progress.advance(),
            )
            for warning in found.warnings:  # pushed with what decoded; the user still hears about the rest
                print(f"warning: task {found.item.name}: {warning}", file=sys.stderr)
            item = found.item
            data = task.get("data")
            prediction = item_to_ls_result(
                track_item(item, settings.tracker_options()),  # LS video regions are tracks
                model,
                config,
                aliases=options.aliases,
                task_data=data if isinstance(data, dict) else {},  # framerate="$fps" reads LS's fps from it
            )
            report.dropped.update(prediction.dropped)
            report.count(client.upsert_prediction(task_id, prediction, replace_existing=options.replace).outcome)
            outages = 0
        except PreannotateError as exc:
            report.failed[task_id] = exc
        except BackendError as exc:
            report.failed[task_id] = as_preannotate_error(exc)
            outages = outages + 1 if exc.retryable else 0
            if outages >= MAX_CONSECUTIVE_OUTAGES:
                raise  # every further task would wait out the same retries
    pushed = report.created + report.replaced + report.skipped
    if pushed and project.get("model_version") != model.version:
        client.set_project_model_version(options.project_id, model.version)
        report.model_version_set = True
    return report


def _print_report(project_id: int, report: SyncReport) -> None:
    print(
        f"label studio project {project_id} ({report.model_version}): {report.created} created, "
        f"{report.replaced} replaced, {report.skipped} skipped, {len(report.failed)} failed",
        file=sys.stderr,
    )
    if report.model_version_set:
        print(f"project {project_id} now shows model version {report.model_version}", file=sys.stderr)
    if report.dropped:
        counts = ", ".join(f"{name} x{n}" for name, n in report.dropped.most_common())
        print(f"not in the labeling config (dropped): {counts}; map them with --alias CLASS=LABEL", file=sys.stderr)
    for task_id, error in sorted(report.failed.items()):
        print(f"failed: task {task_id}: {error}", file=sys.stderr)
