"""The job store contract: jobs of items, items leased to workers. SQLite now, Redis Streams later.

Delivery is at least once: a worker leases items, heartbeats while it works, and completes or fails
each one. A lease that expires (the worker crashed) puts the item back in the queue; an item that
has been attempted ``max_attempts`` times fails for good. Every lookup is scoped to a tenant, so
one API token never sees another's jobs.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from models.prompts import PromptSet
from service.errors import ErrorCode
from service.pipeline.options import SamplingMode
from service.spec.job import JobSpec, ModelPin
from service.spec.requests import ItemIn
from service.spec.thresholds import ThresholdsFile

log = logging.getLogger(__name__)

INVALID_STORED_JOB = ErrorCode.INVALID_STORED_JOB.code


class JobStatus(enum.StrEnum):
    QUEUED = "queued"  # no item started yet
    RUNNING = "running"  # some item started, some not finished
    SUCCEEDED = "succeeded"  # every item succeeded
    FAILED = "failed"  # every item failed
    PARTIALLY_FAILED = "partially_failed"  # finished, some items failed
    CANCELLED = "cancelled"


class ItemState(enum.StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ItemError:
    """Why an item failed: a stable error code and a message naming the file."""

    item: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as the API reports it; ``status`` is derived from its items' states."""

    id: str
    tenant: str
    spec: JobSpec
    status: JobStatus
    created_at: float
    updated_at: float
    items_total: int
    items_succeeded: int
    items_failed: int
    frames_planned: int
    frames_done: int
    errors: tuple[ItemError, ...]


@dataclass(frozen=True, slots=True)
class Lease:
    """One item handed to one worker until ``lease_until`` (epoch seconds) unless heartbeated."""

    item_id: int
    job_id: str
    position: int
    item: ItemIn
    spec: JobSpec
    attempt: int


@dataclass(frozen=True, slots=True)
class ItemResult:
    """An item's outcome, in job order; ``result`` is what the worker stored on success."""

    position: int
    name: str
    state: ItemState
    result: dict[str, Any] | None
    error: ItemError | None


CURSOR_LIMIT = 2**63
DEFAULT_MAX_SAVED_THRESHOLDS = 256
"""Model versions whose calibrated thresholds a store keeps (``PREANNOTATE_MAX_SAVED_THRESHOLDS``); saving one more
forgets the least recently saved."""
"""Cursors are store positions below this (SQLite's largest integer is 2**63 - 1)."""


def parse_cursor(text: str) -> int:
    """A page cursor's position: a decimal integer in ``[0, 2**63)``, the only form the stores hand out.

    Raises:
        ValueError: Anything else (a forged cursor must not reach a store: SQLite overflows past 64 bits).
    """
    if not (text.isascii() and text.isdigit()) or int(text) >= CURSOR_LIMIT:
        raise ValueError(f"cursor position {text[:40]!r} is not an integer in [0, 2**63)")
    return int(text)


def check_items(items: Sequence[ItemIn]) -> None:
    """What every store refuses before writing anything: an empty job."""
    if not items:
        raise ValueError("a job needs at least one item")


def spec_to_json(spec: JobSpec) -> str:
    """A job's spec as its stored JSON column (``JobSpec.to_stored``)."""
    return _dumps(spec.to_stored())


def item_to_json(item: ItemIn) -> str:
    """An item as its stored JSON column: the fields it was sent with (dedupe keys hash the same form)."""
    return _dumps(item.model_dump(exclude_none=True))


def spec_from_json(text: str | bytes) -> JobSpec:
    """The spec a stored JSON column holds (the one place a store reads it)."""
    return JobSpec.from_stored(json.loads(text))


def item_from_json(text: str | bytes) -> ItemIn:
    return ItemIn.model_validate_json(text)


def readable_item(text: str | bytes) -> ItemIn | None:
    """``item_from_json``, or None for an item this release cannot parse (read side: nothing to show)."""
    try:
        return item_from_json(text)
    except ValidationError:
        return None


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- stored jobs this release cannot parse ------------------------------------------------------------
# A job written by a newer release (read during a rollback) or edited by hand may no longer validate. Such a
# job must cost only itself: leasing fails its items for good (INVALID_STORED_JOB) and goes on with the other
# jobs, and reads report it as those items will end, instead of raising.


