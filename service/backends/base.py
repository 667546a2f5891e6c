"""What every labeling-tool backend offers the jobs layer: ``check`` a destination at submit, ``push`` an item.

Every push is idempotent (re-running an item creates no duplicate): Label Studio keeps one prediction per model
version per task, V7 imports with overwrite, Encord replaces only this model's objects. A push answers with a
:class:`PushRecord`, whose ``to_json`` is the record job results have always shown under ``pushes``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, NotRequired, Protocol, TypedDict, TypeVar, runtime_checkable

from service.errors import ErrorCode, PreannotateError
from service.pipeline.predictions import ItemPredictions
from service.spec.job import JobSpec
from service.spec.requests import Destination, ItemIn

BackendName = Literal["label_studio", "v7", "encord", "cvat"]


class LabelStudioPushJson(TypedDict):
    backend: Literal["label_studio"]
    task: int
    outcome: str
    id: int
    dropped: dict[str, int]


class V7PushJson(TypedDict):
    backend: Literal["v7"]
    item: str
    imported: int
    skipped_reason: str | None
    registered: NotRequired[str]


class EncordPushJson(TypedDict):
    backend: Literal["encord"]
    data_hash: str
    label_hash: str
    objects: int
    bundle_items: int


CvatOutcome = Literal["created", "replaced", "unchanged", "removed"]


class CvatPushJson(TypedDict):
    backend: Literal["cvat"]
    task: int
    outcome: CvatOutcome
    shapes: int
    tracks: int
    removed: int
    dropped: dict[str, int]
    off_task: int
    protected_jobs: int


PushJson = LabelStudioPushJson | V7PushJson | EncordPushJson | CvatPushJson
"""A push as a job's result shows it under ``pushes``."""


@dataclass(frozen=True, slots=True)
class LabelStudioPushRecord:
    """A prediction left on a task: ``created``, ``skipped`` (this model version's was there) or ``replaced``."""

    task: int
    outcome: str
    id: int
    dropped: Mapping[str, int]
    backend: Literal["label_studio"] = "label_studio"

    def to_json(self) -> LabelStudioPushJson:
        return {
            "backend": self.backend,
            "task": self.task,
            "outcome": self.outcome,
            "id": self.id,
            "dropped": dict(self.dropped),
        }


@dataclass(frozen=True, slots=True)
class V7PushRecord:
    """An import into a V7 item; ``registered`` says how an item V7 lacked was added (``existing``/``upload``)."""

    item: str
    imported: int
    skipped_reason: str | None
    registered: str | None = None
    backend: Literal["v7"] = "v7"

    def to_json(self) -> V7PushJson:
        record: V7PushJson = {
            "backend": self.backend,
            "item": self.item,
            "imported": self.imported,
            "skipped_reason": self.skipped_reason,
        }
        if self.registered:
            record["registered"] = self.registered
        return record


@dataclass(frozen=True, slots=True)
class EncordPushRecord:
    """A label row saved; ``bundle_items`` counts the items saved in one request with it, itself included."""

    data_hash: str
    label_hash: str
    objects: int
    bundle_items: int
    backend: Literal["encord"] = "encord"

    def to_json(self) -> EncordPushJson:
        return {
            "backend": self.backend,
            "data_hash": self.data_hash,
            "label_hash": self.label_hash,
            "objects": self.objects,
            "bundle_items": self.bundle_items,
        }


