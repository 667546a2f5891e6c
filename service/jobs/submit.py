"""Turning a validated :class:`JobCreate` into a queued job: the one path ``POST /v1/jobs``, the webhooks and
the Label Studio sweep share, so every source gets the same checks, parameters and dedupe.

Checks run before anything is stored: URL schemes, slot counts, the model, class names, destinations. The
stored request pins the model version, so "the same items for the same model version" is the same job. In
distributed mode a model no worker has published yet is pinned (and its class names checked) by the first
worker that runs the job (``service.jobs.worker``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, Protocol, TypedDict
from urllib.parse import urlsplit

from pydantic import JsonValue, ValidationError

from models.prompts import PromptSet
from service.backends.registry import check_destination
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import local_path
from service.pipeline.run import check_class_names
from service.queue.store import JobRecord, JobStatus, JobStore
from service.remote_models import JobModel, JobSegmenter, prompts_refused_message, prompts_required_message
from service.spec.job import JobSpec, PinnedTracks
from service.spec.requests import ItemIn, JobCreate, check_prompt_classes, prompt_set
from service.spec.thresholds import ThresholdsFile

ALLOWED_SCHEMES = frozenset({"http", "https", "s3", "file"})
"""What a client may name. Internal sources may add schemes (``label-studio+https`` ...): see
``service.backends.media``."""
QUEUE_FULL_RETRY_S = 30
"""``Retry-After`` of a 429 while the queue's drain rate is unknown."""
RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S = 1, 60
CLIENT_KEY_PREFIX = "key:"
"""How ``idempotency_key_idem`` marks a client's key: content and webhook keys use other prefixes."""
FINGERPRINT = "content_sha256"
"""The stored request's field holding what a client-keyed job was created from (``content_fingerprint``;
``JobSpec.content_sha256``): never part of a dedupe key."""
SERVER_PINNED = frozenset({"model_version", "class_names", "segmenter_version", "model_makes_masks"})
"""Pinned from the model, not sent by the client, and left out of every dedupe key: unknown (None) until a worker
publishes the model (distributed cold start), so the same request before and after must make the same key. A
retry across a model upgrade is still the same request to a client key; content and delivery keys tell versions
apart when a key is reused (``same_model_version``: model and segmenter versions)."""
ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
"""A job in one of these states is returned for a repeat however old it is: retention counts for finished jobs."""
UNSUCCESSFUL = frozenset({JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.PARTIALLY_FAILED})
"""A client re-posting a job in one of these states wants it run again, not the old outcome back."""


class ModelLookup(Protocol):
    """``ModelRegistry.for_job`` (or a distributed-mode catalog's): the default for None, else MODEL_NOT_FOUND."""

    def for_job(self, name: str | None) -> JobModel: ...

    def segmenter_for_job(self, name: str | None) -> JobSegmenter | None: ...


def check_urls(items: Sequence[ItemIn], max_slots: int, *, extra_schemes: Collection[str] = ()) -> None:
    """Cheap checks up front; the full SSRF check runs again when the worker fetches (DNS can change).

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` for too many slots, ``URL_NOT_ALLOWED`` for a scheme, a malformed
            URL or one with credentials.
    """
    for item in items:
        if len(item.slots) > max_slots:
            raise PreannotateError(
                ErrorCode.INVALID_ARGUMENT, f"item {item.name!r} has {len(item.slots)} slots; the limit is {max_slots}"
            )
        for slot in item.slots:
            where = f"item {item.name!r} slot {slot.name!r}"
            for url in slot.all_urls():
                try:
                    parts = urlsplit(url)
                except ValueError:  # e.g. an unclosed '[' in the host
                    raise PreannotateError(ErrorCode.URL_NOT_ALLOWED, f"{where}: malformed URL") from None
                scheme = parts.scheme.lower()
                if scheme not in ALLOWED_SCHEMES and scheme not in extra_schemes:
                    raise PreannotateError(
                        ErrorCode.URL_NOT_ALLOWED,
                        f"{where}: scheme {scheme or '(none)'!r} is not allowed; use https, http, s3 or file",
                    )
                # The fetcher refuses userinfo anyway; refused here, the secret is never stored with the job
                # (nor echoed: the message leaves the URL out).
                if "@" in parts.netloc:
                    raise PreannotateError(
                        ErrorCode.URL_NOT_ALLOWED,
                        f"{where}: credentials in URLs are not allowed; "
                        "use a presigned URL, or an s3:// URL the service's own credentials can read",
                    )


