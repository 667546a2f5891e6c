"""Contract tests for any ``JobStore``: subclass ``JobStoreContract`` and provide a ``store_factory`` fixture.

The factory builds a fresh, empty store that reads time from the ``clock`` fixture (a ``FakeClock``), so
lease expiry and retry delays are tested by advancing the clock, never by sleeping::

    class TestRedisJobStore(JobStoreContract):
        @pytest.fixture
        def store_factory(self, clock: FakeClock) -> Iterator[StoreFactory]: ...
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import pytest
from prometheus_client import REGISTRY

from models.prompts import PromptSet
from service.errors import ErrorCode
from service.metrics import JOB_OUTCOMES
from service.pipeline.options import SamplingMode
from service.pipeline.tracks import TrackerOptions
from service.queue.store import ItemState, JobRecord, JobStatus, JobStore
from service.spec.job import JobSpec, ModelPin
from service.spec.requests import ItemIn
from service.spec.thresholds import ClassThreshold, ThresholdsFile

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
LEASE_S = 10.0


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StoreFactory(Protocol):
    def __call__(self, *, max_attempts: int = 3, max_saved_thresholds: int = 256) -> JobStore: ...


class Corrupt(Protocol):
    """Overwrite a job's stored JSON in the raw storage, as a newer release or a hand edit might leave it:
    its request (``JobSpec.to_stored``) and/or the item at ``position``."""

    def __call__(
        self, store: JobStore, job_id: str, *, request: str | None = None, item: tuple[int, str] | None = None
    ) -> None: ...


# A stored request a newer release might write: a sampling mode this release does not know.
FROM_A_NEWER_RELEASE = '{"model":"m","fps":1.0,"sampling":"scene-cuts","threshold":0.5}'


def items(n: int, prefix: str = "img") -> list[ItemIn]:
    return [
        ItemIn.model_validate({"name": f"{prefix}{i}.jpg", "slots": [{"url": f"s3://bucket/{prefix}{i}.jpg"}]})
        for i in range(n)
    ]


def spec(model: str = "m", **fields: Any) -> JobSpec:
    """A job's spec; ``model`` tells one apart from another."""
    return JobSpec(model=model, fps=0.0, sampling=SamplingMode.EXACT, threshold=0.5, **fields)


SPEC = spec()


def make_job(
    store: JobStore, n: int = 3, *, tenant: str = TENANT, key: str = "key-1", prefix: str = "img"
) -> JobRecord:
    job, created = store.create_job(tenant=tenant, idem_key=key, spec=spec(f"m:{key}"), items=items(n, prefix))
    assert created
    return job


def jobs_finished() -> dict[str, float]:
    """``preannotate_jobs_finished_total`` by status, as this process counted so far."""
    return {s: REGISTRY.get_sample_value("preannotate_jobs_finished_total", {"status": s}) or 0.0 for s in JOB_OUTCOMES}


class FinishedJobs:
    """What ``preannotate_jobs_finished_total`` gained since this was made, without the zero series."""

    def __init__(self) -> None:
        self._before = jobs_finished()

    def gained(self) -> dict[str, float]:
        return {s: n - self._before[s] for s, n in jobs_finished().items() if n != self._before[s]}


def status(store: JobStore, job: JobRecord) -> JobStatus:
    record = store.get_job(tenant=job.tenant, job_id=job.id)
    assert record is not None
    return record.status


