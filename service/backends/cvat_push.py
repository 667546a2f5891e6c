"""CVAT as a job destination (``{"backend": "cvat", "task": ID}``): an item's objects written to a task, safe to repeat.

A push replaces only *this model's untouched* objects: ``source: auto`` (CVAT's UI turns an object a person edits
into ``semi-auto``) with our marker attribute naming the same model spec (any version). People's objects, objects
people edited, and other models' objects are never touched. Every object of a push is stamped with the digest of the
push's content and its place in it (``stamp_marker``): when a job holds this model's objects all stamped by the push
that would be written, each once, it is left as it is (``unchanged``), so a second run creates nothing, and an object
a person deleted stays deleted; a duplicate, or an older push's object, makes the job rewritten.

The scope of a replacement is the item: a video (one item per task) replaces this model's objects over the whole
task; an image replaces them on its own frame. Writes go job by job (each job gets the part of a track on its frames,
as an annotator opening it sees it; CVAT's export joins the parts of jobs that overlap). In each job, new objects are
created before the old ones are deleted (one PATCH each, each one transaction in CVAT), so a failure between the two
leaves both, which the next run cleans up, never neither. A create whose outcome is unknown (timeout, 5xx) is not sent
again blindly: the job is read again and what landed is adopted.
"""

from __future__ import annotations

import logging
import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import urlsplit

from service.backends.base import (
    Backend,
    CvatOutcome,
    CvatPushRecord,
    Lazy,
    PushRecord,
    require_configured,
)
from service.backends.cvat import (
    CvatClient,
    CvatJobInfo,
    CvatLabelInfo,
    CvatStoredAnnotations,
    CvatStoredObject,
    config_from_settings,
    parse_frame_url,
)
from service.backends.retry import BackendError, backend_error_to_preannotate
from service.config import Settings
from service.convert.cvat import (
    LabelTable,
    TaskFrameOf,
    annotations_in_frames,
    item_to_cvat,
    marker_spec,
    read_marker,
    stamp_marker,
)
from service.convert.cvat_types import SOURCE_AUTO, CvatAnnotations, CvatAttributeValue, CvatFrames, empty_annotations
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import MediaKind
from service.pipeline.predictions import ItemPredictions
from service.spec.job import JobSpec
from service.spec.requests import Destination, ItemIn, SlotIn

log = logging.getLogger(__name__)

Entry = tuple[ItemIn, ItemPredictions]


class CvatPusher(Backend):
    """Pushes to the configured CVAT; the client is built (and logs in) on the first push."""

    name: Literal["cvat"] = "cvat"

    def __init__(self, settings: Settings, *, client: CvatClient | None = None) -> None:
        self._settings = settings
        self._client = Lazy(lambda: client or self._build())

    def _build(self) -> CvatClient:
        config = config_from_settings(self._settings)
        if config is None:
            raise PreannotateError(ErrorCode.BACKEND_NOT_CONFIGURED, "CVAT is not configured")
        return CvatClient(config, fetch_policy=self._settings.fetch_policy())

    def check(self, destination: Destination, items: Sequence[ItemIn]) -> None:
        require_configured(config_from_settings(self._settings) is not None, self.name)
        if destination.task is None:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "a cvat destination needs its task id")

    def push(self, destination: Destination, item: ItemIn, predictions: ItemPredictions, spec: JobSpec) -> PushRecord:
        return self._push(destination, [(item, predictions)], spec.model_ref)

    def push_many(
        self, destination: Destination, entries: Sequence[tuple[ItemIn, ItemPredictions]], spec: JobSpec
    ) -> list[PushRecord | PreannotateError]:
        """One read and one write for all the entries (they share the destination's task)."""
        if not entries:
            return []
        try:
            record: PushRecord | PreannotateError = self._push(destination, entries, spec.model_ref)
        except PreannotateError as exc:
            record = exc
        return [record] * len(entries)

    def _push(self, destination: Destination, entries: Sequence[Entry], model: ModelRef) -> CvatPushRecord:
        if destination.task is None:
            raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "a cvat destination needs its task id")
        try:
            return push_task(self._client.get(), destination.task, entries, model)
        except BackendError as exc:
            raise backend_error_to_preannotate(exc) from None

    def close(self) -> None:
        client = self._client.take()
        if client is not None:
            client.close()