def check_unique_names(items: Sequence[ItemIn]) -> None:
    """Item names key every output (COCO ``file_name``, Darwin items, pushes): two items of one job may not
    share one.

    Raises:
        PreannotateError: ``DUPLICATE_ITEM_NAME`` naming the first repeated name and its positions.
    """
    positions: dict[str, list[int]] = collections.defaultdict(list)
    for position, item in enumerate(items):
        positions[item.name].append(position)
    repeated = [(name, where) for name, where in positions.items() if len(where) > 1]
    if repeated:
        name, where = repeated[0]
        raise PreannotateError(
            ErrorCode.DUPLICATE_ITEM_NAME,
            f"item names must be unique within a job: {name!r} is the name of items {where} "
            f"({len(repeated)} name(s) repeated); rename them (an Encord registration entry: set its 'title')",
        )


def queue_full_retry_after_s(excess: int, items_per_s: float | None) -> int:
    """A 429's ``Retry-After``: how long until ``excess`` items have drained at ``items_per_s``
    (reliability.md §4: ``ceil(lag / throughput)``), within [1, 60] s; ``QUEUE_FULL_RETRY_S`` when the rate is
    unknown. A rate of 0 (nothing finished lately) is the longest wait."""
    if items_per_s is None:
        return QUEUE_FULL_RETRY_S
    if items_per_s <= 0:
        return RETRY_AFTER_MAX_S
    return min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, math.ceil(excess / items_per_s)))


class DrainRate:
    """Items per second the workers settle, from readings of ``JobStore.settled_items`` (a counter).

    Args:
        window_s: Readings older than this are forgotten: the rate is a recent one.
        min_span_s: A rate needs readings at least this far apart; until then it is unknown (None).
        clock: Monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self, *, window_s: float = 300.0, min_span_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s, self._min_span_s, self._clock = window_s, min_span_s, clock
        self._readings: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def observe(self, settled: int) -> float | None:
        """Record a reading; returns the rate since the oldest reading in the window, or None."""
        now = self._clock()
        with self._lock:
            readings = self._readings
            if readings and settled < readings[-1][1]:  # the counter started over (a flushed Redis)
                readings.clear()
            while readings and now - readings[0][0] > self._window_s:
                readings.popleft()
            if not readings or now - readings[-1][0] >= 1.0:  # at most one kept per second: a 429 storm stays small
                readings.append((now, settled))
            since, first = readings[0]
        span = now - since
        return (settled - first) / span if span >= self._min_span_s else None


_DRAIN_RATES: weakref.WeakKeyDictionary[JobStore, DrainRate] = weakref.WeakKeyDictionary()
_DRAIN_RATES_LOCK = threading.Lock()


def _drain_rate(store: JobStore) -> DrainRate:
    with _DRAIN_RATES_LOCK:
        rate = _DRAIN_RATES.get(store)
        if rate is None:
            rate = _DRAIN_RATES[store] = DrainRate()
        return rate


def validation_problem(exc: ValidationError) -> PreannotateError:
    """A pydantic error as ``INVALID_ARGUMENT``, naming up to five fields."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()[:5]
    )
    return PreannotateError(ErrorCode.INVALID_ARGUMENT, problems)


def model_for_prompts(model: JobModel, prompts: PromptSet | None) -> JobModel:
    """The model a job with ``prompts`` (None: none) is pinned to: an open-vocabulary model's view for them
    (``JobModel.prompted``: its version and the prompts' names, so dedupe, ``classes``, results and pushes follow
    the prompts), else ``model`` itself. Where the prompts come from is settled before this: the one check.

    A model no worker has published yet (distributed cold start: no version) is not known to take prompts or not;
    the first worker to run the job checks (``ModelRegistry.for_run``), reads a destination project's prompts for
    a job without any, and pins its view.

    Raises:
        PreannotateError: INVALID_PROMPTS (422): prompts for a model with classes of its own, or none for an
            open-vocabulary model.
    """
    if model.version is None:
        return model
    if prompts is None:
        if model.open_vocabulary:
            raise PreannotateError(ErrorCode.INVALID_PROMPTS, prompts_required_message(model.spec))
        return model
    if not model.open_vocabulary:
        raise PreannotateError(ErrorCode.INVALID_PROMPTS, prompts_refused_message(model.spec, model.class_names or ()))
    return model.prompted(prompts)


