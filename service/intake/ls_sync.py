"""Preannotate every task of a Label Studio project in place: the loop behind ``preannotate sync label-studio``.

A task that already has a prediction of this model version is skipped (or, with ``replace``, its prediction
is overwritten): a second run creates nothing. Every push is reconciled against the task's predictions first
(``LabelStudioClient.upsert_prediction``), so a crash or a retry cannot leave two. Afterwards the project's
``model_version`` is set, or annotators would not see the predictions.

Unlike Pixeltable's sync (seeds/004), which remembers in its own store what it pushed, the state lives in
Label Studio only: deleting predictions there, or running from another machine, just works. Nothing here
prints: the CLI hears about slots, frames and warnings through callbacks, and reads the report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from models.base import PromptableDetector, Segmenter
from models.errors import ModelError
from models.prompts import PromptSet
from service.backends.label_studio import LabelStudioClient, PushOutcome, as_preannotate_error
from service.backends.retry import BackendError
from service.config import Settings
from service.convert.label_studio import LabelConfig, parse_label_config
from service.convert.ls_prompts import PromptMap, labels_only, ls_config_to_prompts
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError, from_model_error
from service.intake.ls_tasks import Downloader, TaskFile, has_prediction, makes_masks, task_prediction
from service.pipeline.flow import options_filter
from service.pipeline.frames import FrameResult, SlotMeta
from service.pipeline.options import SamplingOptions
from service.pipeline.run import FrameDetector
from service.pipeline.tracks import needs_appearance
from service.spec.requests import check_prompt_classes

MAX_CONSECUTIVE_OUTAGES = 3
"""Stop after this many tasks in a row failed because Label Studio itself was unreachable or erroring."""


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """One sync run: which project, which model, how to sample and score."""

    project_id: int
    model_spec: str
    sampling: SamplingOptions
    threshold: float
    class_thresholds: Mapping[str, float] | None = None
    replace: bool = False
    aliases: Mapping[str, str] = field(default_factory=dict)
    prompts: PromptSet | None = None
    prompt_map: PromptMap | None = None


@dataclass(slots=True)
class SyncReport:
    """What a run did; ``failed`` maps task id to its error."""

    model_version: str
    prompts: PromptSet | None = None
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


def sync_project(
    client: LabelStudioClient,
    detector: FrameDetector,
    options: SyncOptions,
    settings: Settings,
    *,
    on_slot: Callable[[SlotMeta], None] | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    on_warning: Callable[[int, PreannotateError], None] | None = None,
    segmenter: Segmenter | None = None,
) -> SyncReport:
    """Preannotate every task of the project that lacks this model version's prediction.

    ``on_warning(task id, warning)`` hears of each object that decoded only in part (its prediction is pushed
    with the frames that decoded).

    Raises:
        BackendError: reading the project or listing its tasks failed, or Label Studio kept failing.
        PreannotateError: ``INVALID_ARGUMENT`` when the project has no box control to fill; ``INVALID_PROMPTS``
            when an open-vocabulary model finds no usable prompt in it.
    """
    project = client.get_project(options.project_id)
    xml = str(project.get("label_config") or "")
    config = parse_label_config(xml)
    if not config.for_run(masks=makes_masks(detector, segmenter)).targets():
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"project {options.project_id} has no RectangleLabels (on an Image) or VideoRectangle (on a Video)",
        )
    detector, config, aliases, prompts = _prompted(
        detector, options, xml, config, makes_masks(detector, segmenter), max_classes=settings.max_prompt_classes
    )
    info = detector.info
    model = ModelRef(spec=options.model_spec, version=info.version, class_names=info.class_names)
    report = SyncReport(model_version=model.version, prompts=prompts)
    limits, tracker = settings.media_limits(), settings.tracker_options()
    flow = settings.flow_options(
        threshold=options.threshold,
        class_thresholds=options.class_thresholds,
        describe_boxes=needs_appearance(tracker),
    )
    options_filter(info.class_names, flow)  # a threshold for a class the model lacks: refused before any task
    download = label_studio_downloader(client)
    outages = 0
    for task in client.iter_tasks(options.project_id):
        task_id = int(task["id"])
        if not options.replace and has_prediction(task, model.version):
            report.skipped += 1  # cheap pre-filter; upsert_prediction checks again before writing
            continue
        try:
            found = task_prediction(
                task,
                config,
                model=model,
                download=download,
                detector=detector,
                sampling=options.sampling,
                limits=limits,
                options=flow,
                tracker=tracker,
                aliases=aliases,
                work_dir=settings.work_dir,
                on_slot=on_slot,
                on_frame=on_frame,
                segmenter=segmenter,
            )
            for warning in found.warnings:  # pushed with what decoded; the user still hears about the rest
                if on_warning is not None:
                    on_warning(task_id, warning)
            report.dropped.update(found.prediction.dropped)
            pushed = client.upsert_prediction(task_id, found.prediction, replace_existing=options.replace)
            report.count(pushed.outcome)
            outages = 0
        except PreannotateError as exc:
            report.failed[task_id] = exc
        except BackendError as exc:
            report.failed[task_id] = as_preannotate_error(exc)
            outages = outages + 1 if exc.retryable else 0
            if outages >= MAX_CONSECUTIVE_OUTAGES:
                raise  # every further task would wait out the same retries
    pushed_any = report.created + report.replaced + report.skipped
    if pushed_any and project.get("model_version") != model.version:
        client.set_project_model_version(options.project_id, model.version)
        report.model_version_set = True
    return report


def _prompted(
    detector: FrameDetector, options: SyncOptions, xml: str, config: LabelConfig, masks: bool, *, max_classes: int
) -> tuple[FrameDetector, LabelConfig, Mapping[str, str], PromptSet | None]:
    """An open-vocabulary model's view for the run: prompted with ``options.prompts``, else with the project's
    labels (``ls_config_to_prompts``). Either way its class names are the labels (or names the user chose), so the
    converter renames nothing: no aliases, no ``predicted_values`` (a class that is no label is dropped).
    Any other model runs as it is."""
    if not (detector.info.open_vocabulary and isinstance(detector, PromptableDetector)):
        return detector, config, options.aliases, None
    prompts = options.prompts or ls_config_to_prompts(
        xml, aliases=options.aliases, overrides=options.prompt_map, masks=masks
    )
    check_prompt_classes(prompts, max_classes, field=f"project {options.project_id}'s labels")
    try:
        view = detector.prompted(prompts)
    except ModelError as exc:  # prompts the model cannot take (longer than its text window): invalid_prompts
        raise from_model_error(exc) from None
    return view, labels_only(config), {}, prompts


def label_studio_downloader(client: LabelStudioClient) -> Downloader:
    """Task media fetched through the Label Studio client (its key goes to the LS origin only)."""

    def download(value: str, scratch: Path) -> TaskFile:
        return TaskFile(path=client.download(value, scratch).path, url=client.media_url(value))

    return download
