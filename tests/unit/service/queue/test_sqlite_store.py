"""SqliteJobStore: the shared JobStore contract, plus restart, multi-process and multi-thread behaviour."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from service.queue.sqlite_store import SCHEMA_VERSION, SqliteJobStore
from service.queue.store import ItemState, JobStatus, JobStore
from service.spec.thresholds import ThresholdsFile
from tests.unit.service.queue.store_contract import (
    LEASE_S,
    TENANT,
    Corrupt,
    FakeClock,
    FinishedJobs,
    JobStoreContract,
    StoreFactory,
    make_job,
)


class TestSqliteJobStoreContract(JobStoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path, clock: FakeClock) -> Iterator[StoreFactory]:
        stores: list[SqliteJobStore] = []

        def factory(*, max_attempts: int = 3, max_saved_thresholds: int = 256) -> JobStore:
            path = tmp_path / f"jobs{len(stores)}.db"
            store = SqliteJobStore(
                path, max_attempts=max_attempts, clock=clock, max_saved_thresholds=max_saved_thresholds
            )
            stores.append(store)
            return store

        yield factory
        for store in stores:
            store.close()

    @pytest.fixture
    def corrupt(self) -> Corrupt:
        def overwrite(
            store: JobStore, job_id: str, *, request: str | None = None, item: tuple[int, str] | None = None
        ) -> None:
            assert isinstance(store, SqliteJobStore)
            with sqlite3.connect(store._path) as conn:
                if request is not None:
                    conn.execute("UPDATE jobs SET request = ? WHERE id = ?", (request, job_id))
                if item is not None:
                    conn.execute(
                        "UPDATE items SET item = ? WHERE job_id = ? AND position = ?", (item[1], job_id, item[0])
                    )
            conn.close()

        return overwrite


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


def test_wal_and_pragmas_are_on(db: Path) -> None:
    store = SqliteJobStore(db)
    try:
        conn = store._conn()
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        store.close()
    # WAL and the schema version live in the file: a plain connection sees them.
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_refuses_a_newer_schema(db: Path) -> None:
    SqliteJobStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()

    with pytest.raises(RuntimeError, match="newer"):
        SqliteJobStore(db)


def test_a_version_1_database_gains_the_deliveries_table(db: Path) -> None:
    # Given a database written before delivery claims existed, holding a job
    SqliteJobStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE deliveries")
    conn.execute("DROP INDEX jobs_by_tenant")  # version 3
    conn.execute("DROP INDEX jobs_by_created")  # version 4
    conn.execute("DROP TABLE thresholds")  # version 5
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteJobStore(db)
    try:
        job = make_job(store, 1)
        # When it is opened again, then the schema is upgraded in place and the job is still there
        store.close()
        store = SqliteJobStore(db)
        assert store.claim_delivery("generic:d-1", "body:a", ttl_s=60) == "body:a"
        assert store.get_job(tenant=job.tenant, job_id=job.id) == job
        assert store.list_jobs(tenant=job.tenant, limit=5) == ([job], None)
        store.save_thresholds("m-v1", ThresholdsFile(model_version="m-v1"))
        assert store.thresholds_for("m-v1") == ThresholdsFile(model_version="m-v1")
    finally:
        store.close()
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert check.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs_by_tenant'").fetchone() == (1,)
        assert check.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs_by_created'").fetchone() == (1,)
    check.close()


def test_delivery_claims_are_shared_by_processes_and_expire(db: Path) -> None:
    clock = FakeClock()
    api_1, api_2 = SqliteJobStore(db, clock=clock), SqliteJobStore(db, clock=clock)
    try:
        assert api_1.claim_delivery("generic:d-1", "body:a", ttl_s=60) == "body:a"
        assert api_2.claim_delivery("generic:d-1", "body:b", ttl_s=60) == "body:a"
        clock.advance(61)
        assert api_2.claim_delivery("generic:d-1", "body:b", ttl_s=60) == "body:b"  # expired: a new claim
        clock.advance(61)
        api_1.claim_delivery("generic:d-2", "body:c", ttl_s=60)  # any claim purges the expired rows
        rows = api_1._conn().execute("SELECT key FROM deliveries").fetchall()
        assert [r[0] for r in rows] == ["generic:d-2"]
    finally:
        api_1.close()
        api_2.close()


def test_jobs_survive_a_restart(db: Path) -> None:
    # Given a server that queued a job and leased one item, then died without completing it
    clock = FakeClock()
    before = SqliteJobStore(db, clock=clock)
    job = make_job(before, 3)
    (orphan,) = before.lease("old-worker", max_items=1, lease_s=LEASE_S)
    before.close()

    # When a new server opens the same file
    after = SqliteJobStore(db, clock=clock)
    try:
        queued = after.lease("new-worker", max_items=10, lease_s=LEASE_S)
        for lease in queued:
            assert after.complete("new-worker", lease.item_id, {"position": lease.position})
        clock.advance(LEASE_S + 1)
        reclaimed = after.lease("new-worker", max_items=10, lease_s=LEASE_S)

        # Then the queued items ran at once, and the orphan once its lease had expired
        assert [le.position for le in queued] == [1, 2]
        assert [(le.item_id, le.attempt) for le in reclaimed] == [(orphan.item_id, 2)]
        assert after.complete("new-worker", orphan.item_id, {"position": 0})
        record = after.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.status is JobStatus.SUCCEEDED
    finally:
        after.close()


def test_a_result_of_several_megabytes_round_trips(db: Path) -> None:
    store = SqliteJobStore(db)
    try:
        job = make_job(store, 2)
        first, second = store.lease("w", max_items=2, lease_s=LEASE_S)
        big = {"frames": [{"index": i, "boxes": [[1.5, 2.5, 3.5, 4.5]] * 4} for i in range(40_000)]}

        assert store.complete("w", first.item_id, big)

        results = store.results(tenant=TENANT, job_id=job.id)
        assert results is not None
        assert results[0].result == big
        assert store.progress("w", second.item_id, frames_done=1, frames_planned=2)
    finally:
        store.close()


def _drain(path: str, worker: str, start: Barrier, out: multiprocessing.Queue[list[int]]) -> None:
    """Child process: lease and complete until the queue is empty; report the ids it completed."""
    store = SqliteJobStore(Path(path))
    done: list[int] = []
    start.wait()
    while leases := store.lease(worker, max_items=3, lease_s=60):
        for lease in leases:
            time.sleep(0.001)  # some work, so the two processes interleave
            if store.complete(worker, lease.item_id, {"by": worker}):
                done.append(lease.item_id)
    store.close()
    out.put(done)


def test_two_processes_drain_the_queue_exactly_once(db: Path) -> None:
    store = SqliteJobStore(db)
    jobs = [make_job(store, 50, key=f"k{i}") for i in range(4)]
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    out: multiprocessing.Queue[list[int]] = ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(str(db), f"proc{i}", start, out)) for i in range(2)]
    for proc in procs:
        proc.start()
    done = [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
        assert proc.exitcode == 0

    try:
        assert all(done), "both processes should have taken part"
        assert not set(done[0]) & set(done[1])
        assert len(done[0]) + len(done[1]) == 200
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM items WHERE attempts = 1 AND state = 'succeeded'").fetchone() == (
                200,
            )
        conn.close()
        for job in jobs:
            assert status_of(store, job.id) is JobStatus.SUCCEEDED
    finally:
        store.close()


def status_of(store: SqliteJobStore, job_id: str) -> JobStatus:
    record = store.get_job(tenant=TENANT, job_id=job_id)
    assert record is not None
    return record.status


def test_many_threads_lease_and_complete_each_item_once(db: Path) -> None:
    store = SqliteJobStore(db)
    counted = FinishedJobs()
    jobs = [make_job(store, 60, key=f"k{i}") for i in range(4)]
    completed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(worker: str) -> None:
        try:
            while leases := store.lease(worker, max_items=2, lease_s=60):
                for lease in leases:
                    assert store.progress(worker, lease.item_id, frames_done=1, frames_planned=1)
                    assert store.complete(worker, lease.item_id, {"by": worker})
                    with lock:
                        completed.append(lease.item_id)
                store.get_job(tenant=TENANT, job_id=jobs[0].id)  # API reads interleave with the writes
        except BaseException as exc:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"thread{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    try:
        assert errors == []
        assert len(completed) == len(set(completed)) == 240
        assert store.depth() == 0
        for job in jobs:
            results = store.results(tenant=TENANT, job_id=job.id)
            assert results is not None
            assert {r.state for r in results} == {ItemState.SUCCEEDED}
        assert counted.gained() == {"succeeded": 4}  # each job once, whichever thread finished its last item
    finally:
        store.close()


def test_closed_store_refuses_calls(db: Path) -> None:
    store = SqliteJobStore(db)
    store.close()

    with pytest.raises(RuntimeError, match="closed"):
        store.depth()