def job_params(
    job: JobCreate,
    model: JobModel,
    settings: Settings,
    segmenter: JobSegmenter | None = None,
    prompts: PromptSet | None = None,
) -> JobSpec:
    """What every item of the job shares, the settings' defaults filled in (model pinned to its version, or
    None until a worker pins it: ``JobModel``; the segmenter likewise; ``prompts``: an open-vocabulary model's,
    ``model`` then being its view: ``model_for_prompts``)."""
    return JobSpec(
        model=model.spec,
        model_version=model.version,
        class_names=model.class_names,
        model_makes_masks=model.makes_masks,
        fps=settings.fps if job.fps is None else job.fps,
        sampling=job.sampling or settings.sampling,
        threshold=settings.threshold if job.threshold is None else job.threshold,
        classes=None if job.classes is None else tuple(job.classes),
        class_thresholds=job.thresholds,
        outputs=tuple(job.outputs),
        destinations=tuple(job.destinations),
        tracks=PinnedTracks.from_request(job.tracks, settings),
        segmenter=None if segmenter is None else segmenter.spec,
        segmenter_version=None if segmenter is None else segmenter.version,
        prompts=prompts,
    )


def idempotency_key_idem(key: str) -> str:
    """The store key for a client's ``Idempotency-Key`` header."""
    return CLIENT_KEY_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def key_params(spec: JobSpec) -> dict[str, JsonValue]:
    """``spec``'s stored form as every dedupe key hashes it: without ``SERVER_PINNED`` and ``FINGERPRINT``."""
    return {k: v for k, v in spec.to_stored().items() if k not in SERVER_PINNED and k != FINGERPRINT}


def same_model_version(job: JobRecord, spec: JobSpec) -> bool:
    """Whether ``job``, found under a content or delivery key, was made for the model version and segmenter
    version ``spec`` names: each compared only when both are pinned (None while unpinned), since the key no longer
    tells them apart (``SERVER_PINNED``)."""
    return _same_pin(job.spec.model_version, spec.model_version) and _same_pin(
        job.spec.segmenter_version, spec.segmenter_version
    )


def _same_pin(stored: str | None, current: str | None) -> bool:
    return stored is None or current is None or stored == current


def items_to_json(items: Sequence[ItemIn]) -> list[dict[str, JsonValue]]:
    """Items as dedupe keys hash them: the fields they were sent with (the stores keep the same form)."""
    return [item.model_dump(exclude_none=True) for item in items]


class _KeyContent(TypedDict):
    """What a content key hashes."""

    params: dict[str, JsonValue]
    items: list[dict[str, JsonValue]]
    files: NotRequired[dict[str, str]]


def _content_sha256(spec: JobSpec, items: Sequence[ItemIn], versions: Mapping[str, str] | None = None) -> str:
    content = _KeyContent(params=key_params(spec), items=items_to_json(items))
    if versions:  # only when there are any: keys of jobs without file:// URLs stay what they always were
        content["files"] = dict(versions)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def content_idem(
    spec: JobSpec,
    items: Sequence[ItemIn],
    *,
    prefix: str = "body",
    versions: Mapping[str, str] | None = None,
) -> str:
    """The store key for "these items with these parameters" (the model's version left out: ``SERVER_PINNED``),
    and, where given, these versions of the files behind ``file://`` URLs (``file_versions``): a file changed
    since is another job."""
    return f"{prefix}:" + _content_sha256(spec, items, versions)


def file_versions(items: Sequence[ItemIn], local_roots: Sequence[Path]) -> dict[str, str]:
    """``{url: "size:mtime_ns"}`` for each ``file://`` URL this process can stat under ``local_roots``: one stat,
    no read. Others (not there, outside the roots: the worker reports those) are left out, and so are
    ``http(s)``/``s3`` URLs: telling their versions would cost a request at submission."""
    roots = tuple(root.resolve() for root in local_roots)
    versions: dict[str, str] = {}
    for url in (url for item in items for slot in item.slots for url in slot.all_urls()):
        if not roots or not url.lower().startswith("file:"):
            continue
        try:
            info = local_path(url, roots).stat()
        except (PreannotateError, OSError):
            continue
        versions[url] = f"{info.st_size}:{info.st_mtime_ns}"
    return versions


def content_fingerprint(spec: JobSpec, items: Sequence[ItemIn]) -> str:
    """What a client-keyed job is stored with, to tell a retry from a reused key: as ``content_idem``, without
    the ``file://`` versions."""
    return _content_sha256(spec, items)


