"""The embedded job store: a SQLite lease table in WAL mode (reliability.md §1.3).

One file serves the API threads, the worker threads and any other process on the same host (a restarted
server finds its queued jobs). Every thread gets its own connection; SQLite serialises the writers, and
each write that reads before it writes runs in ``BEGIN IMMEDIATE`` so two workers can never lease the same
item. WAL needs every process on one host: a node-local disk, never NFS or EFS.

Create the store after any ``fork``: a connection must not cross into a child process.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from models.prompts import PromptSet
from service.errors import ErrorCode
from service.metrics import job_finished
from service.queue.store import (
    DEFAULT_MAX_SAVED_THRESHOLDS,
    INVALID_STORED_JOB,
    ItemError,
    ItemResult,
    ItemState,
    JobRecord,
    JobStatus,
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
    spec_from_json,
    spec_to_json,
    stored_thresholds,
)
from service.spec.job import JobSpec, ModelPin
from service.spec.requests import ItemIn
from service.spec.thresholds import ThresholdsFile

LEASE_EXPIRED = ErrorCode.LEASE_EXPIRED.code
FORGOTTEN_PREFIX = "forgotten:"
"""A forgotten job's ``idem_key`` (``forget_idem_key``): its own id after this, unique and never derived from a
request (client, content and webhook keys have other prefixes)."""

_SCHEMA_1 = (
    """CREATE TABLE jobs(
        id TEXT PRIMARY KEY,                    -- uuid4 hex
        tenant TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        request TEXT NOT NULL,                  -- JSON
        cancelled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE(tenant, idem_key))""",
    """CREATE TABLE items(
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        item TEXT NOT NULL,                     -- JSON
        state TEXT NOT NULL DEFAULT 'queued'
            CHECK(state IN ('queued', 'leased', 'succeeded', 'failed', 'cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until REAL,
        available_at REAL NOT NULL,
        frames_done INTEGER NOT NULL DEFAULT 0,
        frames_planned INTEGER NOT NULL DEFAULT 0,
        error_code TEXT,                        -- the last error; reported only once the item has failed
        error_message TEXT,
        updated_at REAL NOT NULL,
        -- Last on purpose: a result of several MB spills into overflow pages, and SQLite walks those to
        -- reach any column stored after it, so the status queries would pay for every result.
        result TEXT,                            -- JSON
        UNIQUE(job_id, position))""",
    # Partial indexes stay as small as the live queue, however much finished history the table holds.
    "CREATE INDEX items_ready ON items(available_at) WHERE state = 'queued'",
    "CREATE INDEX items_leased ON items(lease_until) WHERE state = 'leased'",
)
_SCHEMA_2 = (
    # Webhook delivery ids (claim_delivery): expired rows are purged by the next claim.
    """CREATE TABLE deliveries(
        key TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX deliveries_expiry ON deliveries(expires_at)",
)
# GET /v1/jobs: a tenant's jobs newest first (the index holds the rowid, creation order, after the tenant).
_SCHEMA_3 = ("CREATE INDEX jobs_by_tenant ON jobs(tenant)",)
# Retention (expire_jobs): the jobs created before a time, oldest first.
_SCHEMA_4 = ("CREATE INDEX jobs_by_created ON jobs(created_at)",)
# _MIGRATIONS[v] takes a database from user_version v to v + 1.
# Calibrated per-class thresholds by model version (save_thresholds), the oldest forgotten past the bound.
_SCHEMA_5 = (
    """CREATE TABLE thresholds(
        model_version TEXT PRIMARY KEY,
        file TEXT NOT NULL,                     -- JSON: a ThresholdsFile
        saved_at REAL NOT NULL) WITHOUT ROWID""",
)
_MIGRATIONS = (_SCHEMA_1, _SCHEMA_2, _SCHEMA_3, _SCHEMA_4, _SCHEMA_5)
SCHEMA_VERSION = len(_MIGRATIONS)

# Expired leases go back to the queue, or fail for good once every attempt is spent.
_RECLAIM = """UPDATE items SET
    state = CASE WHEN attempts < :max THEN 'queued' ELSE 'failed' END,
    available_at = :now, lease_owner = NULL, lease_until = NULL, updated_at = :now,
    error_code = :code,
    error_message = printf('%s: lease expired on attempt %d of %d (the worker crashed, hung or stopped heartbeating)',
                           name, attempts, :max)
    WHERE state = 'leased' AND lease_until < :now
    RETURNING job_id, state"""

_LEASE = """UPDATE items SET state = 'leased', lease_owner = :worker, lease_until = :until,
    attempts = attempts + 1, updated_at = :now
    WHERE id IN (SELECT i.id FROM items AS i JOIN jobs AS j ON j.id = i.job_id
                 WHERE i.state = 'queued' AND i.available_at <= :now AND NOT j.cancelled
                 ORDER BY j.created_at, j.rowid, i.position LIMIT :n)
    RETURNING id, job_id, position, item, attempts"""

# A job whose stored spec this release cannot parse: its queued items, and those just leased to this worker,
# fail for good (items other workers hold are theirs to finish).
_FAIL_JOB = """UPDATE items SET
    state = 'failed', lease_owner = NULL, lease_until = NULL, updated_at = :now,
    error_code = :code, error_message = :message
    WHERE job_id = :job AND (state = 'queued' OR (state = 'leased' AND lease_owner = :worker))
    RETURNING job_id"""

_FAIL = """UPDATE items SET
    state = CASE WHEN :retryable AND attempts < :max THEN 'queued' ELSE 'failed' END,
    available_at = :now + :delay, lease_owner = NULL, lease_until = NULL, updated_at = :now,
    error_code = :code, error_message = :message
    WHERE id = :id AND lease_owner = :worker AND state = 'leased'
    RETURNING job_id, state"""

# The attempt a worker gave up was not the item's fault: uncount it, so a drain never brings it nearer to failing.
_RELEASE = """state = 'queued', lease_owner = NULL, lease_until = NULL, attempts = max(attempts - 1, 0),
    available_at = ?, updated_at = ?"""

_SUMMARY = """SELECT count(*) AS total,
    coalesce(sum(state = 'succeeded'), 0) AS succeeded,
    coalesce(sum(state = 'failed'), 0) AS failed,
    coalesce(sum(state IN ('queued', 'leased')), 0) AS active,
    coalesce(sum(attempts > 0 OR state IN ('succeeded', 'failed')), 0) AS started,
    coalesce(sum(frames_planned), 0) AS frames_planned,
    coalesce(sum(frames_done), 0) AS frames_done,
    max(updated_at) AS updated_at
    FROM items WHERE job_id = ?"""

# An item is "held" while it is leased to this worker. A lapsed lease that nobody has reclaimed yet still
# counts: the work is done and no one else has the item, so dropping it would only waste an attempt.
_HELD = "lease_owner = ? AND state = 'leased'"


_MAX_ROWID = 2**63 - 1
_OPEN = frozenset({"queued", "leased"})
_SHOWN_FAILED = _OPEN | {"failed"}
"""The states whose items a job this release cannot read reports as failed (``_record``)."""


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _marks(n: int) -> str:
    return ",".join("?" * n)


def derive_status(*, cancelled: bool, total: int, succeeded: int, failed: int, active: int, started: int) -> JobStatus:
    """A job's status from its items' states (the table in ``JobStatus``)."""
    if cancelled:
        return JobStatus.CANCELLED
    if active:
        return JobStatus.RUNNING if started else JobStatus.QUEUED
    if succeeded == total:
        return JobStatus.SUCCEEDED
    if failed == total:
        return JobStatus.FAILED
    return JobStatus.PARTIALLY_FAILED


class SqliteJobStore:
    """``JobStore`` on one SQLite file, safe for many threads and several processes on one host.

    Args:
        path: The database file; created with its schema on first use.
        max_attempts: Leases an item gets before it fails for good (expired leases and retryable failures).
        clock: Epoch seconds; tests inject a fake one instead of sleeping.
        retention_s: ``expire_jobs`` removes jobs created this long ago (None = never).
        max_saved_thresholds: model versions whose calibrations ``save_thresholds`` keeps.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.time,
        retention_s: float | None = 7 * 86400.0,
        max_saved_thresholds: int = DEFAULT_MAX_SAVED_THRESHOLDS,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_saved_thresholds < 1:
            raise ValueError(f"max_saved_thresholds must be at least 1, got {max_saved_thresholds}")
        self._max_saved_thresholds = max_saved_thresholds
        self._path = path
        self._max_attempts = max_attempts
        self._retention_s = retention_s
        self._clock = clock
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []  # every thread's connection, so close() reaches them all
        self._conns_lock = threading.Lock()
        self._closed = False
        self._settled = 0  # items settled through this object (settled_items)
        conn = self._conn()
        # WAL is a property of the file (it persists), so setting it once per open is enough.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{path}: SQLite refused WAL mode (got {mode!r}); use a file on a local disk")
        self._migrate(conn)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise RuntimeError(f"{self._path}: the job store is closed")
        # isolation_level=None: the module never opens transactions behind our back; we BEGIN explicitly.
        # check_same_thread=False only so that close() may close it; each thread keeps to its own.
        conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        # NORMAL can lose the last commits on power loss (never on a process crash); FULL if that matters.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        with self._conns_lock:
            self._conns.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """A transaction: IMMEDIATE takes the write lock up front, so a read-then-write never races another
        writer (and waits in busy_timeout rather than failing on upgrade); DEFERRED gives reads one snapshot."""
        conn = self._conn()
        conn.execute(f"BEGIN {mode}")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Inside the write lock, so two processes starting together create the schema once.
        with self._tx():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self._path}: schema version {version} is newer than this code's {SCHEMA_VERSION}")
            if version < SCHEMA_VERSION:
                for migration in _MIGRATIONS[version:]:
                    for statement in migration:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _record(self, conn: sqlite3.Connection, job: sqlite3.Row) -> JobRecord:
        spec, unreadable = read_spec(job["request"], job["id"])
        s = conn.execute(_SUMMARY, (job["id"],)).fetchone()
        failed, active = s["failed"], s["active"]
        # A job this release cannot read is reported as leasing will leave it: its open items failed.
        shown = "'failed'" if unreadable is None else "'failed', 'queued', 'leased'"
        errors = conn.execute(
            f"SELECT name, state, error_code, error_message FROM items WHERE job_id = ? AND state IN ({shown})"
            " ORDER BY position",
            (job["id"],),
        ).fetchall()
        if unreadable is not None:
            failed, active = failed + active, 0
        return JobRecord(
            id=job["id"],
            tenant=job["tenant"],
            spec=spec,
            status=derive_status(
                cancelled=bool(job["cancelled"]),
                total=s["total"],
                succeeded=s["succeeded"],
                failed=failed,
                active=active,
                started=s["started"],
            ),
            created_at=job["created_at"],
            updated_at=max(job["updated_at"], s["updated_at"] or 0.0),
            items_total=s["total"],
            items_succeeded=s["succeeded"],
            items_failed=failed,
            frames_planned=s["frames_planned"],
            frames_done=s["frames_done"],
            errors=tuple(
                ItemError(item=e["name"], code=e["error_code"], message=e["error_message"])
                if e["state"] == "failed" or unreadable is None
                else ItemError(item=e["name"], code=INVALID_STORED_JOB, message=unreadable)
                for e in errors
            ),
        )

    def _finished(self, conn: sqlite3.Connection, job_ids: Iterable[str]) -> list[JobStatus]:
        """The final status of each of these jobs that an item just left (succeeded or failed for good) and that
        has no queued or leased item any more. Inside the write transaction, so exactly one call sees each job
        finish, whichever process or thread settles its last item."""
        finished = []
        for job_id in sorted(set(job_ids)):
            if conn.execute(
                "SELECT 1 FROM items WHERE job_id = ? AND state IN ('queued', 'leased') LIMIT 1", (job_id,)
            ).fetchone():
                continue
            s = conn.execute(_SUMMARY, (job_id,)).fetchone()
            cancelled = conn.execute("SELECT cancelled FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            finished.append(
                derive_status(
                    cancelled=bool(cancelled),
                    total=s["total"],
                    succeeded=s["succeeded"],
                    failed=s["failed"],
                    active=s["active"],
                    started=s["started"],
                )
            )
        return finished

    def _count(self, finished: Iterable[JobStatus], settled: int = 0) -> None:
        # After the commit: a rolled-back transaction finished nothing.
        for job_status in finished:
            job_finished(job_status.value)
        if settled:
            with self._conns_lock:
                self._settled += settled

    def create_job(
        self, *, tenant: str, idem_key: str, spec: JobSpec, items: Sequence[ItemIn]
    ) -> tuple[JobRecord, bool]:
        """Store a job and queue its items in order; ``(existing job, False)`` for a repeated ``idem_key``."""
        check_items(items)
        now, job_id = self._clock(), uuid.uuid4().hex
        rows = [(job_id, pos, item.name, item_to_json(item), now, now) for pos, item in enumerate(items)]
        with self._tx() as conn:
            # The targeted form of INSERT OR IGNORE: only a repeated (tenant, idem_key) is ignored.
            inserted = conn.execute(
                "INSERT INTO jobs(id, tenant, idem_key, request, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(tenant, idem_key) DO NOTHING",
                (job_id, tenant, idem_key, spec_to_json(spec), now, now),
            ).rowcount
            if inserted:
                conn.executemany(
                    "INSERT INTO items(job_id, position, name, item, available_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            job = conn.execute("SELECT * FROM jobs WHERE tenant = ? AND idem_key = ?", (tenant, idem_key)).fetchone()
            return self._record(conn, job), bool(inserted)

    def find_job(self, *, tenant: str, idem_key: str) -> JobRecord | None:
        """The job stored under ``idem_key`` for this tenant, or None."""
        with self._tx("DEFERRED") as conn:
            job = conn.execute("SELECT * FROM jobs WHERE tenant = ? AND idem_key = ?", (tenant, idem_key)).fetchone()
            return None if job is None else self._record(conn, job)

    def forget_idem_key(self, *, tenant: str, idem_key: str, job_id: str) -> bool:
        """Move the job off ``idem_key`` (to a key no request derives) unless the key names another job now."""
        with self._tx() as conn:
            return bool(
                conn.execute(
                    "UPDATE jobs SET idem_key = ? WHERE tenant = ? AND idem_key = ? AND id = ?",
                    (FORGOTTEN_PREFIX + job_id, tenant, idem_key, job_id),
                ).rowcount
            )

    def get_job(self, *, tenant: str, job_id: str) -> JobRecord | None:
        """The job, or None if it is unknown or belongs to another tenant."""
        with self._tx("DEFERRED") as conn:
            job = conn.execute("SELECT * FROM jobs WHERE id = ? AND tenant = ?", (job_id, tenant)).fetchone()
            return None if job is None else self._record(conn, job)

    def cancel_job(self, *, tenant: str, job_id: str) -> JobRecord | None:
        """Cancel the queued and leased items; a job already finished stays as it is."""
        now = self._clock()
        with self._tx() as conn:
            job = conn.execute("SELECT * FROM jobs WHERE id = ? AND tenant = ?", (job_id, tenant)).fetchone()
            if job is None:
                return None
            cancelled = conn.execute(
                "UPDATE items SET state = 'cancelled', lease_owner = NULL, lease_until = NULL, updated_at = ?"
                " WHERE job_id = ? AND state IN ('queued', 'leased')",
                (now, job_id),
            ).rowcount
            if cancelled:
                conn.execute("UPDATE jobs SET cancelled = 1, updated_at = ? WHERE id = ?", (now, job_id))
                job = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            record = self._record(conn, job)
        if cancelled:  # it had unfinished items, so it was not final before
            self._count([JobStatus.CANCELLED])
        return record

    def delete_job(self, *, tenant: str, job_id: str) -> bool | None:
        """Remove a finished job with its items and results (``ON DELETE CASCADE``); False while an item is open."""
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ? AND tenant = ?", (job_id, tenant)).fetchone() is None:
                return None
            if conn.execute(
                "SELECT 1 FROM items WHERE job_id = ? AND state IN ('queued', 'leased') LIMIT 1", (job_id,)
            ).fetchone():
                return False
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return True

    def expire_jobs(self, *, limit: int = 100) -> int:
        """Remove up to ``limit`` jobs created ``retention_s`` ago or longer, oldest first, whatever their state: a
        worker still holding an item of one finds its lease gone and drops the result."""
        if self._retention_s is None:
            return 0
        with self._tx() as conn:
            return int(
                conn.execute(
                    "DELETE FROM jobs WHERE id IN"
                    " (SELECT id FROM jobs WHERE created_at <= ? ORDER BY created_at LIMIT ?)",
                    (self._clock() - self._retention_s, limit),
                ).rowcount
            )

    def list_jobs(self, *, tenant: str, limit: int, cursor: str | None = None) -> tuple[list[JobRecord], str | None]:
        """This tenant's jobs, newest first; the cursor is the rowid (creation order) of the last job shown."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        below = _MAX_ROWID if cursor is None else parse_cursor(cursor)  # ValueError for a malformed cursor
        with self._tx("DEFERRED") as conn:
            rows = conn.execute(
                "SELECT rowid AS seq, * FROM jobs WHERE tenant = ? AND rowid < ? ORDER BY rowid DESC LIMIT ?",
                (tenant, below, limit + 1),
            ).fetchall()
            page = [self._record(conn, row) for row in rows[:limit]]
        return page, str(rows[limit - 1]["seq"]) if len(rows) > limit else None

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
        foreign job. A job this release cannot read shows its open items failed, as ``_record`` reports it."""
        wanted = None if states is None else {ItemState(state).value for state in states}
        with self._tx("DEFERRED") as conn:
            job = conn.execute("SELECT request FROM jobs WHERE id = ? AND tenant = ?", (job_id, tenant)).fetchone()
            if job is None:
                return None
            unreadable = None
            if wanted and wanted & _SHOWN_FAILED:  # the filter itself differs for such a job: look first
                unreadable = read_spec(job["request"], job_id)[1]
                if unreadable is not None:
                    wanted = (wanted - _OPEN) | (_OPEN if "failed" in wanted else set())
            if wanted is not None and not wanted:
                return []
            where, args = "job_id = ? AND position > ?", [job_id, after]
            if wanted is not None:
                where += f" AND state IN ({_marks(len(wanted))})"
                args += sorted(wanted)
            result = "result" if with_results else "NULL AS result"  # the column is last: not read, not walked
            rows = conn.execute(
                f"SELECT position, name, state, error_code, error_message, {result} FROM items"
                f" WHERE {where} ORDER BY position LIMIT ?",
                (*args, -1 if limit is None else limit),
            ).fetchall()
        if wanted is None and any(r["state"] in _OPEN for r in rows):  # only a job with open items can show any
            unreadable = read_spec(job["request"], job_id)[1]
        out = []
        for r in rows:
            state, error = r["state"], ItemError(r["name"], r["error_code"], r["error_message"])
            if unreadable is not None and state in _OPEN:
                state, error = "failed", ItemError(r["name"], INVALID_STORED_JOB, unreadable)
            out.append(
                ItemResult(
                    position=r["position"],
                    name=r["name"],
                    state=ItemState(state),
                    result=None if r["result"] is None else json.loads(r["result"]),
                    error=error if state == "failed" else None,
                )
            )
        return out

    def item_spec(self, *, tenant: str, job_id: str, position: int) -> ItemIn | None:
        """The submitted item at ``position`` of this tenant's job, or None."""
        with self._tx("DEFERRED") as conn:
            row = conn.execute(
                "SELECT items.item FROM items JOIN jobs ON jobs.id = items.job_id"
                " WHERE jobs.id = ? AND jobs.tenant = ? AND items.position = ?",
                (job_id, tenant, position),
            ).fetchone()
        return None if row is None else readable_item(row["item"])

    def lease(self, worker: str, *, max_items: int, lease_s: float) -> list[Lease]:
        """Reclaim expired leases, then lease up to ``max_items`` ready items, oldest job first.

        ``worker`` must be unique per worker instance (e.g. host, pid and a random suffix): ownership checks
        compare it, so two workers sharing a name could complete each other's items.
        """
        if max_items < 1 or lease_s <= 0:
            raise ValueError(f"need max_items >= 1 and lease_s > 0, got {max_items} and {lease_s}")
        return lease_readable(
            lambda n: self._lease_stored(worker, n, lease_s), lambda bad: self._fail_unreadable(worker, bad), max_items
        )

    def _lease_stored(self, worker: str, max_items: int, lease_s: float) -> list[StoredLease]:
        """``lease`` before parsing: reclaim, lease, and read each leased item's job, in queue order."""
        now = self._clock()
        with self._tx() as conn:
            reclaimed = conn.execute(_RECLAIM, {"max": self._max_attempts, "now": now, "code": LEASE_EXPIRED})
            failed = [r["job_id"] for r in reclaimed.fetchall() if r["state"] == "failed"]
            finished = self._finished(conn, failed)
            rows = conn.execute(
                _LEASE, {"worker": worker, "until": now + lease_s, "now": now, "n": max_items}
            ).fetchall()
            job_ids = sorted({r["job_id"] for r in rows})
            jobs = {
                j["id"]: (j["created_at"], j["seq"], j["request"])
                for j in conn.execute(
                    f"SELECT id, request, created_at, rowid AS seq FROM jobs WHERE id IN ({_marks(len(job_ids))})",
                    job_ids,
                )
            }
        self._count(finished, len(failed))
        # RETURNING comes back in no promised order; restore the queue order.
        rows.sort(key=lambda r: (*jobs[r["job_id"]][:2], r["position"]))
        return [
            StoredLease(r["id"], r["job_id"], r["position"], r["item"], jobs[r["job_id"]][2], r["attempts"])
            for r in rows
        ]

    def _fail_unreadable(self, worker: str, bad: Sequence[Unreadable]) -> None:
        """Fail for good what ``lease`` could not parse: a job's open items for an unreadable spec, else the item."""
        now, settled = self._clock(), []
        with self._tx() as conn:
            for b in bad:
                args = {"now": now, "code": INVALID_STORED_JOB, "message": b.message, "worker": worker}
                if b.whole_job:
                    rows = conn.execute(_FAIL_JOB, {**args, "job": b.job_id}).fetchall()
                else:
                    rows = conn.execute(
                        _FAIL, {**args, "retryable": False, "max": self._max_attempts, "delay": 0.0, "id": b.item_id}
                    ).fetchall()
                settled += [r["job_id"] for r in rows]
            finished = self._finished(conn, settled)
        self._count(finished, len(settled))

    def heartbeat(self, worker: str, item_ids: Sequence[int], *, lease_s: float) -> list[int]:
        """Extend this worker's leases; returns the ids it still holds, in the order given."""
        if not item_ids:
            return []
        now = self._clock()
        with self._tx() as conn:
            held = {
                r["id"]
                for r in conn.execute(
                    f"UPDATE items SET lease_until = ? WHERE {_HELD} AND id IN ({_marks(len(item_ids))}) RETURNING id",
                    (now + lease_s, worker, *item_ids),
                ).fetchall()
            }
        return [item_id for item_id in item_ids if item_id in held]

    def progress(self, worker: str, item_id: int, *, frames_done: int, frames_planned: int) -> bool:
        """Record frame progress; False tells the worker to stop (lease lost or job cancelled)."""
        with self._tx() as conn:
            return bool(
                conn.execute(
                    f"UPDATE items SET frames_done = ?, frames_planned = ?, updated_at = ? WHERE id = ? AND {_HELD}",
                    (frames_done, frames_planned, self._clock(), item_id, worker),
                ).rowcount
            )

    def complete(self, worker: str, item_id: int, result: Mapping[str, object]) -> bool:
        """Store the result if this worker still holds the item; otherwise drop it and return False."""
        payload = _dumps(result)  # serialise a large result before taking the write lock
        with self._tx() as conn:
            rows = conn.execute(
                "UPDATE items SET state = 'succeeded', result = ?, lease_owner = NULL, lease_until = NULL,"
                f" error_code = NULL, error_message = NULL, updated_at = ? WHERE id = ? AND {_HELD} RETURNING job_id",
                (payload, self._clock(), item_id, worker),
            ).fetchall()  # all: a RETURNING statement left unfinished would hold the transaction open
            finished = self._finished(conn, [r["job_id"] for r in rows])
        self._count(finished, len(rows))
        return bool(rows)

    def fail(self, worker: str, item_id: int, *, code: str, message: str, retryable: bool, retry_in_s: float) -> None:
        """Requeue after ``retry_in_s`` if retryable with attempts left, else fail for good; no-op if not held."""
        with self._tx() as conn:
            rows = conn.execute(
                _FAIL,
                {"retryable": retryable, "max": self._max_attempts, "now": self._clock(), "delay": max(retry_in_s, 0.0),
                 "code": code, "message": message, "id": item_id, "worker": worker},
            ).fetchall()  # fmt: skip
            failed = [r["job_id"] for r in rows if r["state"] == "failed"]
            finished = self._finished(conn, failed)
        self._count(finished, len(failed))

    def release(self, worker: str, item_ids: Sequence[int]) -> list[int]:
        """Hand held items back (a worker shutting down): queued at once, the attempt uncounted; returns the ids
        released, in the order given."""
        if not item_ids:
            return []
        now = self._clock()
        with self._tx() as conn:
            released = {
                r["id"]
                for r in conn.execute(
                    f"UPDATE items SET {_RELEASE} WHERE {_HELD} AND id IN ({_marks(len(item_ids))}) RETURNING id",
                    (now, now, worker, *item_ids),
                ).fetchall()
            }
        return [item_id for item_id in item_ids if item_id in released]

    def depth(self) -> int:
        """Items queued or leased across tenants (two counts, so each uses its partial index)."""
        with self._tx("DEFERRED") as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM items WHERE state = 'queued')"
                " + (SELECT count(*) FROM items WHERE state = 'leased')"
            ).fetchone()
        return int(row[0])

    def settled_items(self) -> int:
        """Items settled through this object: the embedded workers' throughput (other processes are not seen)."""
        with self._conns_lock:
            return self._settled

    def pin_model(
        self,
        job_id: str,
        *,
        version: str,
        class_names: Sequence[str],
        makes_masks: bool = False,
        class_thresholds: Mapping[str, float] | None = None,
    ) -> ModelPin | None:
        """Pin an unpinned job's model version and classes (the first pin stands), with ``class_thresholds`` where
        the job has none; returns the pin that stands."""
        # model_makes_masks only when true, as JobSpec.to_stored writes it (a boxes-only job keeps its stored form)
        masks = ", '$.model_makes_masks', json('true')" if makes_masks else ""
        with self._tx() as conn:
            if class_thresholds is not None:  # first, while the job is still unpinned
                conn.execute(
                    "UPDATE jobs SET request = json_set(request, '$.class_thresholds', json(?)) WHERE id = ?"
                    " AND json_extract(request, '$.model_version') IS NULL"
                    " AND json_extract(request, '$.class_thresholds') IS NULL",
                    (_dumps(dict(class_thresholds)), job_id),
                )
            conn.execute(
                f"UPDATE jobs SET request = json_set(request, '$.model_version', ?, '$.class_names', json(?){masks}) "
                "WHERE id = ? AND json_extract(request, '$.model_version') IS NULL",
                (version, _dumps(list(class_names)), job_id),
            )
            row = conn.execute("SELECT request FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else spec_from_json(row[0]).pin

    def pin_prompts(self, job_id: str, prompts: PromptSet) -> PromptSet | None:
        """Pin an unpinned job's project prompts (the first pin stands); returns the prompts that stand."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE jobs SET request = json_set(request, '$.prompts', json(?)) WHERE id = ?"
                " AND json_extract(request, '$.model_version') IS NULL"
                " AND json_extract(request, '$.prompts') IS NULL",
                (_dumps(prompts.to_json()), job_id),
            )
            row = conn.execute("SELECT request FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else spec_from_json(row[0]).prompts

    def pin_segmenter(self, job_id: str, *, version: str) -> str | None:
        """Pin the version of an unpinned job's segmenter (the first pin stands); returns the version that stands."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE jobs SET request = json_set(request, '$.segmenter_version', ?) WHERE id = ?"
                " AND json_extract(request, '$.segmenter') IS NOT NULL"
                " AND json_extract(request, '$.segmenter_version') IS NULL",
                (version, job_id),
            )
            row = conn.execute("SELECT request FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else spec_from_json(row[0]).segmenter_version

    def save_thresholds(self, model_version: str, file: ThresholdsFile) -> None:
        """Save (or replace) ``model_version``'s calibration; past ``max_saved_thresholds`` the least recently
        saved are forgotten."""
        check_model_version(model_version)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO thresholds(model_version, file, saved_at) VALUES (?, ?, ?) ON CONFLICT(model_version)"
                " DO UPDATE SET file = excluded.file, saved_at = excluded.saved_at",
                (model_version, file.model_dump_json(), self._clock()),
            )
            conn.execute(
                "DELETE FROM thresholds WHERE model_version NOT IN"
                " (SELECT model_version FROM thresholds ORDER BY saved_at DESC, model_version LIMIT ?)",
                (self._max_saved_thresholds,),
            )

    def thresholds_for(self, model_version: str) -> ThresholdsFile | None:
        with self._tx("DEFERRED") as conn:
            row = conn.execute("SELECT file FROM thresholds WHERE model_version = ?", (model_version,)).fetchone()
        return None if row is None else stored_thresholds(row[0])

    def saved_thresholds(self) -> dict[str, ThresholdsFile]:
        with self._tx("DEFERRED") as conn:
            rows = conn.execute("SELECT model_version, file FROM thresholds ORDER BY model_version").fetchall()
        return {str(row[0]): file for row in rows if (file := stored_thresholds(row[1])) is not None}

    def claim_delivery(self, key: str, owner: str, *, ttl_s: float) -> str:
        """Claim ``key`` for ``owner`` unless an unexpired claim holds it; returns the claim's owner."""
        now = self._clock()
        with self._tx() as conn:
            conn.execute("DELETE FROM deliveries WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT INTO deliveries(key, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT(key) DO NOTHING",
                (key, owner, now + ttl_s),
            )
            return str(conn.execute("SELECT owner FROM deliveries WHERE key = ?", (key,)).fetchone()[0])

    def close(self) -> None:
        """Close every thread's connection; call it once the API and the workers have stopped."""
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