@dataclass(frozen=True, slots=True)
class CvatPushRecord:
    """What a push left on a CVAT task: ``created``, ``replaced`` (this model's earlier objects removed),
    ``unchanged`` (the same objects were there) or ``removed`` (nothing found now; the earlier objects removed).

    Attributes:
        shapes, tracks: Objects created.
        removed: This model's earlier objects deleted.
        dropped: Detections per class that no label of the task takes.
        off_task: Sampled frames the task does not hold (a source video's frames before its start or after its stop).
        protected_jobs: Jobs left alone because people finished them (stage acceptance, or state completed).
    """

    task: int
    outcome: CvatOutcome
    shapes: int
    tracks: int
    removed: int
    dropped: Mapping[str, int]
    off_task: int = 0
    protected_jobs: int = 0
    backend: Literal["cvat"] = "cvat"

    def to_json(self) -> CvatPushJson:
        return {
            "backend": self.backend,
            "task": self.task,
            "outcome": self.outcome,
            "shapes": self.shapes,
            "tracks": self.tracks,
            "removed": self.removed,
            "dropped": dict(self.dropped),
            "off_task": self.off_task,
            "protected_jobs": self.protected_jobs,
        }


PushRecord = LabelStudioPushRecord | V7PushRecord | EncordPushRecord | CvatPushRecord
"""What one push did; ``record.to_json()`` is what a job's result shows."""


@runtime_checkable
class Backend(Protocol):
    """One labeling tool, built once per process from the settings and shared by the worker threads."""

    name: BackendName

    def check(self, destination: Destination, items: Sequence[ItemIn]) -> None:
        """Refuse, before anything runs (422), a destination this server cannot push to, or items the tool
        could not place.

        Raises:
            PreannotateError: ``BACKEND_NOT_CONFIGURED`` or ``INVALID_ARGUMENT``.
        """
        ...

    def push(self, destination: Destination, item: ItemIn, predictions: ItemPredictions, spec: JobSpec) -> PushRecord:
        """Push one item's predictions; safe to repeat.

        Raises:
            PreannotateError: the vendor's failure mapped to the service's codes (retryable ones requeue).
        """
        ...

    def push_many(
        self,
        destination: Destination,
        entries: Sequence[tuple[ItemIn, ItemPredictions]],
        spec: JobSpec,
    ) -> list[PushRecord | PreannotateError]:
        """Push items a caller has all at once (CLI, sync): one record or error per entry, in order."""
        ...

    def close(self) -> None: ...


def push_one_by_one(
    backend: Backend, destination: Destination, entries: Sequence[tuple[ItemIn, ItemPredictions]], spec: JobSpec
) -> list[PushRecord | PreannotateError]:
    """``push_many`` for a tool with no cheaper way to push several items."""
    outcomes: list[PushRecord | PreannotateError] = []
    for item, predictions in entries:
        try:
            outcomes.append(backend.push(destination, item, predictions, spec))
        except PreannotateError as exc:
            outcomes.append(exc)
    return outcomes


def require_configured(configured: bool, backend: BackendName) -> None:
    if not configured:
        raise PreannotateError(
            ErrorCode.BACKEND_NOT_CONFIGURED,
            f"destination {backend!r} is not configured on this server (see the README's settings)",
        )


def require_external_ids(items: Sequence[ItemIn], backend: BackendName, what: str) -> None:
    """Every item names itself in ``backend`` (the tool cannot find it otherwise)."""
    missing = [item.name for item in items if not (item.external_ids or {}).get(backend)]
    if missing:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT,
            f"items {missing[:5]} need their {backend} {what} in external_ids.{backend}",
        )


def external_id(item: ItemIn, backend: BackendName) -> str | None:
    """The item's id in ``backend``, None when it has none."""
    value = (item.external_ids or {}).get(backend)
    return value or None


def required_external_id(item: ItemIn, backend: BackendName, what: str) -> str:
    """The item's id in ``backend``; INVALID_ARGUMENT when it has none."""
    value = external_id(item, backend)
    if value is None:
        raise PreannotateError(
            ErrorCode.INVALID_ARGUMENT, f"item {item.name!r}: {backend} needs its {what} in external_ids.{backend}"
        )
    return value


T = TypeVar("T")


class Lazy(Generic[T]):
    """A value built on first use, once, by whichever thread comes first (a client: no request before a push)."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._build()
            return self._value

    def take(self) -> T | None:
        """The value if built, forgotten here (its owner closes it)."""
        with self._lock:
            value, self._value = self._value, None
            return value