def push_task(
    client: CvatClient,
    task_id: int,
    entries: Sequence[Entry],
    model: ModelRef,
    *,
    aliases: Mapping[str, str] | None = None,
) -> CvatPushRecord:
    """Leave exactly the entries' objects of ``model`` on the task (see the module docs).

    Raises:
        BackendError: CVAT refused, or kept failing past the retry policy.
        PreannotateError: INVALID_ARGUMENT for an item whose frames belong to another task.
    """
    task = client.task(task_id)
    frames = client.frames(task)
    numbering = [slot_task_frames(item, task_id, frames) for item, _ in entries]
    infos = client.labels(task_id)
    needed = labels_for_classes(_class_names(entries, model), infos, aliases)
    infos = [client.add_marker(info) if info.id in needed else info for info in infos]
    labels = [info.as_label() for info in infos if info.marker_id() is not None]
    conversions = [
        item_to_cvat(predictions, task_frames, labels, model, aliases=aliases)
        for (_, predictions), task_frames in zip(entries, numbering, strict=True)
    ]
    new = _merged(c.annotations for c in conversions)
    whole_task = any(_is_video(predictions) for _, predictions in entries)
    covered = frozenset().union(*(c.frames for c in conversions))
    markers = {info.id: info.marker_id() for info in infos}
    dropped = sum((c.dropped for c in conversions), Counter[str]())
    off_task = sum(c.off_task for c in conversions)
    marker = stamp_marker(new)
    scope = None if whole_task else covered
    jobs = jobs_covering(client.jobs(task_id), scope)
    pushed = [_push_job(client, job, new, markers, model.spec, scope, marker) for job in jobs if not job.protected]
    removed = sum(n for _, n in pushed)
    outcome: CvatOutcome
    if all(written is None for written, _ in pushed):
        outcome = "unchanged"
    elif not (new["shapes"] or new["tracks"]):
        outcome = "removed"
    else:
        outcome = "replaced" if removed else "created"
    return CvatPushRecord(
        task=task_id,
        outcome=outcome,
        shapes=len(new["shapes"]),
        tracks=len(new["tracks"]),
        removed=removed,
        dropped=dropped,
        off_task=off_task,
        protected_jobs=sum(1 for job in jobs if job.protected),
    )


def _push_job(
    client: CvatClient,
    job: CvatJobInfo,
    new: CvatAnnotations,
    markers: Mapping[int, int | None],
    spec: str,
    scope: frozenset[int] | None,
    marker: str,
) -> tuple[str | None, int]:
    """Leave the part of ``new`` on the job's frames in the job; ``(None, 0)`` when it is there already, else
    ``("written", objects removed)``."""
    part = annotations_in_frames(new, job.start_frame, job.stop_frame)
    ours = our_objects(client.job_annotations(job.id), markers, spec, scope)
    if holds_exactly(ours, part, markers, marker):
        return None, 0
    if part["shapes"] or part["tracks"]:
        _create(client, job.id, part, {o.id for o in ours}, markers, marker)
    if ours:
        client.change_job_annotations(job.id, "delete", _as_body(ours))
    return "written", len(ours)


def jobs_covering(jobs: Sequence[CvatJobInfo], frames: Iterable[int] | None) -> list[CvatJobInfo]:
    """The jobs holding any of ``frames`` (None: every job)."""
    if frames is None:
        return list(jobs)
    wanted = sorted(set(frames))
    return [job for job in jobs if any(job.start_frame <= n <= job.stop_frame for n in wanted)]


def holds_exactly(
    ours: Sequence[CvatStoredObject], part: CvatAnnotations, markers: Mapping[int, int | None], marker: str
) -> bool:
    """Whether a job's objects of this model are the ones ``part`` would write: every one stamped by this push,
    none twice (two pushes racing, or a create resent), none that ``part`` lacks. One a person deleted may be missing.
    """
    stamps = [read_marker(o.marker(markers.get(o.label_id)) or "") for o in ours]
    indices = [s.index for s in stamps]
    objects = [*(s["attributes"] for s in part["shapes"]), *(t["attributes"] for t in part["tracks"])]
    expected = {read_marker(_value(attributes)).index for attributes in objects}
    return (
        all(s.push == marker for s in stamps)
        and len(set(indices)) == len(indices)
        and set(indices) <= expected
        and bool(ours) == bool(expected)
    )


def _value(attributes: Sequence[CvatAttributeValue]) -> str:
    return attributes[0]["value"] if attributes else ""


def _create(
    client: CvatClient,
    job_id: int,
    new: CvatAnnotations,
    before: set[int],
    markers: Mapping[int, int | None],
    marker: str,
) -> None:
    """Create ``new`` in the job. A 429 is sent again (nothing was stored); a send whose outcome is unknown (a 5xx, a
    timeout, a dropped connection) is checked against the job first, and sent again only if nothing landed."""
    policy = client.config.retry
    once = replace(policy, statuses=frozenset({429}), retry_transport_errors=False)
    for attempt in range(1, policy.max_attempts + 1):
        try:
            client.change_job_annotations(job_id, "create", new, retry=once)
            return
        except BackendError as exc:
            unknown = exc.status is None or exc.status >= 500
            if not unknown or attempt == policy.max_attempts:
                raise
            log.warning("cvat: job %d: creating objects failed (%s); reading the job again", job_id, exc.message)
        stored = client.job_annotations(job_id)
        landed = [
            o
            for o in (*stored.shapes, *stored.tracks)
            if o.id not in before and read_marker(o.marker(markers.get(o.label_id)) or "").push == marker
        ]
        if len(landed) >= len(new["shapes"]) + len(new["tracks"]):
            return  # the create went through after all
        policy.sleep(policy.backoff_s(attempt))


