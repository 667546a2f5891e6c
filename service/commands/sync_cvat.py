"""``preannotate sync cvat``: parse the flags, load the model, run ``service.intake.cvat_sync``, print what it did."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import SecretStr

from models.errors import ModelError
from models.registry import load_detector
from service.backends.cvat import CvatClient, CvatConfig, config_from_settings
from service.backends.retry import BackendError, backend_error_to_preannotate
from service.commands.common import Progress, load_settings, thresholds_from_args
from service.commands.sync import parse_aliases
from service.config import Settings
from service.errors import ErrorCode, PreannotateError, from_model_error
from service.intake.cvat_sync import CvatSyncOptions, CvatSyncReport, sync_tasks

TOKEN_ENV = "PREANNOTATE_CVAT_TOKEN"
PASSWORD_ENV = "PREANNOTATE_CVAT_PASSWORD"


def sync_cvat_command(args: argparse.Namespace) -> int:
    """Run ``preannotate sync cvat``; 0 when every task worked, else the worst failure's exit code."""
    settings = load_settings()
    threshold = settings.threshold if args.threshold is None else args.threshold
    if not 0.0 <= threshold <= 1.0:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--threshold must be in [0, 1], got {threshold}")
    if args.every is not None and args.every < 1:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--every must be at least 1, got {args.every}")
    try:
        config = _cvat_config(args, settings)
    except ValueError as exc:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None
    model_spec = args.model or settings.model
    aliases = parse_aliases(args.alias or [])
    class_thresholds = thresholds_from_args(getattr(args, "thresholds", None))
    with CvatClient(config, fetch_policy=settings.fetch_policy()) as client:
        try:
            client.authorization()  # refused credentials: one error before the model loads, not one per task
            task_ids = tuple(args.task) if args.task else project_tasks(client, args.project)
            detector = load_detector(model_spec, settings.detector_options())
        except ModelError as exc:
            raise from_model_error(exc) from None
        except BackendError as exc:
            raise backend_error_to_preannotate(exc) from None
        progress = Progress(quiet=args.quiet)
        try:
            detector.warmup()
            options = CvatSyncOptions(
                task_ids=task_ids,
                model_spec=model_spec,
                fps=settings.fps if args.fps is None else args.fps,
                video_fps=settings.cvat_video_fps if args.video_fps is None else args.video_fps,
                every=args.every,
                threshold=threshold,
                class_thresholds=class_thresholds,
                replace=args.replace,
                aliases=aliases,
                quality=settings.cvat_frame_quality,
            )
            report = sync_tasks(
                client,
                detector,
                options,
                settings,
                on_frames=progress.advance,
                on_warning=_print_warning,
                on_task=None if args.quiet else _print_task,
            )
        except ModelError as exc:
            raise from_model_error(exc) from None
        except BackendError as exc:
            raise backend_error_to_preannotate(exc) from None
        finally:
            progress.close()
            detector.close()
    _print_report(args, report)
    return min((e.code.exit_code for e in report.failed.values()), default=0)


def project_tasks(client: CvatClient, project_id: int) -> tuple[int, ...]:
    """The project's tasks; a project with none is an error (exit 2), not a sync that did nothing."""
    found = tuple(client.project_tasks(project_id))
    if not found:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f"CVAT project {project_id} has no tasks (or none this user can see)"
        )
    return found


def _cvat_config(args: argparse.Namespace, settings: Settings) -> CvatConfig:
    """Flags over the settings (``PREANNOTATE_CVAT_URL`` / ``_TOKEN`` / ``_USERNAME`` / ``_PASSWORD``)."""
    configured = config_from_settings(settings)
    url = args.url or settings.cvat_url or ""
    if not url.strip():
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "give --url or set PREANNOTATE_CVAT_URL")
    token = args.token or settings.cvat_token.get_secret_value() or os.environ.get(TOKEN_ENV, "")
    user = args.user or ("" if token else settings.cvat_username)
    password = settings.cvat_password.get_secret_value() or os.environ.get(PASSWORD_ENV, "")
    if args.user and not password:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"--user needs the password in {PASSWORD_ENV}")
    if not token.strip() and not (user and password) and configured is None:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f"give --token (or set {TOKEN_ENV}), or --user with {PASSWORD_ENV}"
        )
    if args.user:
        token = ""  # an explicit user logs in, whatever token the environment holds
    return CvatConfig(url=url, token=SecretStr(token), username=user, password=SecretStr(password))


def _print_task(task_id: int, plan: str) -> None:
    print(f"task {task_id}: {plan}", file=sys.stderr)


def _print_warning(task_id: int, warning: PreannotateError) -> None:
    print(f"warning: task {task_id}: {warning}", file=sys.stderr)


def _print_report(args: argparse.Namespace, report: CvatSyncReport) -> None:
    where = f"project {args.project}" if args.project else f"task(s) {', '.join(map(str, args.task))}"
    print(
        f"cvat {where} ({report.model_version}): {report.created} created, {report.replaced} replaced, "
        f"{report.unchanged} unchanged, {report.skipped} skipped, {len(report.failed)} failed; "
        f"{report.tracks} tracks and {report.shapes} shapes written, {report.removed} earlier ones removed",
        file=sys.stderr,
    )
    if report.dropped:
        counts = ", ".join(f"{name} x{n}" for name, n in report.dropped.most_common())
        print(f"no label takes (dropped): {counts}; map them with --alias CLASS=LABEL", file=sys.stderr)
    if report.off_task:
        print(f"{report.off_task} sampled frame(s) are outside their task (start/stop)", file=sys.stderr)
    for task_id, error in sorted(report.failed.items()):
        print(f"failed: task {task_id}: {error}", file=sys.stderr)