@dataclass(frozen=True, slots=True)
class PreparedJob:
    """A checked job, ready to store: what its items share, and the items; ``file_versions`` are the
    ``file://`` files' versions at submission, part of the content key only (``content_idem``)."""

    spec: JobSpec
    items: list[ItemIn]
    file_versions: dict[str, str] = field(default_factory=dict)
    project_prompts: bool = False
    """``spec.prompts`` were read from the destination project, not sent (``project_prompts_for``): left out of
    the keys and the fingerprint as the pinned model is (``SERVER_PINNED``), since they are unknown at a cold start
    (the first worker reads them) and someone may edit the project's labels between a request and its retry. A
    view's version names its prompts, so ``same_model_version`` still tells a re-prompted run apart."""

    def content_key(self) -> str:
        """``content_idem`` of this job: the same for the same request and the same files."""
        return content_idem(self._keyed_spec(), self.items, versions=self.file_versions)

    def fingerprint(self) -> str:
        """``content_fingerprint`` of this job: what a client key's retry must match."""
        return content_fingerprint(self._keyed_spec(), self.items)

    def _keyed_spec(self) -> JobSpec:
        return self.spec.model_copy(update={"prompts": None}) if self.project_prompts else self.spec


def prepare_job(
    job: JobCreate, *, settings: Settings, models: ModelLookup, extra_schemes: Collection[str] = ()
) -> PreparedJob:
    """Every check that needs no store, in the order ``POST /v1/jobs`` has always run them.

    Args:
        job: The parsed request.
        settings: Limits and defaults.
        models: The loaded or published models (the job's model must be one, or, distributed, a model spec).
        extra_schemes: URL schemes allowed besides ``ALLOWED_SCHEMES`` (internal sources only).

    Raises:
        PreannotateError: ``TOO_MANY_ITEMS``, ``DUPLICATE_ITEM_NAME``, ``INVALID_ARGUMENT``, ``URL_NOT_ALLOWED`` (422),
            ``MODEL_NOT_FOUND`` (404), ``BACKEND_NOT_CONFIGURED`` (422); for an open-vocabulary model prompted from
            its destination, ``INVALID_PROMPTS`` and the backend errors (``project_prompts_for``).
    """
    if len(job.items) > settings.max_items_per_job:
        raise PreannotateError(
            ErrorCode.TOO_MANY_ITEMS, f"{len(job.items)} items in one job; the limit is {settings.max_items_per_job}"
        )
    check_unique_names(job.items)
    check_urls(job.items, settings.max_slots_per_item, extra_schemes=extra_schemes)
    prompts = prompt_set(job.prompts)
    base = models.for_job(job.model)
    segmenter = models.segmenter_for_job(job.segmenter)
    from_project = prompts is None
    if from_project:
        prompts = project_prompts_for(job, base, settings, masks=segmenter is not None or base.makes_masks)
    if prompts is not None:  # the body's or the project's
        check_prompt_classes(prompts, settings.max_prompt_classes)
    model = model_for_prompts(base, prompts)
    # Unknown class names are a 422 now; unpublished: the prompts' names, else the worker checks them.
    names = model.class_names
    if names is None and prompts is not None:
        names = prompts.class_names
    if names is not None:
        check_class_names(names, classes=job.classes, class_thresholds=job.thresholds)
    for destination in job.destinations:
        check_destination(settings, destination, job.items)
    return PreparedJob(
        job_params(job, model, settings, segmenter, prompts),
        list(job.items),
        file_versions(job.items, settings.local_roots),
        project_prompts=from_project and prompts is not None,
    )


def project_prompts_for(job: JobCreate, model: JobModel, settings: Settings, *, masks: bool) -> PromptSet | None:
    """An open-vocabulary model's job with a destination and no prompts of its own takes the first destination
    project's classes as prompts (``project_prompts``: the Label Studio labels that receive predictions, the V7
    dataset's classes, the Encord ontology's objects); None for every other job. A model no worker has published
    yet is not known to take prompts: the first worker that runs the job reads the project and pins its prompts
    (``WorkerPool._with_project_prompts``).

    Raises:
        PreannotateError: as ``project_prompts`` (the backend's error codes, ``INVALID_PROMPTS``).
    """
    if not model.open_vocabulary or not job.destinations:
        return None
    from service.backends.project_prompts import project_prompts  # vendor clients load on use, as in the registry

    return project_prompts(job.destinations, settings, masks=masks)


def _check_same_content(job: JobRecord, fingerprint: str | None) -> None:
    """A client key names one request: the same key with another body is refused, not answered with the old job.
    Jobs stored without a fingerprint (before it existed) match anything."""
    stored = job.spec.content_sha256
    if fingerprint is not None and stored is not None and stored != fingerprint:
        raise PreannotateError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            f"this Idempotency-Key was already used for job {job.id} with a different body; "
            "resend the original body to retry that job, or use a new key for a new job",
        )