def our_objects(
    stored: CvatStoredAnnotations,
    markers: Mapping[int, int | None],
    spec: str,
    frames: frozenset[int] | None,
) -> list[CvatStoredObject]:
    """This model's untouched objects (any version), on ``frames`` (None: anywhere in the task)."""
    found: list[CvatStoredObject] = []
    for obj in (*stored.shapes, *stored.tracks):
        value = obj.marker(markers.get(obj.label_id))
        if obj.source != SOURCE_AUTO or value is None or marker_spec(value) != spec:
            continue
        if frames is None or obj.frame in frames:
            found.append(obj)
    return found


def labels_for_classes(
    class_names: Iterable[str], labels: Sequence[CvatLabelInfo], aliases: Mapping[str, str] | None
) -> set[int]:
    """The ids of the labels these model classes map to (name or alias, case-insensitive: ``LabelTable``)."""
    table = LabelTable.of([label.as_label() for label in labels], aliases)
    return {label.id for label in map(table.for_class, class_names) if label is not None}


def slot_task_frames(item: ItemIn, task_id: int, frames: CvatFrames) -> dict[str, TaskFrameOf]:
    """Each slot's frame numbering on the task: frames fetched from the task keep their numbers; a source video's
    frames go through the task's start, stop and step; an image is the task frame of the same file name.

    Raises:
        PreannotateError: INVALID_ARGUMENT for frames of another CVAT task.
    """
    return {slot.name: _slot_frames(item, slot, task_id, frames) for slot in item.slots}


def _slot_frames(item: ItemIn, slot: SlotIn, task_id: int, frames: CvatFrames) -> TaskFrameOf:
    urls = slot.all_urls()
    parsed = [parse_frame_url(url) for url in urls]
    if any(p is not None for p in parsed):
        if not all(p is not None and p[0] == task_id for p in parsed):
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT, f"item {item.name!r}: slot {slot.name!r} holds frames of another CVAT task"
            )
        numbers = [p[1] for p in parsed if p is not None]
        return lambda index: numbers[index] if 0 <= index < len(numbers) else None
    if frames.video:
        return frames.of_source_frame
    numbers_or_none = [image_frame(item, urlsplit(url).path, frames.names) for url in urls]
    return lambda index: numbers_or_none[index] if 0 <= index < len(numbers_or_none) else None


def image_frame(item: ItemIn, path: str, names: Sequence[str]) -> int | None:
    """The task frame whose file is ``path``: the name sharing the most trailing path parts with it (``cam2/0001.jpg``
    is not ``cam1/0001.jpg``); None when no name has its file name.

    Raises:
        PreannotateError: INVALID_ARGUMENT when two frames match it equally well (the item cannot be placed).
    """
    parts = [p for p in path.split("/") if p]
    best: list[int] = []
    best_len = 0
    for n, name in enumerate(names):
        theirs = [p for p in name.split("/") if p]
        shared = 0
        while shared < min(len(parts), len(theirs)) and parts[-1 - shared] == theirs[-1 - shared]:
            shared += 1
        if shared and shared == best_len:
            best.append(n)
        elif shared > best_len:
            best, best_len = [n], shared
    if len(best) > 1:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"item {item.name!r}: {posixpath.basename(path)!r} is frames {best[:3]} of the task alike: give the "
            "frame's own path",
        )
    return best[0] if best else None


def _is_video(predictions: ItemPredictions) -> bool:
    """A video, or frames fetched from a video task: its objects span the task (a track has no one frame)."""
    return any(meta.media in (MediaKind.VIDEO, MediaKind.SEQUENCE) for meta in predictions.slots)


def _class_names(entries: Sequence[Entry], model: ModelRef) -> set[str]:
    return {model.class_names[int(c)] for _, p in entries for f in p.frames for c in f.detections.class_id.tolist()}


def _merged(parts: Iterable[CvatAnnotations]) -> CvatAnnotations:
    merged = empty_annotations()
    for part in parts:
        merged["shapes"] += part["shapes"]
        merged["tracks"] += part["tracks"]
    return merged


def _as_body(objects: Sequence[CvatStoredObject]) -> dict[str, Any]:
    body: dict[str, Any] = {"version": 0, "tags": [], "shapes": [], "tracks": []}
    for obj in objects:
        body["tracks" if obj.shapes is not None else "shapes"].append(obj.to_json())
    return body
