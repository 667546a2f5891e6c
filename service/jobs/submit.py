"""Turning a validated :class:`JobCreate` into a queued job: the one path ``POST /v1/jobs``, the webhooks and
the Label Studio sweep share, so every source gets the same checks, parameters and dedupe.

Checks run before anything is stored: URL schemes, slot counts, the model, class names, destinations. The
stored request pins the model version, so "the same items for the same model version" is the same job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import ValidationError

from models.types import ModelInfo
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.jobs.models import ItemIn, JobCreate
from service.jobs.push import check_destination
from service.jobs.store import JobRecord, JobStore
from service.pipeline.run import class_filter

ALLOWED_SCHEMES = frozenset({"http", "https", "s3", "file"})
"""What a client may name. Internal sources may add schemes (``label-studio+https`` ...): see
``service.jobs.backend_media``."""
QUEUE_FULL_RETRY_S = 30


class ModelEntry(Protocol):
    """A model as job submission sees it: loaded here, or published by remote workers."""

    @property
    def spec(self) -> str: ...

    @property
    def info(self) -> ModelInfo: ...


class ModelLookup(Protocol):
    """``ModelRegistry.get`` (or a distributed-mode catalog's): the default for None, else MODEL_NOT_FOUND."""

    def get(self, name: str | None) -> ModelEntry: ...


def check_urls(items: Sequence[ItemIn], max_slots: int, *, extra_schemes: Collection[str] = ()) -> None:
    """Cheap checks up front; the full SSRF check runs again when the worker fetches (DNS can change).

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` for too many slots, ``URL_NOT_ALLOWED`` for a scheme.
    """
    for item in items:
        if len(item.slots) > max_slots:
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT, f"item {item.name!r} has {len(item.slots)} slots; the limit is {max_slots}"
            )
        for slot in item.slots:
            for url in slot.all_urls():
                scheme = urlsplit(url).scheme.lower()
                if scheme not in ALLOWED_SCHEMES and scheme not in extra_schemes:
                    raise PreannotateError(
                        ErrorCode.URL_NOT_ALLOWED,
                        f"item {item.name!r} slot {slot.name!r}: scheme {scheme or '(none)'!r} is not allowed; "
                        "use https, http, s3 or file",
                    )


def validation_problem(exc: ValidationError) -> PreannotateError:
    """A pydantic error as ``INVALID_ARGUMENT``, naming up to five fields."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()[:5]
    )
    return PreannotateError(ErrorCode.INVALID_ARGUMENT, problems)


def job_params(job: JobCreate, loaded: ModelEntry, settings: Settings) -> dict[str, Any]:
    """The stored request every item of the job shares (model pinned to its version)."""
    return {
        "model": loaded.spec,
        "model_version": loaded.info.version,
        "class_names": list(loaded.info.class_names),
        "fps": settings.fps if job.fps is None else job.fps,
        "sampling": (job.sampling or settings.sampling).value,
        "threshold": settings.threshold if job.threshold is None else job.threshold,
        "classes": job.classes,
        "outputs": list(job.outputs),
        "destinations": [d.model_dump(exclude_none=True) for d in job.destinations],
    }


def idempotency_key_idem(key: str) -> str:
    """The store key for a client's ``Idempotency-Key`` header."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()


def content_idem(params: dict[str, Any], items: Sequence[dict[str, Any]], *, prefix: str = "body") -> str:
    """The store key for "these items with these parameters (model version included)"."""
    canonical = json.dumps({"params": params, "items": list(items)}, sort_keys=True, separators=(",", ":"))
    return f"{prefix}:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PreparedJob:
    """A checked job, ready to store: the shared request and the items as JSON."""

    params: dict[str, Any]
    items: list[dict[str, Any]]


def prepare_job(
    job: JobCreate, *, settings: Settings, models: ModelLookup, extra_schemes: Collection[str] = ()
) -> PreparedJob:
    """Every check that needs no store, in the order ``POST /v1/jobs`` has always run them.

    Args:
        job: The parsed request.
        settings: Limits and defaults.
        models: The loaded models (the job's model must be one).
        extra_schemes: URL schemes allowed besides ``ALLOWED_SCHEMES`` (internal sources only).

    Raises:
        PreannotateError: ``TOO_MANY_ITEMS``, ``INVALID_ARGUMENT``, ``URL_NOT_ALLOWED`` (422),
            ``MODEL_NOT_FOUND`` (404), ``BACKEND_NOT_CONFIGURED`` (422).
    """
    if len(job.items) > settings.max_items_per_job:
        raise PreannotateError(
            ErrorCode.TOO_MANY_ITEMS, f"{len(job.items)} items in one job; the limit is {settings.max_items_per_job}"
        )
    check_urls(job.items, settings.max_slots_per_item, extra_schemes=extra_schemes)
    loaded = models.get(job.model)
    class_filter(loaded.info.class_names, job.classes)  # unknown class names are a 422 now, not a failed job
    for destination in job.destinations:
        check_destination(settings, destination, job.items)
    return PreparedJob(job_params(job, loaded, settings), [item.model_dump(exclude_none=True) for item in job.items])


def enqueue(
    prepared: PreparedJob, *, settings: Settings, store: JobStore, tenant: str, idem_key: str
) -> tuple[JobRecord, bool]:
    """Store the job unless ``idem_key`` was seen for this tenant: ``(job, created)``.

    Raises:
        PreannotateError: ``QUEUE_FULL`` (429) when the queue would pass ``max_queue_depth``.
    """
    if store.depth() + len(prepared.items) > settings.max_queue_depth:
        raise PreannotateError(
            ErrorCode.QUEUE_FULL,
            f"the queue holds {settings.max_queue_depth} items; retry later",
            retry_after_s=QUEUE_FULL_RETRY_S,
        )
    return store.create_job(tenant=tenant, idem_key=idem_key, request=prepared.params, items=prepared.items)


def create_job_from(
    job: JobCreate,
    *,
    settings: Settings,
    store: JobStore,
    models: ModelLookup,
    tenant: str,
    idem_key: str | None = None,
    extra_schemes: Collection[str] = (),
) -> tuple[JobRecord, bool]:
    """``prepare_job`` then ``enqueue``; ``idem_key`` None = the content (``content_idem``).

    Raises:
        PreannotateError: as ``prepare_job`` and ``enqueue``.
    """
    prepared = prepare_job(job, settings=settings, models=models, extra_schemes=extra_schemes)
    key = idem_key or content_idem(prepared.params, prepared.items)
    return enqueue(prepared, settings=settings, store=store, tenant=tenant, idem_key=key)