def parse_problem(exc: Exception) -> str:
    """One line on why stored JSON did not parse: a validation error's first few fields, else the error."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:3])
    return " ".join(str(exc).split())


def unreadable_job_message(job_id: str, why: str) -> str:
    return f"job {job_id}: its stored request cannot be read by this release ({why}); resubmit the job"


def unreadable_item_message(job_id: str, why: str) -> str:
    return f"job {job_id}: this item's stored form cannot be read by this release ({why}); resubmit it"


def stand_in_spec(text: str | bytes) -> JobSpec:
    """What a report shows for a stored spec that does not parse: its model, version and content fingerprint
    where those still read as strings (``/v1/jobs`` shows them, dedupe compares them), defaults otherwise."""
    try:
        stored = json.loads(text)
    except ValueError:
        stored = None
    fields = stored if isinstance(stored, dict) else {}

    def string(key: str) -> str | None:
        value = fields.get(key)
        return value if isinstance(value, str) else None

    return JobSpec(
        model=string("model") or "",
        model_version=string("model_version"),
        content_sha256=string("content_sha256"),
        fps=0.0,
        sampling=SamplingMode.EXACT,
        threshold=0.0,
    )


def read_spec(text: str | bytes, job_id: str) -> tuple[JobSpec, str | None]:
    """A stored spec and None; for one this release cannot parse, ``stand_in_spec`` and the message its items
    fail with (``INVALID_STORED_JOB``)."""
    try:
        return spec_from_json(text), None
    except (ValueError, TypeError) as exc:  # ValidationError and JSONDecodeError are ValueErrors
        return stand_in_spec(text), unreadable_job_message(job_id, parse_problem(exc))


@dataclass(frozen=True, slots=True)
class StoredLease:
    """A leased item as a store read it, its JSON not parsed yet (``lease_readable``)."""

    item_id: int
    job_id: str
    position: int
    item: str | bytes
    spec: str | bytes
    attempt: int


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A leased item this release cannot parse, to be failed for good with ``INVALID_STORED_JOB``. With
    ``whole_job`` the job's spec is at fault: every item of the job still queued fails with it."""

    item_id: int
    job_id: str
    message: str
    whole_job: bool


def parse_leases(rows: Sequence[StoredLease]) -> tuple[list[Lease], list[Unreadable]]:
    """The rows as leases (each job's spec parsed once), and the rows that do not parse."""
    specs: dict[str, tuple[JobSpec, str | None]] = {}
    leases: list[Lease] = []
    unreadable: list[Unreadable] = []
    for row in rows:
        if row.job_id not in specs:
            specs[row.job_id] = read_spec(row.spec, row.job_id)
        spec, problem = specs[row.job_id]
        if problem is not None:
            unreadable.append(Unreadable(row.item_id, row.job_id, problem, whole_job=True))
            continue
        try:
            item = item_from_json(row.item)
        except ValueError as exc:
            message = unreadable_item_message(row.job_id, parse_problem(exc))
            unreadable.append(Unreadable(row.item_id, row.job_id, message, whole_job=False))
            continue
        leases.append(Lease(row.item_id, row.job_id, row.position, item, spec, row.attempt))
    return leases, unreadable


def lease_readable(
    lease_stored: Callable[[int], Sequence[StoredLease]],
    fail_unreadable: Callable[[Sequence[Unreadable]], None],
    max_items: int,
) -> list[Lease]:
    """Up to ``max_items`` leases this release can parse. ``lease_stored(n)`` leases up to ``n`` items, oldest job
    first; those that do not parse go to ``fail_unreadable`` and more are leased in their place. Each round
    fails at least one item for good, so the loop ends; a queue of readable jobs costs one round, as before."""
    leases: list[Lease] = []
    while len(leases) < max_items:
        got, bad = parse_leases(lease_stored(max_items - len(leases)))
        leases += got
        if not bad:
            break
        for job_id in dict.fromkeys(b.job_id for b in bad):
            log.warning("failing unreadable stored items: %s", next(b.message for b in bad if b.job_id == job_id))
        fail_unreadable(bad)
    return leases


