"""The distributed job store: Redis Streams with one consumer group (reliability.md §1.2).

Items are delivered through the stream ``{prefix}:items`` and its group ``workers``: a lease is an
``XREADGROUP`` delivery, a crashed worker's items are moved to the next worker with ``XCLAIM`` (counting a
delivery), heartbeats reset the entry's idle time with ``XCLAIM ... JUSTID``, and an entry is ``XACK``ed in
the same script that stores the item's result or failure. Lease expiry follows each item's own
``lease_until`` on the store's clock (a ZSET), not the PEL's idle time, because the holder picks ``lease_s``
per call and tests drive time with a fake clock. Retryable failures wait in a delayed ZSET and re-enter the
stream when due; exhausted or non-retryable items go to the dead-letter stream ``{prefix}:dead``.

Keys (``P`` = prefix): ``P:job:<id>`` hash, ``P:item:<n>`` hash (a job's items are ids ``first..first+n-1``),
``P:result:<n>`` (the result, unless a ``ResultStore`` holds it: then the item's ``rkey`` names its object),
``P:idem:<sha256(tenant, key)>`` (``SET NX``), ``P:jobs:<tenant>`` (ZSET of job ids by
creation sequence ``P:seq:job``), ``P:delivery:<sha256(key)>`` (webhook
delivery ids, ``SET NX`` with a TTL), ``P:items`` stream, ``P:leases`` and ``P:delayed`` ZSETs, ``P:active``
set (depth), ``P:settled`` counter (throughput), ``P:dead`` stream, ``P:models``/``P:workers``/``P:worker:<id>``
(the model catalog), ``P:expiry`` (ZSET of job ids by the time their retention ends). Job keys expire
``retention_s`` after creation: Redis holds them in memory. ``expire_jobs`` removes what lives elsewhere (the
result objects) of jobs past that time, and what a fake clock left of them in Redis.

Any connection failure is raised as NOT_READY (503, retryable) at once: no client-side retries, so the API
answers 503 while Redis is down and the worker's loop decides how to back off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from models.prompts import PromptSet
from models.types import ModelInfo
from service.errors import ErrorCode, PreannotateError
from service.metrics import job_finished
from service.queue import redis_scripts as lua
from service.queue.results import ResultStore
from service.queue.sqlite_store import derive_status
from service.queue.store import (
    DEFAULT_MAX_SAVED_THRESHOLDS,
    INVALID_STORED_JOB,
    ItemError,
    ItemResult,
    ItemState,
    JobRecord,
    Lease,
    StoredLease,
    Unreadable,
    check_items,
    check_model_version,
    item_to_json,
    lease_readable,
    parse_cursor,
    read_spec,
    readable_item,
    spec_to_json,
    stored_thresholds,
)
from service.remote_models import PublishedModel
from service.spec.job import JobSpec, ModelPin
from service.spec.requests import ItemIn
from service.spec.thresholds import ThresholdsFile

log = logging.getLogger(__name__)

_Pinned = TypeVar("_Pinned")
"""What a pin leaves standing (a model pin, a segmenter version)."""

_SUMMARY = ("state", "attempts", "fd", "fp", "upd", "name", "code", "msg")
_RESULTS = ("pos", "name", "state", "code", "msg", "rkey")
_EXPIRY_RETRY_S = 300.0  # a job whose result objects could not be removed is tried again this much later
_SCAN_WINDOW = 64  # items a results() page reads per round trip at least (twice the page, doubling each round)
# Replies that mean "this Redis cannot serve writes right now", not a bug: failover, persistence errors.
_UNAVAILABLE_REPLIES = ("MISCONF", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN", "LOADING")


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _idem(tenant: str, idem_key: str) -> str:
    """The name under ``P:idem:`` that ``CREATE_JOB`` sets for this tenant's key."""
    return hashlib.sha256(f"{tenant}\0{idem_key}".encode()).hexdigest()


def _shown_failed(item: dict[str, str], unreadable: str) -> dict[str, str]:
    """An item of a job this release cannot read, as reads report it: failed if still open, as leasing will
    leave it (``INVALID_STORED_JOB``, for good)."""
    if item["state"] not in ("queued", "leased"):
        return item
    return {**item, "state": "failed", "code": INVALID_STORED_JOB, "msg": unreadable}


