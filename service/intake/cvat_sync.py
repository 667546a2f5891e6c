"""Preannotate CVAT tasks in place: the loop behind ``preannotate sync cvat``.

Each task's frames are fetched from CVAT (``cvat_tasks``), detected, tracked, and pushed with
:func:`~service.backends.cvat_push.push_task`, which replaces only this model's untouched objects. A task already
holding this model version's objects is skipped before anything is fetched (``replace`` runs it again; the push
then leaves equal objects as they are), so a second run creates nothing. As with Label Studio's sync, the state
lives in CVAT only. Nothing here prints: the CLI hears about progress and warnings through callbacks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.backends.base import CvatPushRecord
from service.backends.cvat import CvatClient
from service.backends.cvat_push import Entry, push_task
from service.backends.media import CVAT, split_via
from service.backends.retry import BackendError, backend_error_to_preannotate
from service.config import Settings
from service.convert.cvat import marker_spec, model_marker, read_marker
from service.convert.cvat_types import SOURCE_AUTO
from service.convert.types import ModelRef
from service.errors import PreannotateError
from service.intake.cvat_tasks import frame_stride, plan_frames, task_items
from service.jobs.runner import predict_item
from service.pipeline.fetch import FetchedFile, Fetcher
from service.pipeline.flow import detector_sampling, options_filter, track_stage
from service.pipeline.frames import SlotMeta
from service.pipeline.options import SamplingOptions
from service.pipeline.predictions import ItemPredictions
from service.pipeline.run import FrameDetector
from service.pipeline.tracks import needs_appearance

MAX_CONSECUTIVE_OUTAGES = 3
"""Stop after this many tasks in a row failed because CVAT itself was unreachable or erroring."""


@dataclass(frozen=True, slots=True)
class CvatSyncOptions:
    """One sync run.

    Attributes:
        task_ids: The tasks, in order.
        model_spec: The model (its spec is half of the marker our objects carry).
        fps: Video frames per second of source wanted (with ``video_fps``); 0 = every frame.
        video_fps: The source's frame rate, which CVAT does not record.
        every: Task frames between samples instead of ``fps``.
        threshold, class_thresholds: Scores kept.
        replace: Run tasks that already hold this model version's objects again.
        aliases: Model class -> label name.
        quality: Which CVAT frames are detected on (``original`` or ``compressed``).
    """

    task_ids: tuple[int, ...]
    model_spec: str
    fps: float
    video_fps: float
    threshold: float
    every: int | None = None
    class_thresholds: Mapping[str, float] | None = None
    replace: bool = False
    aliases: Mapping[str, str] = field(default_factory=dict)
    quality: str = "original"


@dataclass(slots=True)
class CvatSyncReport:
    """What a run did, per outcome; ``failed`` maps task id to its error."""

    model_version: str
    created: int = 0
    replaced: int = 0
    unchanged: int = 0
    skipped: int = 0
    shapes: int = 0
    tracks: int = 0
    removed: int = 0
    off_task: int = 0
    failed: dict[int, PreannotateError] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)

    def count(self, record: CvatPushRecord) -> None:
        self.dropped.update(record.dropped)
        self.off_task += record.off_task
        if record.outcome == "created":
            self.created += 1
        elif record.outcome in ("replaced", "removed"):
            self.replaced += 1
        else:
            self.unchanged += 1
            return
        self.shapes += record.shapes
        self.tracks += record.tracks
        self.removed += record.removed


class CvatFrameFetcher(Fetcher):
    """Frames marked ``cvat+`` through the client (its credentials, CVAT's origin only); other URLs as usual."""

    def __init__(self, client: CvatClient, settings: Settings) -> None:
        super().__init__(settings.fetch_policy())
        self._cvat = client

    def fetch(self, url: str, dest_dir: Path, *, deadline_s: float | None = None) -> FetchedFile:
        backend, plain = split_via(url)
        if backend == CVAT:
            return self._cvat.download(plain, dest_dir, deadline_s=deadline_s)
        return super().fetch(url, dest_dir, deadline_s=deadline_s)


def sync_tasks(
    client: CvatClient,
    detector: FrameDetector,
    options: CvatSyncOptions,
    settings: Settings,
    *,
    on_slot: Callable[[SlotMeta], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
    on_warning: Callable[[int, PreannotateError], None] | None = None,
    on_task: Callable[[int, str], None] | None = None,
) -> CvatSyncReport:
    """Preannotate each task that lacks this model version's objects (every task with ``replace``).

    ``on_task(task id, plan)`` hears which frames a task samples; ``on_frames(n)`` of frames detected;
    ``on_warning(task id, warning)`` of frames that did not decode (the rest are pushed).

    Raises:
        PreannotateError: INVALID_ARGUMENT for a threshold naming a class the model lacks (before any task).
        BackendError: CVAT kept failing on ``MAX_CONSECUTIVE_OUTAGES`` tasks in a row.
    """
    info = detector.info
    model = ModelRef(spec=options.model_spec, version=info.version, class_names=info.class_names)
    report = CvatSyncReport(model_version=model.version)
    tracker = settings.tracker_options()
    flow = settings.flow_options(
        threshold=options.threshold,
        class_thresholds=options.class_thresholds,
        describe_boxes=needs_appearance(tracker),
    )
    options_filter(info.class_names, flow)
    sampling = detector_sampling(SamplingOptions(fps=0.0), info, None)
    fetcher = CvatFrameFetcher(client, settings)
    outages = 0
    for task_id in options.task_ids:
        try:
            task = client.task(task_id)
            frames = client.frames(task)
            every = frame_stride(frames, fps=options.fps, video_fps=options.video_fps, every=options.every)
            plan = plan_frames(frames, every, max_frames=settings.cvat_max_frames_per_task, task_id=task_id)
            if not options.replace and already_pushed(client, task_id, model_marker(model)):
                report.skipped += 1
                continue
            if on_task is not None:
                kind = f"video, every {plan.every} frame(s)" if frames.video else "images"
                on_task(task_id, f"{len(plan.frames)} of {frames.size} frames ({kind})")
            entries: list[Entry] = []
            for item in task_items(client.config.url, task, frames, plan, quality=options.quality):
                output = predict_item(
                    item,
                    detector,
                    flow,
                    sampling,
                    fetcher=fetcher,
                    limits=settings.media_limits(),
                    work_dir=settings.work_dir,
                    on_progress=_progress(on_frames),
                    finish_item=track_stage(tracker),
                )
                for warning in output.warnings:
                    if on_warning is not None:
                        on_warning(task_id, warning)
                entries.append((item, ItemPredictions(name=output.name, slots=output.slots, frames=output.frames)))
                if on_slot is not None:
                    for meta in output.slots:
                        on_slot(meta)
            report.count(push_task(client, task_id, entries, model, aliases=options.aliases))
            outages = 0
        except PreannotateError as exc:
            report.failed[task_id] = exc
        except BackendError as exc:
            report.failed[task_id] = backend_error_to_preannotate(exc)
            outages = outages + 1 if exc.retryable else 0
            if outages >= MAX_CONSECUTIVE_OUTAGES:
                raise
    return report


def already_pushed(client: CvatClient, task_id: int, version: str) -> bool:
    """Whether one push of this model version is complete on the task: its untouched objects of this model are all
    of that version, stamped by one push, and every object that push wrote is there (its stamps count them). A push
    cut short (some jobs written, or created but not yet deleted) is not, so the next run finishes it; nor is one
    that found nothing, or one a person deleted an object of, which costs the task a detection run whose push then
    finds it unchanged."""
    spec_ids = {label.marker_id() for label in client.labels(task_id)} - {None}
    if not spec_ids:
        return False
    stored = client.annotations(task_id)  # CVAT joins the jobs' parts: every object's stamp is in it
    stamps = [
        read_marker(a.value)
        for obj in (*stored.shapes, *stored.tracks)
        if obj.source == SOURCE_AUTO
        for a in obj.attributes
        if a.spec_id in spec_ids and marker_spec(a.value) == marker_spec(version)
    ]
    if not stamps or any(s.version != version or s.total is None for s in stamps):
        return False
    totals = {(s.push, s.total) for s in stamps}
    if len(totals) != 1:
        return False
    ((_, total),) = totals
    return {s.index for s in stamps} == set(range(total or 0))


def _progress(on_frames: Callable[[int], None] | None) -> Callable[[int, int], bool]:
    seen = [0]

    def on_progress(done: int, planned: int) -> bool:
        if on_frames is not None and done > seen[0]:
            on_frames(done - seen[0])
        seen[0] = max(seen[0], done)
        return True

    return on_progress


__all__ = ["CvatFrameFetcher", "CvatSyncOptions", "CvatSyncReport", "sync_tasks"]