def check_model_version(model_version: str) -> None:
    """Thresholds are saved under a model version a loaded model reports: never a blank one."""
    if not model_version.strip():
        raise ValueError("saved thresholds need the model version they were calibrated on")


def stored_thresholds(raw: str) -> ThresholdsFile | None:
    """A saved calibration as stored; one this release cannot parse counts as none (logged), never an error that
    would stop every job of its version."""
    try:
        return ThresholdsFile.model_validate_json(raw)
    except ValidationError as exc:
        log.warning("ignoring saved thresholds this release cannot read: %s", exc.errors()[0]["msg"])
        return None


class JobStore(Protocol):
    """What the API and the workers need from a job store."""

    def create_job(
        self, *, tenant: str, idem_key: str, spec: JobSpec, items: Sequence[ItemIn]
    ) -> tuple[JobRecord, bool]:
        """Store a job (``spec`` as ``JobSpec.to_stored``) and queue its items; ``(existing job, False)`` when
        ``idem_key`` was seen for this tenant."""
        ...

    def find_job(self, *, tenant: str, idem_key: str) -> JobRecord | None:
        """The job ``create_job`` stored under ``idem_key`` for this tenant, or None."""
        ...

    def forget_idem_key(self, *, tenant: str, idem_key: str, job_id: str) -> bool:
        """Stop ``idem_key`` naming ``job_id`` (a dedupe window that ran out, a job not to be reused), so the next
        ``create_job`` with it makes a new job; the old job stays readable by its id. A compare-and-delete: False,
        and nothing changed, when the key names another job by now (a concurrent request replaced it first)."""
        ...

    def get_job(self, *, tenant: str, job_id: str) -> JobRecord | None: ...

    def cancel_job(self, *, tenant: str, job_id: str) -> JobRecord | None:
        """Cancel queued and leased items (workers see it at their next heartbeat/progress call)."""
        ...

    def delete_job(self, *, tenant: str, job_id: str) -> bool | None:
        """Remove a finished job: its record, items, results (and result objects) and idempotency key, so the same
        request makes a new job. None for an unknown or foreign job; False, and nothing removed, while an item is
        still queued or leased (cancel it first)."""
        ...

    def expire_jobs(self, *, limit: int = 100) -> int:
        """Remove up to ``limit`` jobs created longer than the retention ago, with their results (result objects
        included); returns how many. Called periodically (``Housekeeper``)."""
        ...

    def list_jobs(self, *, tenant: str, limit: int, cursor: str | None = None) -> tuple[list[JobRecord], str | None]:
        """This tenant's jobs, newest first, at most ``limit``, after ``cursor`` (the next-page cursor an earlier
        call returned; None = the newest). Returns the page and the next page's cursor, None after the last.
        Raises ValueError for a cursor this store did not make."""
        ...

    def results(
        self,
        *,
        tenant: str,
        job_id: str,
        states: Collection[ItemState] | None = None,
        after: int = -1,
        limit: int | None = None,
        with_results: bool = True,
    ) -> list[ItemResult] | None:
        """Item outcomes in position order: those past position ``after``, in ``states`` (None = any), at most
        ``limit`` (None = all); only these items' results are read, and none without ``with_results`` (their
        ``result`` is None). None for an unknown or foreign job."""
        ...

    def item_spec(self, *, tenant: str, job_id: str, position: int) -> ItemIn | None:
        """The item at ``position`` as it was submitted (its slots' URLs, query strings included: what a worker
        fetched). None for an unknown or foreign job, a position it lacks, or an item this release cannot parse."""
        ...

    def lease(self, worker: str, *, max_items: int, lease_s: float) -> list[Lease]:
        """Requeue expired leases (or fail them after max attempts), then lease up to ``max_items``
        queued items whose retry time has come, oldest job first."""
        ...

    def heartbeat(self, worker: str, item_ids: Sequence[int], *, lease_s: float) -> list[int]:
        """Extend leases; returns the ids this worker still holds (lost or cancelled ones drop out)."""
        ...

    def progress(self, worker: str, item_id: int, *, frames_done: int, frames_planned: int) -> bool:
        """Record frame progress and extend nothing; False = stop (lease lost or job cancelled)."""
        ...

    def complete(self, worker: str, item_id: int, result: Mapping[str, object]) -> bool:
        """Store the result and mark the item succeeded; False if the lease was lost (result dropped)."""
        ...

    def fail(self, worker: str, item_id: int, *, code: str, message: str, retryable: bool, retry_in_s: float) -> None:
        """Retryable and attempts left: back to the queue after ``retry_in_s``; else failed for good."""
        ...

    def release(self, worker: str, item_ids: Sequence[int]) -> list[int]:
        """Hand held items back (a worker shutting down): queued again at once, the attempt uncounted.
        Returns the ids released; items this worker no longer holds are left alone."""
        ...

    def pin_model(
        self,
        job_id: str,
        *,
        version: str,
        class_names: Sequence[str],
        makes_masks: bool = False,
        class_thresholds: Mapping[str, float] | None = None,
    ) -> ModelPin | None:
        """Record in the job's spec the model version and classes a worker runs it with (and whether that model
        makes masks: ``JobSpec.model_makes_masks``, stored only when true), for a job submitted
        before any worker had published its model (distributed cold start). The first pin stands: a job pinned
        already is left alone, as is an unknown job. Returns the pin that stands (another worker's, when it
        won the race), None for an unknown job. ``class_thresholds`` (the version's saved calibration) are
        pinned with it, only where this pin happens and the job has none of its own (``JobSpec.class_thresholds``)."""
        ...

    def pin_prompts(self, job_id: str, prompts: PromptSet) -> PromptSet | None:
        """Record in the job's spec the prompts a worker read from its destination project (``project_prompts``),
        for a job of an open-vocabulary model submitted before any worker had published it (distributed cold
        start: the API could not tell it takes prompts). The first pin stands: a job with prompts, or with its
        model pinned, is left alone. Returns the prompts that stand (another worker's, when it won the race),
        None for an unknown job or one pinned without prompts."""
        ...

    def pin_segmenter(self, job_id: str, *, version: str) -> str | None:
        """Record in the job's spec the version of the segmenter a worker runs it with (``JobSpec.segmenter_version``),
        for a job submitted where the segmenter was not loaded (distributed API pods). The first pin stands, as for
        ``pin_model``: a job pinned already, or without a segmenter, is left alone. Returns the version that
        stands (None for a job without a segmenter), None for an unknown job."""
        ...

    def save_thresholds(self, model_version: str, file: ThresholdsFile) -> None:
        """Keep ``file`` as the calibration of ``model_version`` (replacing one saved before); the store keeps at
        most its ``max_saved_thresholds`` versions, forgetting the least recently saved. ValueError for a blank
        version."""
        ...

    def thresholds_for(self, model_version: str) -> ThresholdsFile | None:
        """The calibration saved for exactly ``model_version``; None when there is none (another version's never
        counts)."""
        ...

    def saved_thresholds(self) -> dict[str, ThresholdsFile]:
        """Every saved calibration by model version (at most ``max_saved_thresholds``)."""
        ...

    def depth(self) -> int:
        """Items queued or leased, all tenants (for 429s and autoscaling)."""
        ...

    def settled_items(self) -> int:
        """Items that left the queue for good (succeeded, or failed for good) so far: a counter for throughput
        estimates, where only the difference between two readings means anything. Redis counts across every
        process; SQLite counts through this store object (the embedded workers share it)."""
        ...

    def claim_delivery(self, key: str, owner: str, *, ttl_s: float) -> str:
        """Claim a webhook delivery id for ``ttl_s`` seconds: returns the claim's owner, ``owner`` unless another
        owner claimed ``key`` first and its claim has not expired (a replay). Kept in the store, so every API
        process sees the same claims, and a restart forgets none."""
        ...

    def close(self) -> None: ...