class JobStoreContract:
    """Behaviour every ``JobStore`` backend must share."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def store(self, store_factory: StoreFactory) -> JobStore:
        return store_factory()

    # --- create / get / idempotency / tenancy -----------------------------------------------------------

    def test_create_then_get(self, store: JobStore, clock: FakeClock) -> None:
        job = make_job(store, 3)

        got = store.get_job(tenant=TENANT, job_id=job.id)

        assert got == job
        assert job.status is JobStatus.QUEUED
        assert (job.items_total, job.items_succeeded, job.items_failed) == (3, 0, 0)
        assert (job.frames_planned, job.frames_done, job.errors) == (0, 0, ())
        assert job.spec == spec("m:key-1")
        assert job.created_at == clock.now
        assert store.depth() == 3

    def test_repeated_idem_key_returns_existing_job_and_creates_nothing(self, store: JobStore) -> None:
        job = make_job(store, 2)

        again, created = store.create_job(tenant=TENANT, idem_key="key-1", spec=spec("other"), items=items(5))

        assert not created
        assert again.id == job.id
        assert again.spec == job.spec
        assert store.depth() == 2

    def test_same_idem_key_for_another_tenant_is_another_job(self, store: JobStore) -> None:
        job = make_job(store, 2)

        other = make_job(store, 1, tenant=OTHER_TENANT)

        assert other.id != job.id
        assert store.depth() == 3

    def test_find_job_looks_up_the_idem_key_for_the_tenant(self, store: JobStore) -> None:
        job = make_job(store, 2)
        make_job(store, 1, tenant=OTHER_TENANT, key="other-key")

        assert store.find_job(tenant=TENANT, idem_key="key-1") == job
        assert store.find_job(tenant=OTHER_TENANT, idem_key="key-1") is None
        assert store.find_job(tenant=TENANT, idem_key="other-key") is None
        assert store.find_job(tenant=TENANT, idem_key="no-such-key") is None

    def test_a_forgotten_idem_key_makes_a_new_job_and_the_old_one_stays(self, store: JobStore) -> None:
        old = make_job(store, 2)

        assert not store.forget_idem_key(tenant=OTHER_TENANT, idem_key="key-1", job_id=old.id)  # not theirs
        assert store.find_job(tenant=TENANT, idem_key="key-1") == old
        assert store.forget_idem_key(tenant=TENANT, idem_key="key-1", job_id=old.id)
        assert store.find_job(tenant=TENANT, idem_key="key-1") is None
        new, created = store.create_job(tenant=TENANT, idem_key="key-1", spec=SPEC, items=items(1))

        assert created
        assert new.id != old.id
        assert store.find_job(tenant=TENANT, idem_key="key-1") == new
        assert store.get_job(tenant=TENANT, job_id=old.id) == old  # still readable by its id
        assert store.depth() == 3

    def test_forgetting_compares_the_job_so_a_late_caller_cannot_drop_a_newer_job(self, store: JobStore) -> None:
        old = make_job(store, 1)
        assert store.forget_idem_key(tenant=TENANT, idem_key="key-1", job_id=old.id)
        new, _ = store.create_job(tenant=TENANT, idem_key="key-1", spec=SPEC, items=items(1))

        # A concurrent request that also saw the old job forgets it after the first one replaced it: a no-op.
        assert not store.forget_idem_key(tenant=TENANT, idem_key="key-1", job_id=old.id)
        again, created = store.create_job(tenant=TENANT, idem_key="key-1", spec=SPEC, items=items(1))

        assert (again.id, created) == (new.id, False)
        assert not store.forget_idem_key(tenant=TENANT, idem_key="no-such-key", job_id=new.id)

    def test_list_jobs_pages_newest_first_and_shows_only_this_tenants(self, store: JobStore, clock: FakeClock) -> None:
        made = [make_job(store, 1, key=f"k{i}") for i in range(5)]  # one clock reading: creation order decides
        make_job(store, 1, tenant=OTHER_TENANT, key="theirs")

        pages, cursor = [], None
        while True:
            page, cursor = store.list_jobs(tenant=TENANT, limit=2, cursor=cursor)
            pages.append([job.id for job in page])
            if cursor is None:
                break

        assert pages == [[made[4].id, made[3].id], [made[2].id, made[1].id], [made[0].id]]
        assert store.list_jobs(tenant=TENANT, limit=5) == ([*reversed(made)], None)
        assert [j.tenant for j in store.list_jobs(tenant=OTHER_TENANT, limit=5)[0]] == [OTHER_TENANT]
        assert store.list_jobs(tenant="nobody", limit=5) == ([], None)
        for forged in ("not-a-cursor", "9" * 30, str(2**63), "-1", "1e3", "\uff11"):  # \uff11: a fullwidth digit
            with pytest.raises(ValueError, match="cursor"):
                store.list_jobs(tenant=TENANT, limit=2, cursor=forged)
        assert store.list_jobs(tenant=TENANT, limit=5, cursor=str(2**63 - 1)) == ([*reversed(made)], None)

    def test_results_filters_by_state_and_pages_by_position(self, store: JobStore) -> None:
        job = make_job(store, 5)
        leases = store.lease("w1", max_items=4, lease_s=LEASE_S)
        store.complete("w1", leases[0].item_id, {"frames": [0]})
        store.fail(
            "w1", leases[1].item_id, code="corrupt_media", message="img1.jpg: bad", retryable=False, retry_in_s=0
        )
        store.complete("w1", leases[3].item_id, {"frames": [3]})
        done = {ItemState.SUCCEEDED, ItemState.FAILED}

        finished = store.results(tenant=TENANT, job_id=job.id, states=done)
        first = store.results(tenant=TENANT, job_id=job.id, states=done, limit=2)
        rest = store.results(tenant=TENANT, job_id=job.id, states=done, after=1, limit=2)
        open_items = store.results(tenant=TENANT, job_id=job.id, states={ItemState.QUEUED, ItemState.LEASED})

        assert finished is not None
        assert [(r.position, r.state, r.result) for r in finished] == [
            (0, ItemState.SUCCEEDED, {"frames": [0]}),
            (1, ItemState.FAILED, None),
            (3, ItemState.SUCCEEDED, {"frames": [3]}),
        ]
        assert finished[1].error is not None
        assert finished[1].error.code == "corrupt_media"
        assert first == finished[:2]
        assert rest == finished[2:]
        assert open_items is not None
        assert [(r.position, r.state) for r in open_items] == [(2, ItemState.LEASED), (4, ItemState.QUEUED)]
        assert store.results(tenant=TENANT, job_id=job.id, states=set()) == []
        assert store.results(tenant=TENANT, job_id=job.id) == [*finished[:2], open_items[0], finished[2], open_items[1]]
        assert store.results(tenant=OTHER_TENANT, job_id=job.id, states=done) is None

    def test_another_tenants_job_is_invisible(self, store: JobStore) -> None:
        job = make_job(store, 2)

        assert store.get_job(tenant=OTHER_TENANT, job_id=job.id) is None
        assert store.results(tenant=OTHER_TENANT, job_id=job.id) is None
        assert store.cancel_job(tenant=OTHER_TENANT, job_id=job.id) is None
        assert store.get_job(tenant=TENANT, job_id="no-such-job") is None
        assert status(store, job) is JobStatus.QUEUED  # the foreign cancel did nothing

    def test_item_spec_is_the_submitted_item_for_its_tenant_only(self, store: JobStore) -> None:
        presigned = ItemIn.model_validate(
            {"name": "v.mp4", "slots": [{"name": "cam", "url": "https://cdn.example.com/v.mp4?X-Amz-Signature=abc"}]}
        )
        job, _ = store.create_job(tenant=TENANT, idem_key="k", spec=SPEC, items=[*items(2), presigned])

        assert store.item_spec(tenant=TENANT, job_id=job.id, position=2) == presigned  # query string kept
        assert store.item_spec(tenant=TENANT, job_id=job.id, position=0) == items(2)[0]
        assert store.item_spec(tenant=TENANT, job_id=job.id, position=3) is None
        assert store.item_spec(tenant=TENANT, job_id=job.id, position=-1) is None
        assert store.item_spec(tenant=OTHER_TENANT, job_id=job.id, position=0) is None
        assert store.item_spec(tenant=TENANT, job_id="no-such-job", position=0) is None

    def test_an_unparseable_stored_item_has_no_spec(self, store: JobStore, corrupt: Corrupt) -> None:
        job = make_job(store, 2)
        corrupt(store, job.id, item=(1, '{"name": "img1.jpg", "slots": [{"url": 7}]}'))

        assert store.item_spec(tenant=TENANT, job_id=job.id, position=1) is None
        assert store.item_spec(tenant=TENANT, job_id=job.id, position=0) is not None

    # --- leasing ----------------------------------------------------------------------------------------

    def test_lease_takes_oldest_job_first_in_position_order(self, store: JobStore, clock: FakeClock) -> None:
        first = make_job(store, 3, key="first", prefix="a")
        clock.advance(1)
        second = make_job(store, 2, key="second", prefix="b")

        batch1 = store.lease("w1", max_items=2, lease_s=LEASE_S)
        batch2 = store.lease("w2", max_items=10, lease_s=LEASE_S)

        assert [(le.job_id, le.position) for le in batch1] == [(first.id, 0), (first.id, 1)]
        assert [(le.job_id, le.position) for le in batch2] == [(first.id, 2), (second.id, 0), (second.id, 1)]
        assert batch1[0].item.model_dump(exclude_none=True) == {
            "name": "a0.jpg",
            "slots": [{"name": "0", "url": "s3://bucket/a0.jpg"}],
        }
        assert batch1[0].spec == first.spec
        assert {le.attempt for le in batch1 + batch2} == {1}
        assert store.lease("w3", max_items=10, lease_s=LEASE_S) == []
        assert store.depth() == 5  # leased items still count
        assert status(store, first) is JobStatus.RUNNING

    def test_expired_lease_is_requeued_then_fails_after_max_attempts(
        self, store_factory: StoreFactory, clock: FakeClock
    ) -> None:
        store = store_factory(max_attempts=2)
        job = make_job(store, 1)

        (first,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
        assert store.lease("w2", max_items=1, lease_s=LEASE_S) == []  # not expired yet
        clock.advance(LEASE_S + 1)
        (second,) = store.lease("w2", max_items=1, lease_s=LEASE_S)
        clock.advance(LEASE_S + 1)
        assert store.lease("w3", max_items=1, lease_s=LEASE_S) == []

        assert (first.item_id, first.attempt) == (second.item_id, 1)
        assert second.attempt == 2
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.status is JobStatus.FAILED
        (error,) = record.errors
        assert (error.item, error.code) == ("img0.jpg", "lease_expired")
        assert "2" in error.message
        assert store.depth() == 0

    def test_heartbeat_keeps_the_lease_past_its_first_expiry(self, store: JobStore, clock: FakeClock) -> None:
        make_job(store, 2)
        mine = store.lease("w1", max_items=1, lease_s=LEASE_S)[0].item_id
        theirs = store.lease("w2", max_items=1, lease_s=LEASE_S)[0].item_id

        clock.advance(LEASE_S - 2)
        held = store.heartbeat("w1", [mine, theirs], lease_s=LEASE_S)
        clock.advance(LEASE_S - 2)  # past the first lease_until, within the renewed one

        assert held == [mine]
        reclaimed = store.lease("w3", max_items=10, lease_s=LEASE_S)
        assert [le.item_id for le in reclaimed] == [theirs]  # w2 did not heartbeat
        assert store.complete("w1", mine, {"boxes": []})

    def test_lost_lease_cannot_complete(self, store: JobStore, clock: FakeClock) -> None:
        job = make_job(store, 1)
        (lost,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
        clock.advance(LEASE_S + 1)
        (taken,) = store.lease("w2", max_items=1, lease_s=LEASE_S)

        assert not store.progress("w1", lost.item_id, frames_done=1, frames_planned=2)
        assert store.heartbeat("w1", [lost.item_id], lease_s=LEASE_S) == []
        assert not store.complete("w1", lost.item_id, {"by": "w1"})
        assert store.complete("w2", taken.item_id, {"by": "w2"})
        assert not store.complete("w2", taken.item_id, {"by": "w2 again"})  # no double results

        results = store.results(tenant=TENANT, job_id=job.id)
        assert results is not None
        assert [(r.state, r.result) for r in results] == [(ItemState.SUCCEEDED, {"by": "w2"})]
        assert status(store, job) is JobStatus.SUCCEEDED

    def test_retryable_failure_waits_for_its_retry_delay(self, store: JobStore, clock: FakeClock) -> None:
        job = make_job(store, 1)
        (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)

        store.fail("w1", lease.item_id, code="fetch_failed", message="img0.jpg: 503", retryable=True, retry_in_s=30)

        assert status(store, job) is JobStatus.RUNNING
        assert store.depth() == 1
        assert not store.complete("w1", lease.item_id, {})  # the lease was released
        clock.advance(29)
        assert store.lease("w2", max_items=1, lease_s=LEASE_S) == []
        clock.advance(1)
        (retry,) = store.lease("w2", max_items=1, lease_s=LEASE_S)
        assert (retry.item_id, retry.attempt) == (lease.item_id, 2)

    def test_retryable_failure_fails_for_good_on_the_last_attempt(
        self, store_factory: StoreFactory, clock: FakeClock
    ) -> None:
        store = store_factory(max_attempts=2)
        job = make_job(store, 1)
        for attempt in (1, 2):
            (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
            assert lease.attempt == attempt
            store.fail("w1", lease.item_id, code="fetch_failed", message="img0.jpg: 503", retryable=True, retry_in_s=0)

        assert store.lease("w1", max_items=1, lease_s=LEASE_S) == []
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.status is JobStatus.FAILED
        assert [(e.item, e.code, e.message) for e in record.errors] == [("img0.jpg", "fetch_failed", "img0.jpg: 503")]

    def test_non_retryable_failure_fails_at_once(self, store: JobStore) -> None:
        job = make_job(store, 2)
        first, second = store.lease("w1", max_items=2, lease_s=LEASE_S)

        store.fail("w1", first.item_id, code="corrupt_media", message="img0.jpg: bad", retryable=False, retry_in_s=60)
        store.complete("w1", second.item_id, {"boxes": [1]})

        results = store.results(tenant=TENANT, job_id=job.id)
        assert results is not None
        assert results[0].state is ItemState.FAILED
        assert results[0].error is not None
        assert (results[0].error.code, results[0].error.message) == ("corrupt_media", "img0.jpg: bad")
        assert (results[1].state, results[1].result, results[1].error) == (ItemState.SUCCEEDED, {"boxes": [1]}, None)
        assert status(store, job) is JobStatus.PARTIALLY_FAILED
        assert store.depth() == 0

    # --- release ----------------------------------------------------------------------------------------

    def test_release_hands_items_back_without_spending_an_attempt(self, store: JobStore) -> None:
        make_job(store, 3)
        first, second = store.lease("w1", max_items=2, lease_s=LEASE_S)

        assert store.release("w1", []) == []
        assert store.release("w2", [first.item_id]) == []  # not the holder
        assert store.release("w1", [999, first.item_id]) == [first.item_id]
        assert store.release("w1", [first.item_id]) == []  # already handed back

        assert store.heartbeat("w1", [first.item_id, second.item_id], lease_s=LEASE_S) == [second.item_id]
        assert not store.complete("w1", first.item_id, {"late": True})
        assert store.depth() == 3
        again, third = store.lease("w2", max_items=2, lease_s=LEASE_S)
        assert (again.item_id, again.attempt) == (first.item_id, 1)  # ahead of new work, attempt uncounted
        assert third.position == 2

    def test_a_released_item_is_queued_again(self, store: JobStore) -> None:
        job = make_job(store, 1)
        (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)

        assert store.release("w1", [lease.item_id]) == [lease.item_id]

        assert status(store, job) is JobStatus.QUEUED  # the only attempt was given back
        (again,) = store.lease("w2", max_items=1, lease_s=LEASE_S)
        assert store.complete("w2", again.item_id, {"by": "w2"})
        assert status(store, job) is JobStatus.SUCCEEDED

    def test_release_leaves_lost_and_cancelled_items_alone(self, store: JobStore, clock: FakeClock) -> None:
        lost_job = make_job(store, 1, key="lost")
        (lost,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
        clock.advance(LEASE_S + 1)
        (taken,) = store.lease("w2", max_items=1, lease_s=LEASE_S)
        cancelled_job = make_job(store, 1, key="cancelled", prefix="c")
        (running,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
        store.cancel_job(tenant=TENANT, job_id=cancelled_job.id)

        assert store.release("w1", [lost.item_id, running.item_id]) == []

        assert (taken.item_id, taken.attempt) == (lost.item_id, 2)
        assert store.complete("w2", taken.item_id, {"by": "w2"})
        assert status(store, lost_job) is JobStatus.SUCCEEDED
        assert status(store, cancelled_job) is JobStatus.CANCELLED
        assert store.depth() == 0

    # --- cancel -----------------------------------------------------------------------------------------

    def test_cancel_stops_queued_and_leased_items(self, store: JobStore) -> None:
        job = make_job(store, 3)
        done, running = store.lease("w1", max_items=2, lease_s=LEASE_S)
        assert store.complete("w1", done.item_id, {"ok": True})

        cancelled = store.cancel_job(tenant=TENANT, job_id=job.id)

        assert cancelled is not None
        assert cancelled.status is JobStatus.CANCELLED
        assert not store.progress("w1", running.item_id, frames_done=1, frames_planned=9)
        assert store.heartbeat("w1", [running.item_id], lease_s=LEASE_S) == []
        assert not store.complete("w1", running.item_id, {"late": True})
        assert store.lease("w2", max_items=10, lease_s=LEASE_S) == []
        assert store.depth() == 0
        results = store.results(tenant=TENANT, job_id=job.id)
        assert results is not None
        assert [r.state for r in results] == [ItemState.SUCCEEDED, ItemState.CANCELLED, ItemState.CANCELLED]
        assert results[0].result == {"ok": True}
        assert status(store, job) is JobStatus.CANCELLED

    def test_cancelling_a_finished_job_changes_nothing(self, store: JobStore) -> None:
        job = make_job(store, 1)
        (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
        store.complete("w1", lease.item_id, {})

        record = store.cancel_job(tenant=TENANT, job_id=job.id)

        assert record is not None
        assert record.status is JobStatus.SUCCEEDED

    # --- delete, retention ------------------------------------------------------------------------------

    def test_deleting_a_finished_job_removes_it_and_frees_its_key(self, store: JobStore) -> None:
        job, other = make_job(store, 2), make_job(store, 1, key="key-2", prefix="other")
        for lease in store.lease("w1", max_items=2, lease_s=LEASE_S):
            assert store.complete("w1", lease.item_id, {"item": lease.position})

        assert store.delete_job(tenant=TENANT, job_id=job.id) is True

        assert store.get_job(tenant=TENANT, job_id=job.id) is None
        assert store.results(tenant=TENANT, job_id=job.id) is None
        assert [j.id for j in store.list_jobs(tenant=TENANT, limit=10)[0]] == [other.id]
        assert store.delete_job(tenant=TENANT, job_id=job.id) is None  # gone: a second DELETE is a 404
        again, created = store.create_job(tenant=TENANT, idem_key="key-1", spec=SPEC, items=items(1))
        assert created
        assert again.id != job.id
        assert store.get_job(tenant=TENANT, job_id=other.id) is not None
        assert store.depth() == 2  # the other job's item and the new one

    def test_a_job_with_open_items_is_not_deleted_until_cancelled(self, store: JobStore) -> None:
        job = make_job(store, 2)
        store.lease("w1", max_items=1, lease_s=LEASE_S)

        assert store.delete_job(tenant=TENANT, job_id=job.id) is False
        assert status(store, job) is JobStatus.RUNNING
        assert store.depth() == 2

        store.cancel_job(tenant=TENANT, job_id=job.id)
        assert store.delete_job(tenant=TENANT, job_id=job.id) is True
        assert store.depth() == 0

    def test_an_unknown_or_foreign_job_is_not_deleted(self, store: JobStore) -> None:
        job = make_job(store, 1)
        store.cancel_job(tenant=TENANT, job_id=job.id)

        assert store.delete_job(tenant=OTHER_TENANT, job_id=job.id) is None
        assert store.delete_job(tenant=TENANT, job_id="no-such-job") is None
        assert store.get_job(tenant=TENANT, job_id=job.id) is not None

    def test_jobs_past_the_retention_are_removed_oldest_first(self, store: JobStore, clock: FakeClock) -> None:
        day_s = 86400.0
        old = make_job(store, 1, key="old")
        (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
        store.complete("w1", lease.item_id, {"kept": False})
        clock.advance(1 * day_s)
        young = make_job(store, 1, key="young", prefix="young")
        clock.advance(6 * day_s - 1)

        assert store.expire_jobs() == 0  # a second short of 7 days: nothing is due

        clock.advance(1)
        assert store.expire_jobs(limit=10) == 1
        assert store.get_job(tenant=TENANT, job_id=old.id) is None
        assert store.results(tenant=TENANT, job_id=old.id) is None
        assert store.get_job(tenant=TENANT, job_id=young.id) is not None
        assert store.expire_jobs() == 0
        again, created = store.create_job(tenant=TENANT, idem_key="old", spec=SPEC, items=items(1))
        assert created
        assert again.id != old.id

    def test_expiry_takes_running_jobs_too_and_their_workers_lose_the_item(
        self, store: JobStore, clock: FakeClock
    ) -> None:
        make_job(store, 2)
        first, _ = store.lease("w1", max_items=2, lease_s=8 * 86400.0)
        clock.advance(7 * 86400.0)

        assert store.expire_jobs(limit=1) == 1

        assert not store.complete("w1", first.item_id, {"late": True})
        assert store.depth() == 0
        assert store.lease("w2", max_items=5, lease_s=LEASE_S) == []

    # --- status, progress, results ----------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("outcomes", "expected"),
        [
            (["queued", "queued"], JobStatus.QUEUED),
            (["leased", "queued"], JobStatus.RUNNING),
            (["succeeded", "queued"], JobStatus.RUNNING),
            (["retrying", "succeeded"], JobStatus.RUNNING),
            (["succeeded", "succeeded"], JobStatus.SUCCEEDED),
            (["failed", "failed"], JobStatus.FAILED),
            (["succeeded", "failed"], JobStatus.PARTIALLY_FAILED),
        ],
    )
    def test_status_is_derived_from_item_states(
        self, store: JobStore, outcomes: list[str], expected: JobStatus
    ) -> None:
        # Given a job whose items end up in the listed states ("queued" ones come last and are never leased)
        job = make_job(store, len(outcomes))
        to_lease = len(outcomes) - outcomes.count("queued")
        leases = store.lease("w1", max_items=to_lease, lease_s=LEASE_S) if to_lease else []
        # When each leased item is driven to its outcome ("leased" ones are left running)
        for lease, outcome in zip(leases, outcomes, strict=False):
            if outcome == "succeeded":
                store.complete("w1", lease.item_id, {})
            elif outcome == "failed":
                store.fail("w1", lease.item_id, code="corrupt_media", message="x", retryable=False, retry_in_s=0)
            elif outcome == "retrying":
                store.fail("w1", lease.item_id, code="fetch_failed", message="x", retryable=True, retry_in_s=60)
        # Then
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.status is expected
        assert record.items_succeeded == outcomes.count("succeeded")
        assert record.items_failed == outcomes.count("failed")

    def test_progress_is_summed_over_items(self, store: JobStore) -> None:
        job = make_job(store, 2)
        first, second = store.lease("w1", max_items=2, lease_s=LEASE_S)

        assert store.progress("w1", first.item_id, frames_done=3, frames_planned=10)
        assert store.progress("w1", second.item_id, frames_done=5, frames_planned=20)
        assert store.progress("w1", first.item_id, frames_done=4, frames_planned=10)

        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert (record.frames_done, record.frames_planned) == (9, 30)

    def test_results_and_errors_come_in_position_order(self, store: JobStore) -> None:
        job = make_job(store, 4)
        leases = store.lease("w1", max_items=4, lease_s=LEASE_S)

        # Finish them out of order, so storage order differs from position order.
        for lease in reversed(leases):
            if lease.position % 2:
                store.fail(
                    "w1", lease.item_id, code=f"code{lease.position}", message="m", retryable=False, retry_in_s=0
                )
            else:
                store.complete("w1", lease.item_id, {"position": lease.position})

        results = store.results(tenant=TENANT, job_id=job.id)
        assert results is not None
        assert [(r.position, r.name) for r in results] == [(i, f"img{i}.jpg") for i in range(4)]
        assert [r.result for r in results] == [{"position": 0}, None, {"position": 2}, None]
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert [(e.item, e.code) for e in record.errors] == [("img1.jpg", "code1"), ("img3.jpg", "code3")]

    def test_depth_counts_every_tenant(self, store: JobStore) -> None:
        make_job(store, 2)
        make_job(store, 3, tenant=OTHER_TENANT)
        (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
        store.complete("w1", lease.item_id, {})

        assert store.depth() == 4

    # --- webhook delivery ids ---------------------------------------------------------------------------

    def test_the_first_claim_of_a_delivery_id_holds_it(self, store: JobStore) -> None:
        assert store.claim_delivery("generic:d-1", "body:aaa", ttl_s=600) == "body:aaa"
        # a replay, whatever it would make, is told who claimed the id first
        assert store.claim_delivery("generic:d-1", "body:bbb", ttl_s=600) == "body:aaa"
        assert store.claim_delivery("generic:d-1", "body:aaa", ttl_s=600) == "body:aaa"
        assert store.claim_delivery("generic:d-2", "body:bbb", ttl_s=600) == "body:bbb"

    # --- the job outcome metric -------------------------------------------------------------------------

    def test_the_first_pin_of_an_unpinned_job_stands(self, store: JobStore) -> None:
        cold = spec("onnx:/m.onnx", outputs=())
        job, _ = store.create_job(tenant=TENANT, idem_key="cold", spec=cold, items=items(2))
        first = store.pin_model(job.id, version="m-v1", class_names=["car", "person"])
        late = store.pin_model(job.id, version="m-v2", class_names=["car"])  # a second worker, a newer model
        assert first == late == ModelPin("m-v1", ("car", "person"))  # the loser is told which pin stands
        assert store.pin_model("no-such-job", version="m-v1", class_names=[]) is None

        (lease,) = store.lease("w", max_items=1, lease_s=LEASE_S)
        pinned = cold.pinned("m-v1", ("car", "person"))
        assert lease.spec == pinned
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.spec == pinned
        assert record.spec.to_stored() == {
            **cold.to_stored(),
            "model_version": "m-v1",
            "class_names": ["car", "person"],
        }

    def test_a_pin_records_that_the_model_makes_masks(self, store: JobStore) -> None:
        """A ``-seg`` model's job is served with mask shapes in its default LS config / Encord ontology."""
        cold = spec("onnx:/m-seg.onnx", outputs=())
        job, _ = store.create_job(tenant=TENANT, idem_key="cold-seg", spec=cold, items=items(1))
        pin = store.pin_model(job.id, version="m-v1", class_names=["car"], makes_masks=True)
        assert pin == ModelPin("m-v1", ("car",), makes_masks=True)
        assert store.pin_model(job.id, version="m-v2", class_names=["car"]) == pin  # the first pin stands
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.spec.makes_masks
        assert record.spec == cold.pinned("m-v1", ("car",), makes_masks=True)
        assert record.spec.to_stored() == {
            **cold.to_stored(),
            "model_version": "m-v1",
            "class_names": ["car"],
            "model_makes_masks": True,
        }
        (lease,) = store.lease("w", max_items=1, lease_s=LEASE_S)
        assert lease.spec.makes_masks

    def test_a_pinned_job_is_left_alone(self, store: JobStore) -> None:
        warm = spec(model_version="m-v1", class_names=("face",))
        job, _ = store.create_job(tenant=TENANT, idem_key="warm", spec=warm, items=items(1))
        assert store.pin_model(job.id, version="m-v2", class_names=["car"]) == ModelPin("m-v1", ("face",))
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.spec == warm

    def test_the_first_project_prompts_pin_of_an_unpinned_job_stands(self, store: JobStore) -> None:
        """A cold-start open-vocabulary job: the first worker's reading of the project stands, key for key."""
        cold = spec("fake:gridprompts", outputs=())
        job, _ = store.create_job(tenant=TENANT, idem_key="cold-prompts", spec=cold, items=items(2))
        first, later = PromptSet.parse("Vehicle=van|truck, Car"), PromptSet.parse("Car, Bus")
        assert store.pin_prompts(job.id, first) == first
        assert store.pin_prompts(job.id, later) == first  # a second worker read the project after an edit
        assert store.pin_prompts("no-such-job", first) is None

        (lease,) = store.lease("w", max_items=1, lease_s=LEASE_S)
        assert lease.spec == cold.model_copy(update={"prompts": first})
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.spec.to_stored() == {**cold.to_stored(), "prompts": first.to_json()}

    def test_prompts_are_not_pinned_to_a_job_with_its_own_or_a_pinned_model(self, store: JobStore) -> None:
        own = spec("fake:gridprompts", outputs=(), prompts=PromptSet.parse("person"))
        warm = spec(model_version="m-v1", class_names=("face",))
        mine, _ = store.create_job(tenant=TENANT, idem_key="own", spec=own, items=items(1))
        pinned, _ = store.create_job(tenant=TENANT, idem_key="warm", spec=warm, items=items(1))
        assert store.pin_prompts(mine.id, PromptSet.parse("car")) == own.prompts
        assert store.pin_prompts(pinned.id, PromptSet.parse("car")) is None
        for job, expected in ((mine, own), (pinned, warm)):
            record = store.get_job(tenant=TENANT, job_id=job.id)
            assert record is not None
            assert record.spec == expected

    # --- calibrated thresholds by model version ----------------------------------------------------------

    def test_saved_thresholds_are_read_back_for_their_version_only(self, store: JobStore) -> None:
        first = ThresholdsFile(model_version="m-v1", classes={"car": ClassThreshold(threshold=0.3, f1=0.8)})
        assert store.thresholds_for("m-v1") is None
        assert store.saved_thresholds() == {}
        store.save_thresholds("m-v1", first)
        assert store.thresholds_for("m-v1") == first
        assert store.thresholds_for("m-v2") is None  # another version never inherits them
        assert store.thresholds_for("m-v1+ab12") is None
        replaced = first.model_copy(update={"classes": {"car": ClassThreshold(threshold=0.6)}})
        store.save_thresholds("m-v1", replaced)
        assert store.saved_thresholds() == {"m-v1": replaced}

    def test_saved_thresholds_are_bounded_forgetting_the_least_recently_saved(
        self, store_factory: StoreFactory, clock: FakeClock
    ) -> None:
        store = store_factory(max_saved_thresholds=2)
        for version in ("v1", "v2", "v3"):
            store.save_thresholds(version, ThresholdsFile(model_version=version))
            clock.advance(1.0)
        assert set(store.saved_thresholds()) == {"v2", "v3"}
        store.save_thresholds("v2", ThresholdsFile(model_version="v2"))  # saved again: now the newest
        clock.advance(1.0)
        store.save_thresholds("v4", ThresholdsFile(model_version="v4"))
        assert set(store.saved_thresholds()) == {"v2", "v4"}
        assert store.thresholds_for("v3") is None

    def test_thresholds_need_a_model_version(self, store: JobStore) -> None:
        with pytest.raises(ValueError, match="model version"):
            store.save_thresholds(" ", ThresholdsFile())

    def test_a_pin_brings_the_versions_thresholds_unless_the_job_has_its_own(self, store: JobStore) -> None:
        cold = spec("onnx:/m.onnx", outputs=())
        job, _ = store.create_job(tenant=TENANT, idem_key="cold-thr", spec=cold, items=items(1))
        store.pin_model(job.id, version="m-v1", class_names=["car"], class_thresholds={"car": 0.3})
        late = store.pin_model(job.id, version="m-v2", class_names=["car"], class_thresholds={"car": 0.9})
        assert late == ModelPin("m-v1", ("car",))
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.spec == cold.pinned("m-v1", ("car",)).model_copy(update={"class_thresholds": {"car": 0.3}})

        own = spec("onnx:/m.onnx", outputs=(), class_thresholds={"car": 0.7})
        job, _ = store.create_job(tenant=TENANT, idem_key="own-thr", spec=own, items=items(1))
        store.pin_model(job.id, version="m-v1", class_names=["car"], class_thresholds={"car": 0.3})
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.spec.class_thresholds == {"car": 0.7}
        assert record.spec.model_version == "m-v1"

    def test_the_first_segmenter_pin_of_a_job_stands(self, store: JobStore) -> None:
        """Distributed API pods load no segmenter: the first worker that runs the job pins its version."""
        cold = spec("onnx:/m.onnx", outputs=(), segmenter="hf:/sam")
        job, _ = store.create_job(tenant=TENANT, idem_key="cold-sam", spec=cold, items=items(1))
        first = store.pin_segmenter(job.id, version="sam-v1")
        late = store.pin_segmenter(job.id, version="sam-v2")  # a second worker, newer weights
        assert first == late == "sam-v1"  # the loser is told which pin stands
        assert store.pin_segmenter("no-such-job", version="sam-v1") is None

        pinned = cold.model_copy(update={"segmenter_version": "sam-v1"})
        (lease,) = store.lease("w", max_items=1, lease_s=LEASE_S)
        assert lease.spec == pinned
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.spec == pinned
        assert record.spec.to_stored() == {**cold.to_stored(), "segmenter_version": "sam-v1"}

    def test_a_job_without_a_segmenter_gets_no_segmenter_pin(self, store: JobStore) -> None:
        boxes = spec("onnx:/m.onnx", outputs=())
        job, _ = store.create_job(tenant=TENANT, idem_key="boxes", spec=boxes, items=items(1))
        assert store.pin_segmenter(job.id, version="sam-v1") is None
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.spec.to_stored() == boxes.to_stored()  # stored form (and dedupe keys) untouched

    def test_a_job_is_counted_once_when_its_last_item_succeeds(self, store: JobStore) -> None:
        counted = FinishedJobs()
        make_job(store, 2)
        first, second = store.lease("w1", max_items=2, lease_s=LEASE_S)

        assert store.complete("w1", first.item_id, {})
        assert counted.gained() == {}
        assert store.complete("w1", second.item_id, {})
        assert not store.complete("w1", second.item_id, {})  # a repeat stores and counts nothing
        assert store.cancel_job(tenant=TENANT, job_id=first.job_id) is not None  # finished: nothing to cancel

        assert counted.gained() == {"succeeded": 1}

    def test_failed_and_partially_failed_jobs_are_counted_by_their_last_item(self, store: JobStore) -> None:
        counted = FinishedJobs()
        make_job(store, 2, key="mixed")
        make_job(store, 1, key="bad", prefix="b")
        ok, broken, bad = store.lease("w1", max_items=3, lease_s=LEASE_S)

        store.fail("w1", broken.item_id, code="corrupt_media", message="x", retryable=False, retry_in_s=0)
        store.fail("w1", bad.item_id, code="fetch_failed", message="x", retryable=True, retry_in_s=0)  # retried
        assert counted.gained() == {}
        store.complete("w1", ok.item_id, {})
        (again,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
        store.fail("w1", again.item_id, code="corrupt_media", message="x", retryable=False, retry_in_s=0)

        assert counted.gained() == {"partially_failed": 1, "failed": 1}

    def test_a_job_whose_last_lease_expires_for_good_is_counted_failed(
        self, store_factory: StoreFactory, clock: FakeClock
    ) -> None:
        store = store_factory(max_attempts=1)
        counted = FinishedJobs()
        make_job(store, 1)
        store.lease("w1", max_items=1, lease_s=LEASE_S)
        clock.advance(LEASE_S + 1)

        assert store.lease("w2", max_items=1, lease_s=LEASE_S) == []
        assert counted.gained() == {"failed": 1}

    def test_a_cancelled_job_is_counted_once(self, store: JobStore) -> None:
        counted = FinishedJobs()
        job = make_job(store, 2)
        (running,) = store.lease("w1", max_items=1, lease_s=LEASE_S)

        store.cancel_job(tenant=TENANT, job_id=job.id)
        store.cancel_job(tenant=TENANT, job_id=job.id)
        assert not store.complete("w1", running.item_id, {})

        assert counted.gained() == {"cancelled": 1}

    def test_settled_items_counts_what_left_the_queue_for_good(
        self, store_factory: StoreFactory, clock: FakeClock
    ) -> None:
        store = store_factory(max_attempts=1)
        start = store.settled_items()
        make_job(store, 4)
        done, broken, retried, _lapsed = store.lease("w1", max_items=4, lease_s=LEASE_S)

        store.complete("w1", done.item_id, {})
        store.fail("w1", broken.item_id, code="corrupt_media", message="x", retryable=False, retry_in_s=0)
        store.release("w1", [retried.item_id])  # back in the queue: not settled
        assert store.settled_items() - start == 2
        clock.advance(LEASE_S + 1)
        store.lease("w2", max_items=1, lease_s=LEASE_S)  # the lapsed lease fails for good (one attempt)

        assert store.settled_items() - start == 3

    # --- stored jobs of other releases ----------------------------------------------------------------

    @pytest.mark.parametrize(
        ("tracks", "expected"),
        [
            # pinned by a release whose tracker gated on IoU and counted gaps in sampled frames
            ({"enabled": True, "iou": 0.3, "max_gap": 2, "min_length": 2}, TrackerOptions(min_length=2)),
            ({"enabled": False, "iou": 0.3, "max_gap": 2, "min_length": 1}, None),
            # pinned by this release
            (
                {"enabled": True, "max_gap_s": 4.0, "distance_gate": 0.9, "max_speed": 3.0, "offline": False,
                 "join_gap_s": 0.0, "appearance": False, "min_length": 1, "high_score": 0.6},
                TrackerOptions(
                    max_gap_s=4.0, distance_gate=0.9, max_speed=3.0, offline=False, join_gap_s=0.0,
                    appearance=False, high_score=0.6,
                ),
            ),
        ],
    )  # fmt: skip
    def test_a_job_leases_with_the_tracker_it_was_pinned_with(
        self, store: JobStore, corrupt: Corrupt, tracks: dict[str, Any], expected: TrackerOptions | None
    ) -> None:
        job = make_job(store, 1)
        stored = {"model": "m", "model_version": None, "fps": 1.0, "sampling": "exact", "threshold": 0.5}
        corrupt(store, job.id, request=json.dumps(stored | {"tracks": tracks}))

        (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)

        assert lease.spec.tracker_or(TrackerOptions(max_gap_s=99.0)) == expected

    # --- stored jobs this release cannot parse --------------------------------------------------------

    @pytest.mark.parametrize("request_json", [FROM_A_NEWER_RELEASE, '{"model": "m", "fps": ', "[]"])
    def test_a_job_whose_stored_request_no_longer_parses_fails_and_the_queue_goes_on(
        self, store: JobStore, corrupt: Corrupt, clock: FakeClock, request_json: str
    ) -> None:
        bad = make_job(store, 3, key="bad", prefix="x")
        clock.advance(1)
        good = make_job(store, 2, key="good", prefix="g")
        corrupt(store, bad.id, request=request_json)
        settled, finished = store.settled_items(), FinishedJobs()

        # Read before any worker met it: reported failed, not raised.
        before = store.get_job(tenant=TENANT, job_id=bad.id)
        assert before is not None
        assert before.status is JobStatus.FAILED
        assert [e.code for e in before.errors] == ["invalid_stored_job"] * 3
        shown = store.results(tenant=TENANT, job_id=bad.id, states=[ItemState.FAILED], after=0, limit=1)
        assert [(r.position, r.state, r.error and r.error.code) for r in shown or []] == [
            (1, ItemState.FAILED, "invalid_stored_job")
        ]
        assert store.results(tenant=TENANT, job_id=bad.id, states=[ItemState.QUEUED, ItemState.LEASED]) == []
        assert [r.state for r in store.results(tenant=TENANT, job_id=bad.id) or []] == [ItemState.FAILED] * 3
        assert store.results(tenant=TENANT, job_id=good.id, states=[ItemState.QUEUED]) != []

        leased = store.lease("w1", max_items=2, lease_s=LEASE_S)

        assert [(le.job_id, le.position) for le in leased] == [(good.id, 0), (good.id, 1)]
        assert store.lease("w2", max_items=5, lease_s=LEASE_S) == []
        record = store.get_job(tenant=TENANT, job_id=bad.id)
        assert record is not None
        assert (record.status, record.items_failed, record.items_total) == (JobStatus.FAILED, 3, 3)
        assert [(e.item, e.code) for e in record.errors] == [(f"x{i}.jpg", "invalid_stored_job") for i in range(3)]
        assert record.errors == before.errors  # what reads showed before is what leasing did
        assert bad.id in record.errors[0].message
        assert "resubmit" in record.errors[0].message
        results = store.results(tenant=TENANT, job_id=bad.id)
        assert results is not None
        assert [r.error for r in results] == list(record.errors)
        assert [(r.state, r.error and r.error.code) for r in results] == [(ItemState.FAILED, "invalid_stored_job")] * 3
        page, _ = store.list_jobs(tenant=TENANT, limit=10)
        assert [(j.id, j.status) for j in page] == [(good.id, JobStatus.RUNNING), (bad.id, JobStatus.FAILED)]
        assert store.find_job(tenant=TENANT, idem_key="bad") == record
        assert store.depth() == 2  # the good job's leased items
        assert store.settled_items() - settled == 3
        assert finished.gained() == {"failed": 1.0}
        assert ErrorCode.INVALID_STORED_JOB.code == "invalid_stored_job"
        assert not ErrorCode.INVALID_STORED_JOB.retryable

    def test_an_item_whose_stored_form_no_longer_parses_fails_alone(self, store: JobStore, corrupt: Corrupt) -> None:
        job = make_job(store, 3)
        corrupt(store, job.id, item=(1, '{"name": "img1.jpg", "slots": "not a list"}'))

        leased = store.lease("w1", max_items=2, lease_s=LEASE_S)

        assert [le.position for le in leased] == [0, 2]
        for lease in leased:
            assert store.complete("w1", lease.item_id, {})
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert (record.status, record.items_succeeded, record.items_failed) == (JobStatus.PARTIALLY_FAILED, 2, 1)
        assert [(e.item, e.code) for e in record.errors] == [("img1.jpg", "invalid_stored_job")]