def _reused(
    job: JobRecord, fingerprint: str | None, *, retention_s: float, renew_unsuccessful: bool, now: float
) -> bool:
    """Whether a repeated submission gets ``job`` back: always while it is queued or running (a second job for
    the same items would run them twice), else only inside the dedupe window, and (``renew_unsuccessful``) never
    a cancelled or failed job. While the key is live, a client key with another body is still refused."""
    if job.status not in ACTIVE and now - job.created_at >= retention_s:
        return False  # a finished job's key is forgotten: whatever the body, this is a new request
    _check_same_content(job, fingerprint)
    return not (renew_unsuccessful and job.status in UNSUCCESSFUL)


def enqueue(
    prepared: PreparedJob,
    *,
    settings: Settings,
    store: JobStore,
    tenant: str,
    idem_key: str,
    renew_unsuccessful: bool = False,
    clock: Callable[[], float] = time.time,
) -> tuple[JobRecord, bool]:
    """Store the job unless ``idem_key`` names a job of this tenant still queued or running, or finished and
    younger than ``settings.idempotency_retention_s``: ``(job, created)``.

    Args:
        renew_unsuccessful: A job under ``idem_key`` that was cancelled, failed or partially failed is not
            returned: a new one is made (client submissions). Off for webhooks and the Label Studio sweep,
            which would otherwise resubmit a failing file every round.
        clock: Epoch seconds, compared with the job's ``created_at``.

    Raises:
        PreannotateError: ``IDEMPOTENCY_KEY_REUSED`` (422) for a client key seen with another body;
            ``QUEUE_FULL`` (429) when a new job would pass ``max_queue_depth``.
    """
    # Only a client's key can come back with another body: content and webhook keys are derived from the content.
    # The fingerprint stays out of every key (``key_params``), so the keys derived from the spec do not change.
    fingerprint = prepared.fingerprint() if idem_key.startswith(CLIENT_KEY_PREFIX) else None
    existing = store.find_job(tenant=tenant, idem_key=idem_key)
    if existing is not None:
        retention_s = settings.idempotency_retention_s
        # A content or delivery key hides the pinned versions: another is another job (a client key: a retry).
        same_model = fingerprint is not None or same_model_version(existing, prepared.spec)
        if same_model and _reused(
            existing, fingerprint, retention_s=retention_s, renew_unsuccessful=renew_unsuccessful, now=clock()
        ):
            return existing, False  # however full the queue is now
        # Compare-and-delete: if a concurrent request replaced the job first, create_job below finds its job.
        store.forget_idem_key(tenant=tenant, idem_key=idem_key, job_id=existing.id)
    excess = store.depth() + len(prepared.items) - settings.max_queue_depth
    if excess > 0:
        # Read only when refusing: a full queue sees 429s often enough for a rate, and admissions pay nothing.
        items_per_s = _drain_rate(store).observe(store.settled_items())
        raise PreannotateError(
            ErrorCode.QUEUE_FULL,
            f"the queue holds {settings.max_queue_depth} items; retry later",
            retry_after_s=queue_full_retry_after_s(excess, items_per_s),
        )
    spec = with_saved_thresholds(prepared.spec, store)
    spec = spec if fingerprint is None else spec.model_copy(update={"content_sha256": fingerprint})
    record, created = store.create_job(tenant=tenant, idem_key=idem_key, spec=spec, items=prepared.items)
    if not created:  # a concurrent request with the same key got there first
        _check_same_content(record, fingerprint)
    return record, created


def with_saved_thresholds(spec: JobSpec, store: JobStore) -> JobSpec:
    """``spec`` with the thresholds saved for its pinned model version, when its body gave none: pinned like the
    version (after every key was made, so keys stay the request's; ``SERVER_PINNED``). An unpinned job (distributed
    cold start) gets them from the worker that pins it; a job whose body gave any (even ``{}``) keeps its own."""
    if spec.class_thresholds is not None or spec.model_version is None:
        return spec
    saved = store.thresholds_for(spec.model_version)
    if saved is None:
        return spec
    return spec.model_copy(update={"class_thresholds": saved_for(saved, spec.class_names)})


def saved_for(saved: ThresholdsFile, class_names: Sequence[str] | None) -> dict[str, float]:
    """A saved calibration's thresholds for a model with ``class_names``: a class the model lacks is left out
    (a hand-saved file must not fail every item of its version), as for ``ModelCatalog``'s listing."""
    thresholds = saved.class_thresholds()
    if class_names is None:
        return thresholds
    return {name: t for name, t in thresholds.items() if name in class_names}


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
    key = idem_key or prepared.content_key()
    return enqueue(prepared, settings=settings, store=store, tenant=tenant, idem_key=key, renew_unsuccessful=True)