def _where(url: str) -> str:
    """The URL without credentials, for error messages."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


class RedisJobStore:
    """``JobStore`` on Redis ≥ 7.0 (or Valkey ≥ 7.2), shared by API pods and worker processes.

    Args:
        url: ``redis://[:password@]host:6379/0``, ``rediss://...`` or ``unix:///path/redis.sock?db=0``.
        max_attempts: Deliveries an item gets before it fails for good and is dead-lettered.
        clock: Epoch seconds (tests inject a fake one); None = Redis' own ``TIME``, one clock for every host.
        prefix: Key prefix; ``{pa}`` keeps every key in one cluster slot.
        retention_s: Jobs, items and results expire this long after the job was created (None = never).
        connect_timeout_s: How long a connection attempt may take before NOT_READY.
        timeout_s: How long one command may take before NOT_READY.
        results: Where item results go (one object each, its key in the item hash); None = in Redis, by value.
    """

    def __init__(
        self,
        url: str,
        *,
        max_attempts: int = 3,
        clock: Callable[[], float] | None = None,
        prefix: str = "pa",
        retention_s: float | None = 7 * 86400.0,
        connect_timeout_s: float = 2.0,
        timeout_s: float = 10.0,
        results: ResultStore | None = None,
        max_saved_thresholds: int = DEFAULT_MAX_SAVED_THRESHOLDS,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_saved_thresholds < 1:
            raise ValueError(f"max_saved_thresholds must be at least 1, got {max_saved_thresholds}")
        self._max_saved_thresholds = max_saved_thresholds
        self._max_attempts, self._clock, self._p, self._retention_s = max_attempts, clock, prefix, retention_s
        self._where = _where(url)
        self._results = results
        # No client retries: a command that fails surfaces at once (a retried script could lease twice).
        # Connections closed by a restarted server are replaced when the pool hands them out.
        self._r: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._stream = f"{prefix}:items"
        scripts = {
            "CREATE_JOB": lua.CREATE_JOB, "FORGET_IDEM": lua.FORGET_IDEM, "LEASE": lua.LEASE, "PROMOTE": lua.PROMOTE,
            "HEARTBEAT": lua.HEARTBEAT, "PROGRESS": lua.PROGRESS, "COMPLETE": lua.COMPLETE, "FAIL": lua.FAIL,
            "FAIL_JOB": lua.FAIL_JOB, "RELEASE": lua.RELEASE,
            "CANCEL": lua.CANCEL, "DELETE_JOB": lua.DELETE_JOB, "EXPIRE_DUE": lua.EXPIRE_DUE,
            "PUBLISH_WORKER": lua.PUBLISH_WORKER, "LIVE_WORKERS": lua.LIVE_WORKERS,
            "DROP_CONSUMERS": lua.DROP_CONSUMERS,
        }  # fmt: skip
        # register_script runs EVALSHA and falls back to EVAL after NOSCRIPT (a restarted server forgot it).
        self._s = {name: self._r.register_script(source) for name, source in scripts.items()}

    # --- plumbing ------------------------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._not_ready(exc) from None
        except redis.ResponseError as exc:
            # A full Redis (noeviction) refuses scripts before they write anything: retryable, like a failover.
            unavailable = isinstance(exc, (redis.ReadOnlyError, redis.exceptions.OutOfMemoryError))
            if unavailable or str(exc).split(" ", 1)[0] in _UNAVAILABLE_REPLIES:
                raise self._not_ready(exc) from None
            raise

    @property
    def where(self) -> str:
        """The server's URL without credentials."""
        return self._where

    def _not_ready(self, exc: Exception) -> PreannotateError:
        return PreannotateError(
            ErrorCode.NOT_READY,
            f"the job queue at {self._where} is unavailable ({type(exc).__name__}: {exc}); retry shortly",
            retry_after_s=2,
        )

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    def _run(self, script: str, *args: str | int | float) -> Any:
        with self._guard():
            return self._s[script](keys=[self._stream], args=[self._p, self._now(), *args])

    def _key(self, kind: str, ident: object) -> str:
        return f"{self._p}:{kind}:{ident}"

    def _hash(self, key: str) -> dict[str, str]:
        return cast(dict[str, str], self._r.hgetall(key))  # decode_responses=True: str, never bytes

    # --- jobs ----------------------------------------------------------------------------------------

    def create_job(
        self, *, tenant: str, idem_key: str, spec: JobSpec, items: Sequence[ItemIn]
    ) -> tuple[JobRecord, bool]:
        """Store a job and queue its items in order; ``(existing job, False)`` for a repeated ``idem_key``."""
        check_items(items)
        job_id = uuid.uuid4().hex
        idem = _idem(tenant, idem_key)
        pairs = [v for item in items for v in (item.name, item_to_json(item))]
        retention = "" if self._retention_s is None else repr(self._retention_s)
        owner = self._run("CREATE_JOB", idem, job_id, tenant, idem_key, spec_to_json(spec), retention, *pairs)
        record = self.get_job(tenant=tenant, job_id=owner)
        if record is None:  # the idempotency key outlived its job by a second: both expire together
            raise PreannotateError(ErrorCode.NOT_READY, f"job {owner} is expiring; retry", retry_after_s=1)
        return record, owner == job_id

    def find_job(self, *, tenant: str, idem_key: str) -> JobRecord | None:
        """The job stored under ``idem_key`` for this tenant, or None (unknown or expired)."""
        with self._guard():
            job_id = cast(str | None, self._r.get(self._key("idem", _idem(tenant, idem_key))))
        return None if job_id is None else self.get_job(tenant=tenant, job_id=job_id)

    def forget_idem_key(self, *, tenant: str, idem_key: str, job_id: str) -> bool:
        """Delete ``P:idem:...`` if it still names ``job_id`` (one script: compare and delete)."""
        return bool(self._run("FORGET_IDEM", _idem(tenant, idem_key), job_id))

    def get_job(self, *, tenant: str, job_id: str) -> JobRecord | None:
        """The job, or None if it is unknown, expired or belongs to another tenant."""
        with self._guard():
            job = self._hash(self._key("job", job_id))
            if not job or job.get("tenant") != tenant:
                return None
            first, n = int(job["first"]), int(job["n"])
            pipe = self._r.pipeline(transaction=True)  # MULTI: one snapshot of every item
            for item_id in range(first, first + n):
                pipe.hmget(self._key("item", item_id), _SUMMARY)
            rows = pipe.execute()
        return self._record(job_id, job, [dict(zip(_SUMMARY, row, strict=True)) for row in rows if row[0]])

    def _record(self, job_id: str, job: dict[str, str], items: list[dict[str, str]]) -> JobRecord:
        spec, unreadable = read_spec(job["request"], job_id)
        if unreadable is not None:
            items = [_shown_failed(r, unreadable) for r in items]
        states = [r["state"] for r in items]
        succeeded, failed = states.count("succeeded"), states.count("failed")
        return JobRecord(
            id=job_id,
            tenant=job["tenant"],
            spec=spec,
            status=derive_status(
                cancelled=job.get("cancelled") == "1",
                total=len(items),
                succeeded=succeeded,
                failed=failed,
                active=sum(s in ("queued", "leased") for s in states),
                started=sum(int(r["attempts"]) > 0 or r["state"] in ("succeeded", "failed") for r in items),
            ),
            created_at=float(job["created"]),
            updated_at=max([float(job["upd"]), *(float(r["upd"]) for r in items)]),
            items_total=len(items),
            items_succeeded=succeeded,
            items_failed=failed,
            frames_planned=sum(int(r["fp"]) for r in items),
            frames_done=sum(int(r["fd"]) for r in items),
            errors=tuple(ItemError(r["name"], r["code"], r["msg"]) for r in items if r["state"] == "failed"),
        )

    def cancel_job(self, *, tenant: str, job_id: str) -> JobRecord | None:
        """Cancel the queued and leased items; a job already finished stays as it is."""
        cancelled = self._run("CANCEL", tenant, job_id)
        if cancelled == -1:
            return None
        if cancelled > 0:  # it had unfinished items, so it was not final before
            job_finished("cancelled")
        return self.get_job(tenant=tenant, job_id=job_id)

    def delete_job(self, *, tenant: str, job_id: str) -> bool | None:
        """Remove a finished job's keys (one script), then its result objects; an object store that fails now
        leaves them to ``expire_jobs``, which finds the job due in ``P:expiry``."""
        removed = self._run("DELETE_JOB", tenant, job_id)
        if removed != 1:
            return None if removed == -1 else False
        self._remove_objects([job_id])
        return True

    def expire_jobs(self, *, limit: int = 100) -> int:
        """Remove up to ``limit`` jobs past their retention: what is left of them in Redis, then their result
        objects; a job leaves ``P:expiry`` once its objects are gone (an object store that is down is retried at
        the next call)."""
        due = [str(job) for job in self._run("EXPIRE_DUE", limit)]
        return len(self._remove_objects(due))

    def _remove_objects(self, job_ids: Sequence[str]) -> list[str]:
        """Remove these jobs' result objects and take them off ``P:expiry``; returns those done. A job whose objects
        cannot be removed now is due again ``_EXPIRY_RETRY_S`` later, behind the others."""
        done, later = [], []
        for job_id in job_ids:
            if self._results is not None:
                try:
                    self._results.delete_job(job_id)
                except PreannotateError as exc:
                    log.warning("job %s: its result objects stay until a later expiry sweep: %s", job_id, exc)
                    later.append(job_id)
                    continue
            done.append(job_id)
        with self._guard():
            if done:
                self._r.zrem(f"{self._p}:expiry", *done)
            if later:
                retry_at = self._time_s() + _EXPIRY_RETRY_S
                self._r.zadd(f"{self._p}:expiry", dict.fromkeys(later, retry_at), xx=True)
        return done

    def _forget_objects(self, job_id: str) -> None:
        """A job removed while a worker wrote its result: its objects go now, or at the next expiry sweep."""
        with self._guard():
            self._r.zadd(f"{self._p}:expiry", {job_id: self._time_s()}, nx=True)
        self._remove_objects([job_id])

    def _time_s(self) -> float:
        """Now on the store's clock (the scripts' NOW): Redis' own unless a clock was given."""
        if self._clock is not None:
            return float(self._clock())
        with self._guard():
            seconds, micros = self._r.time()
        return seconds + micros / 1e6

    def list_jobs(self, *, tenant: str, limit: int, cursor: str | None = None) -> tuple[list[JobRecord], str | None]:
        """This tenant's jobs, newest first (``P:jobs:<tenant>``); the cursor is the creation sequence number of
        the last job shown. Expired jobs met on the way are dropped from the index. Jobs created before the
        index existed are not listed (README, "Upgrading"). Each job is read as ``get_job`` reads it, item by item:
        the job hash counts only open items, not the succeeded, failed and frame counts a listing shows."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        index = self._key("jobs", tenant)
        top = "+inf" if cursor is None else f"({parse_cursor(cursor)}"  # ValueError for a malformed cursor
        found: list[tuple[JobRecord, int]] = []
        while len(found) <= limit:
            with self._guard():
                rows = cast(
                    list[tuple[str, float]],  # decode_responses=True: str members
                    self._r.zrevrangebyscore(index, top, "-inf", start=0, num=limit + 1 - len(found), withscores=True),
                )
            if not rows:
                break
            for job_id, seq in rows:
                record = self.get_job(tenant=tenant, job_id=job_id)
                if record is None:
                    with self._guard():
                        self._r.zrem(index, job_id)
                    continue
                found.append((record, int(seq)))
            top = f"({int(rows[-1][1])}"
        return [record for record, _ in found[:limit]], str(found[limit - 1][1]) if len(found) > limit else None

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
        """Item outcomes in position order (filtered as ``JobStore.results`` says), or None for an unknown or
        foreign job, or one removed while its results were read. Items are scanned in windows from ``after`` on
        until ``limit`` match, so a page costs about its own size, not the rest of the job; then only the chosen
        items' results are read (none without ``with_results``)."""
        wanted = None if states is None else {ItemState(state).value for state in states}
        with self._guard():
            job = self._hash(self._key("job", job_id))
        if not job or job.get("tenant") != tenant:
            return None
        first, n = int(job["first"]), int(job["n"])
        unreadable: str | bool | None = False  # not looked at yet: most jobs never need to
        chosen: list[tuple[int, dict[str, str]]] = []
        window = _SCAN_WINDOW if limit is None else max(2 * limit, _SCAN_WINDOW)
        start = first + max(after + 1, 0)
        while start < first + n and (limit is None or len(chosen) < limit):
            ids = range(start, min(start + window, first + n))
            with self._guard():
                pipe = self._r.pipeline(transaction=True)
                for item_id in ids:
                    pipe.hmget(self._key("item", item_id), _RESULTS)
                replies = pipe.execute()
            rows = [(i, dict(zip(_RESULTS, row, strict=True))) for i, row in zip(ids, replies, strict=True)]
            if any(r["state"] in ("queued", "leased") for _, r in rows):  # reported as ``_record`` reports them
                if unreadable is False:
                    unreadable = read_spec(job["request"], job_id)[1]
                if isinstance(unreadable, str):
                    rows = [(i, _shown_failed(r, unreadable)) for i, r in rows]
            chosen += [(i, r) for i, r in rows if r["state"] is not None and (wanted is None or r["state"] in wanted)]
            start, window = ids.stop, window * 2
        chosen = chosen[:limit]
        results = self._read_results(chosen) if with_results else {}
        if any(results[i] is None for i in results) and not self._exists("job", job_id):
            return None  # removed meanwhile (deleted, expired): its objects went with it, which is not "missing"
        return [
            ItemResult(
                position=int(r["pos"]),
                name=r["name"],
                state=ItemState(r["state"]),
                result=results.get(item_id),
                error=ItemError(r["name"], r["code"], r["msg"]) if r["state"] == "failed" else None,
            )
            for item_id, r in chosen
        ]

    def item_spec(self, *, tenant: str, job_id: str, position: int) -> ItemIn | None:
        """The submitted item at ``position`` of this tenant's job (its id is the job's first plus the position)."""
        with self._guard():
            first, n, owner = cast(list[str | None], self._r.hmget(self._key("job", job_id), ["first", "n", "tenant"]))
            if first is None or n is None or owner != tenant or not 0 <= position < int(n):
                return None
            raw = cast(str | None, self._r.hget(self._key("item", int(first) + position), "item"))
        return None if raw is None else readable_item(raw)

    def _read_results(self, rows: Sequence[tuple[int, dict[str, str]]]) -> dict[int, dict[str, Any] | None]:
        """The results of the succeeded ones of ``rows``: by value from ``P:result:<n>``, or from their objects."""
        succeeded = [(i, r) for i, r in rows if r["state"] == "succeeded"]
        inline = [i for i, r in succeeded if not r["rkey"]]
        with self._guard():
            pipe = self._r.pipeline(transaction=False)
            for item_id in inline:
                pipe.get(self._key("result", item_id))
            values = pipe.execute()
        out: dict[int, dict[str, Any] | None] = {
            i: None if raw is None else json.loads(raw) for i, raw in zip(inline, values, strict=True)
        }
        refs = [(i, r["rkey"]) for i, r in succeeded if r["rkey"]]
        if refs:
            if self._results is None:
                raise PreannotateError(
                    ErrorCode.RESULTS_UNAVAILABLE,
                    f"item results are stored at {refs[0][1].rsplit('/', 2)[0]}/..., but this process has no "
                    "result store: give the API and the workers the same PREANNOTATE_RESULTS_URL",
                )
            keys = [self._results.key_of(ref) for _, ref in refs]
            out |= dict(zip((i for i, _ in refs), self._results.get_many(keys), strict=True))
        return out

    def _exists(self, kind: str, ident: object) -> bool:
        with self._guard():
            return bool(self._r.exists(self._key(kind, ident)))

    def pin_model(
        self,
        job_id: str,
        *,
        version: str,
        class_names: Sequence[str],
        makes_masks: bool = False,
        class_thresholds: Mapping[str, float] | None = None,
    ) -> ModelPin | None:
        """Pin an unpinned job's model version and classes, with ``class_thresholds`` where the job has none: the
        first pin stands (``WATCH``: two workers racing to pin leave one pin, never a mix); returns the pin that
        stands."""

        def pin(stored: dict[str, Any]) -> tuple[ModelPin, dict[str, Any] | None]:
            standing = JobSpec.from_stored(stored).pin
            if standing is not None:
                return standing, None
            pinned = {**stored, "model_version": version, "class_names": list(class_names)}
            if makes_masks:  # only then, as JobSpec.to_stored writes it
                pinned["model_makes_masks"] = True
            if class_thresholds is not None and stored.get("class_thresholds") is None:
                pinned["class_thresholds"] = dict(class_thresholds)
            return ModelPin(version, tuple(class_names), makes_masks), pinned

        return self._pin(job_id, pin)

    def pin_prompts(self, job_id: str, prompts: PromptSet) -> PromptSet | None:
        """Pin an unpinned job's project prompts: the first pin stands (``WATCH``, as ``pin_model``); returns the
        prompts that stand."""

        def pin(stored: dict[str, Any]) -> tuple[PromptSet | None, dict[str, Any] | None]:
            spec = JobSpec.from_stored(stored)
            if spec.prompts is not None or spec.model_version is not None:
                return spec.prompts, None
            return prompts, {**stored, "prompts": prompts.to_json()}

        return self._pin(job_id, pin)

    def pin_segmenter(self, job_id: str, *, version: str) -> str | None:
        """Pin the version of an unpinned job's segmenter: the first pin stands (``WATCH``, as ``pin_model``);
        returns the version that stands."""

        def pin(stored: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
            spec = JobSpec.from_stored(stored)
            if spec.segmenter is None or spec.segmenter_version is not None:
                return spec.segmenter_version, None
            return version, {**stored, "segmenter_version": version}

        return self._pin(job_id, pin)

    def _pin(
        self, job_id: str, pin: Callable[[dict[str, Any]], tuple[_Pinned, dict[str, Any] | None]]
    ) -> _Pinned | None:
        """Rewrite a job's stored request once, as ``pin`` decides from it (``(what stands, the request to write
        or None)``), under ``WATCH`` so a concurrent pin or cancel makes it read again; None for an unknown job."""
        key = self._key("job", job_id)
        with self._guard(), self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    raw = cast(str | None, pipe.hget(key, "request"))
                    if raw is None:
                        return None  # expired or unknown
                    standing, pinned = pin(json.loads(raw))  # kept as stored, key for key: only the pin is written
                    if pinned is None:
                        return standing
                    pipe.multi()
                    pipe.hset(key, "request", _dumps(pinned))
                    pipe.execute()
                    return standing
                except redis.WatchError:  # the job changed meanwhile (a pin, a cancel): read it again
                    continue

    # --- workers -------------------------------------------------------------------------------------

    def lease(self, worker: str, *, max_items: int, lease_s: float) -> list[Lease]:
        """Move due retries to the stream, reclaim expired leases (or dead-letter them after max attempts),
        then read up to ``max_items`` new entries. ``worker`` is the consumer name: unique per worker thread."""
        if max_items < 1 or lease_s <= 0:
            raise ValueError(f"need max_items >= 1 and lease_s > 0, got {max_items} and {lease_s}")
        return lease_readable(
            lambda n: self._lease_stored(worker, n, lease_s), lambda bad: self._fail_unreadable(worker, bad), max_items
        )

    def _lease_stored(self, worker: str, max_items: int, lease_s: float) -> list[StoredLease]:
        """``lease`` before parsing: the ``LEASE`` script's rows, each with its job's stored request."""
        rows, jobs, finished = self._run(
            "LEASE", worker, max_items, repr(float(lease_s)), self._max_attempts, ErrorCode.LEASE_EXPIRED.code
        )
        for final in finished:  # jobs whose last item's lease expired for good just now
            job_finished(final)
        requests = {jobs[i]: jobs[i + 1] for i in range(0, len(jobs), 2)}
        return [
            StoredLease(
                int(rows[i]), rows[i + 1], int(rows[i + 2]), rows[i + 3], requests[rows[i + 1]], int(rows[i + 4])
            )
            for i in range(0, len(rows), 5)
        ]

    def _fail_unreadable(self, worker: str, bad: Sequence[Unreadable]) -> None:
        """Fail for good what ``lease`` could not parse: a job's open items for an unreadable spec, else the item."""
        for b in bad:
            if b.whole_job:
                finals = self._run("FAIL_JOB", worker, b.job_id, INVALID_STORED_JOB, b.message)
            else:
                _, final = self._run(
                    "FAIL", worker, b.item_id, INVALID_STORED_JOB, b.message, "0", "0", self._max_attempts
                )
                finals = [final]
            for final in finals:
                if final:
                    job_finished(final)

    def promote_due(self) -> int:
        """Move retries whose delay has passed into the stream (``lease()`` does it too); returns how many.

        Run it from a process that is always up (the API's ``Housekeeper``): while workers are scaled to
        zero, a delayed retry is neither lag nor pending, so nothing else would wake a worker for it.
        """
        return int(self._run("PROMOTE"))

    def heartbeat(self, worker: str, item_ids: Sequence[int], *, lease_s: float) -> list[int]:
        """Extend this worker's leases; returns the ids it still holds, in the order given."""
        if not item_ids:
            return []
        held = {int(i) for i in self._run("HEARTBEAT", worker, repr(float(lease_s)), *item_ids)}
        return [item_id for item_id in item_ids if item_id in held]

    def progress(self, worker: str, item_id: int, *, frames_done: int, frames_planned: int) -> bool:
        """Record frame progress; False tells the worker to stop (lease lost or job cancelled)."""
        return bool(self._run("PROGRESS", worker, item_id, frames_done, frames_planned))

    def complete(self, worker: str, item_id: int, result: Mapping[str, object]) -> bool:
        """Store the result and XACK if this worker still holds the item; otherwise drop it and return False.

        With a ``ResultStore`` the result is written as the item's object first (its key derives from the job and
        position, so a second delivery of the item overwrites it), and only the key is stored with the item. A
        worker that no longer holds the item writes nothing; a result written for a job removed meanwhile (deleted,
        expired) is removed again.
        """
        if self._results is None:
            held, final = self._run("COMPLETE", worker, item_id, _dumps(result), "0")
        else:
            with self._guard():
                fields = ["job", "pos", "state", "owner"]
                job_id, position, state, owner = cast(
                    list[str | None], self._r.hmget(self._key("item", item_id), fields)
                )
            if job_id is None or position is None or state != "leased" or owner != worker:
                # Not ours (any more): never overwrite the object of the delivery that settled the item. What is
                # left is a worker whose lease is taken over between this check and its write: its object then
                # replaces the winner's, with a result of the same item under the same pinned model.
                return False
            key = self._results.key(job_id, int(position))
            self._results.put(key, result)
            held, final = self._run("COMPLETE", worker, item_id, self._results.ref(key), "1")
            if not held and not self._exists("job", job_id):
                self._forget_objects(job_id)
        if final:
            job_finished(final)
        return bool(held)

    def fail(self, worker: str, item_id: int, *, code: str, message: str, retryable: bool, retry_in_s: float) -> None:
        """Retry after ``retry_in_s`` if retryable with attempts left, else fail and dead-letter; no-op if not held."""
        delay = repr(max(float(retry_in_s), 0.0))
        _, final = self._run(
            "FAIL", worker, item_id, code, message, "1" if retryable else "0", delay, self._max_attempts
        )
        if final:
            job_finished(final)

    def release(self, worker: str, item_ids: Sequence[int]) -> list[int]:
        """Hand held items back (a worker shutting down): the next lease anywhere takes them, attempt uncounted."""
        if not item_ids:
            return []
        return [int(i) for i in self._run("RELEASE", worker, *item_ids)]

    def depth(self) -> int:
        """Items queued, delayed or leased, all tenants."""
        with self._guard():
            return int(self._r.scard(f"{self._p}:active"))

    def queue_stats(self) -> dict[str, int | None]:
        """The stream group's ``lag`` (undelivered entries, what KEDA scales on; None when Redis cannot tell)
        and ``pending`` (delivered, not acked), plus ``delayed`` retries, ``dead`` letters and ``active`` items."""
        with self._guard():
            pipe = self._r.pipeline(transaction=False)
            pipe.zcard(f"{self._p}:delayed")
            pipe.xlen(f"{self._p}:dead")
            pipe.scard(f"{self._p}:active")
            delayed, dead, active = pipe.execute()
            try:
                groups = self._r.xinfo_groups(self._stream)
            except redis.ResponseError:  # no stream yet
                groups = []
        group = next((g for g in groups if g["name"] == "workers"), {})
        return {
            "lag": group.get("lag", 0) if group else 0,
            "pending": int(group.get("pending", 0)),
            "delayed": int(delayed),
            "dead": int(dead),
            "active": int(active),
        }

    def settled_items(self) -> int:
        """Items settled by every worker so far (``P:settled``, counted by the scripts that settle them)."""
        with self._guard():
            return int(cast(str | None, self._r.get(f"{self._p}:settled")) or 0)

    # --- calibrated thresholds: a hash of files by model version, a sorted set of when each was saved ----------

    def save_thresholds(self, model_version: str, file: ThresholdsFile) -> None:
        """Save (or replace) ``model_version``'s calibration; past ``max_saved_thresholds`` the least recently
        saved are forgotten."""
        check_model_version(model_version)
        files, saved = self._key("thresholds", "files"), self._key("thresholds", "saved")
        now = time.time() if self._clock is None else self._clock()
        with self._guard(), self._r.pipeline(transaction=True) as pipe:
            pipe.hset(files, model_version, file.model_dump_json())
            pipe.zadd(saved, {model_version: now})
            pipe.zrange(saved, 0, -self._max_saved_thresholds - 1)  # all but the newest max_saved_thresholds
            *_, excess = pipe.execute()
        if excess:
            with self._guard(), self._r.pipeline(transaction=True) as pipe:
                pipe.hdel(files, *excess)
                pipe.zrem(saved, *excess)
                pipe.execute()

    def thresholds_for(self, model_version: str) -> ThresholdsFile | None:
        with self._guard():
            raw = cast(str | None, self._r.hget(self._key("thresholds", "files"), model_version))
        return None if raw is None else stored_thresholds(raw)

    def saved_thresholds(self) -> dict[str, ThresholdsFile]:
        with self._guard():
            raw = self._hash(self._key("thresholds", "files"))
        return {version: file for version, text in sorted(raw.items()) if (file := stored_thresholds(text))}

    def claim_delivery(self, key: str, owner: str, *, ttl_s: float) -> str:
        """Claim ``key`` for ``owner`` unless an unexpired claim holds it; returns the claim's owner. The TTL runs
        on Redis' clock (``SET NX GET PX``, Redis 7.0), not the store's."""
        name = self._key("delivery", hashlib.sha256(key.encode()).hexdigest())
        with self._guard():
            earlier = self._r.set(name, owner, nx=True, get=True, px=max(1, round(ttl_s * 1000)))
        return owner if earlier is None else str(earlier)

    def ping(self) -> bool:
        """True when Redis answers (for /readyz); never raises."""
        try:
            return bool(self._r.ping())
        except redis.RedisError:
            return False

    # --- model catalog -------------------------------------------------------------------------------

    def publish_models(self, worker: str, models: Sequence[PublishedModel], *, ttl_s: float) -> None:
        """Announce this worker and the models it serves for ``ttl_s`` (call again well before it lapses)."""
        now = time.time() if self._clock is None else self._clock()
        card = {"models": [m.spec for m in models], "at": now}
        pairs = []
        for m in models:
            body = {"info": _published_info(m.info), "max_batch_size": m.max_batch_size, "published_at": now}
            pairs += [m.spec, _dumps(body)]
        self._run("PUBLISH_WORKER", worker, repr(float(ttl_s)), _dumps(card), *pairs)

    def published_models(self) -> list[PublishedModel]:
        """The catalog: every model a worker ever published here (the latest publication wins), with how many
        live workers serve it now."""
        with self._guard():
            catalog = self._hash(f"{self._p}:models")
        live: dict[str, int] = {}
        for card in self._run("LIVE_WORKERS"):
            for spec in json.loads(card)["models"]:
                live[spec] = live.get(spec, 0) + 1
        out = []
        for spec, raw in catalog.items():
            body = json.loads(raw)
            info = _read_info(body["info"])
            out.append(PublishedModel(spec, info, int(body["max_batch_size"]), body["published_at"], live.get(spec, 0)))
        return out

    def live_workers(self) -> int:
        """Workers whose publication has not lapsed."""
        return len(self._run("LIVE_WORKERS"))

    def forget_worker(self, worker: str, consumers: Sequence[str] = ()) -> None:
        """A worker leaving: drop its publication and those of its stream consumers that hold nothing."""
        with self._guard():
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(f"{self._p}:workers", worker)
            pipe.delete(self._key("worker", worker))
            pipe.execute()
        if consumers:
            self._run("DROP_CONSUMERS", 0, *consumers)

    def drop_idle_consumers(self, idle_s: float) -> int:
        """Forget consumers (crashed workers' threads) idle this long that hold no entries; returns how many."""
        return int(self._run("DROP_CONSUMERS", int(idle_s * 1000)))

    def close(self) -> None:
        self._r.close()
        if self._results is not None:
            self._results.close()


_INFO_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelInfo))


def _published_info(info: ModelInfo) -> dict[str, Any]:
    """``info`` as the catalog stores it: ``makes_masks`` and ``open_vocabulary`` only when true, so API pods of
    the releases before them (which build ``ModelInfo(**info)``) still read other models during a rolling update."""
    body = dataclasses.asdict(info)
    for flag in ("makes_masks", "open_vocabulary"):
        if not body[flag]:
            del body[flag]
    return body


def _read_info(stored: Mapping[str, Any]) -> ModelInfo:
    """A published ``ModelInfo``, ignoring fields a newer release's workers added (a rolling update)."""
    known = {k: v for k, v in stored.items() if k in _INFO_FIELDS}
    return ModelInfo(**{**known, "class_names": tuple(known["class_names"])})
