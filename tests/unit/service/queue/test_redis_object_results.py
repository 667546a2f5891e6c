"""RedisJobStore with its results in object storage (issue 13), on a real redis-server and a real S3-compatible
server (moto's server mode, a subprocess; the store's own boto3 client talks to it over HTTP).

The whole JobStore contract runs again in this mode; then what only it adds: Redis holds each result's key and
never its bytes, a second delivery overwrites its own object, and deleting or expiring a job removes its objects
(later, when the object store refuses at first).
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from service.errors import ErrorCode, PreannotateError
from service.queue.redis_store import RedisJobStore
from service.queue.resilient_store import ResilientStore
from service.queue.s3_results import S3ResultStore
from service.queue.store import ItemState
from tests.integration.servers import free_port
from tests.redis_server import RedisServer
from tests.s3_server import S3Bucket, client_env, denying
from tests.unit.service.queue.store_contract import (
    LEASE_S,
    TENANT,
    Corrupt,
    FakeClock,
    JobStoreContract,
    StoreFactory,
    make_job,
)
from tests.unit.service.queue.test_redis_store import corrupt_in

PREFIX = "results/"
# A result the size of a few video frames; what matters is that its bytes end up in the bucket, not in Redis.
RESULT = {"slots": [], "frames": [{"frame": i, "boxes": [[1.5, 2.5, 30.0, 40.0]] * 5} for i in range(50)]}


@pytest.fixture
def results_url(s3_bucket: S3Bucket) -> str:
    return f"s3://{s3_bucket.name}/{PREFIX}"


class TestRedisJobStoreWithObjectResultsContract(JobStoreContract):
    @pytest.fixture
    def store_factory(self, make_store: StoreFactory) -> StoreFactory:
        return make_store

    @pytest.fixture
    def corrupt(self, db: redis.Redis) -> Corrupt:
        return corrupt_in(db)


def objects(bucket: S3Bucket, job_id: str = "") -> dict[str, bytes]:
    listed = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=f"{PREFIX}{job_id}")
    return {
        o["Key"]: bucket.client.get_object(Bucket=bucket.name, Key=o["Key"])["Body"].read()
        for o in listed.get("Contents", [])
    }


def test_redis_keeps_the_key_and_the_bucket_the_result(
    store: RedisJobStore, db: redis.Redis, s3_bucket: S3Bucket
) -> None:
    job = make_job(store, 2)
    for lease in store.lease("w1", max_items=2, lease_s=LEASE_S):
        assert store.complete("w1", lease.item_id, {**RESULT, "position": lease.position})

    stored = objects(s3_bucket, job.id)

    assert sorted(stored) == [f"{PREFIX}{job.id}/0.json.gz", f"{PREFIX}{job.id}/1.json.gz"]
    assert json.loads(gzip.decompress(stored[f"{PREFIX}{job.id}/1.json.gz"])) == {**RESULT, "position": 1}
    assert db.keys("pa:result:*") == []  # no result bytes in Redis
    first = int(db.hget(f"pa:job:{job.id}", "first"))  # type: ignore[arg-type]
    assert db.hget(f"pa:item:{first}", "rkey") == f"s3://{s3_bucket.name}/{PREFIX}{job.id}/0.json.gz"
    read = store.results(tenant=TENANT, job_id=job.id)
    assert read is not None
    assert [r.result for r in read] == [{**RESULT, "position": 0}, {**RESULT, "position": 1}]


def test_a_worker_killed_after_writing_leaves_one_object_for_the_next_delivery(
    store: RedisJobStore, clock: FakeClock, s3_bucket: S3Bucket
) -> None:
    job = make_job(store, 1)
    (first,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
    results = store._results
    assert results is not None
    # w1 wrote its object, then died before settling the item (what kill -9 between the two leaves behind)
    results.put(results.key(job.id, 0), {**RESULT, "by": "w1"})
    clock.advance(LEASE_S + 1)

    (again,) = store.lease("w2", max_items=1, lease_s=LEASE_S)
    assert again.item_id == first.item_id
    assert store.complete("w2", again.item_id, {**RESULT, "by": "w2"})
    assert not store.complete("w1", first.item_id, {**RESULT, "by": "w1"})  # a late w1 is refused

    assert list(objects(s3_bucket, job.id)) == [f"{PREFIX}{job.id}/0.json.gz"]
    read = store.results(tenant=TENANT, job_id=job.id)
    assert read is not None
    assert read[0].result is not None
    assert read[0].result["by"] in ("w1", "w2")  # the same item's result either way; one object, never two


def test_a_result_written_for_a_job_deleted_meanwhile_is_removed(store: RedisJobStore, s3_bucket: S3Bucket) -> None:
    job = make_job(store, 1)
    (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
    store.cancel_job(tenant=TENANT, job_id=job.id)
    assert store.delete_job(tenant=TENANT, job_id=job.id) is True

    assert not store.complete("w1", lease.item_id, RESULT)

    assert objects(s3_bucket) == {}


def test_deleting_a_job_removes_its_objects_and_no_other_jobs(store: RedisJobStore, s3_bucket: S3Bucket) -> None:
    job, other = make_job(store, 2), make_job(store, 1, key="key-2", prefix="other")
    for lease in store.lease("w1", max_items=3, lease_s=LEASE_S):
        store.complete("w1", lease.item_id, RESULT)

    assert store.delete_job(tenant=TENANT, job_id=job.id) is True

    assert list(objects(s3_bucket)) == [f"{PREFIX}{other.id}/0.json.gz"]


def test_expiry_removes_the_objects_and_retries_when_the_bucket_refuses(
    store: RedisJobStore, clock: FakeClock, db: redis.Redis, s3_bucket: S3Bucket
) -> None:
    job = make_job(store, 2)
    for lease in store.lease("w1", max_items=2, lease_s=LEASE_S):
        store.complete("w1", lease.item_id, RESULT)
    clock.advance(7 * 86400.0)
    with denying(s3_bucket, "s3:DeleteObject"):
        assert store.expire_jobs() == 0  # Redis forgot the job; its objects could not go yet

    assert store.get_job(tenant=TENANT, job_id=job.id) is None
    assert len(objects(s3_bucket, job.id)) == 2
    assert db.zscore("pa:expiry", job.id) == clock.now + 300.0  # due again later, behind the others

    assert store.expire_jobs() == 0
    clock.advance(300.0)
    assert store.expire_jobs() == 1
    assert objects(s3_bucket) == {}
    assert db.zcard("pa:expiry") == 0


def test_a_missing_object_reads_as_no_result(store: RedisJobStore, s3_bucket: S3Bucket) -> None:
    job = make_job(store, 2)
    for lease in store.lease("w1", max_items=2, lease_s=LEASE_S):
        store.complete("w1", lease.item_id, RESULT)
    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key=f"{PREFIX}{job.id}/0.json.gz")  # a lifecycle rule

    read = store.results(tenant=TENANT, job_id=job.id)

    assert read is not None
    assert [(r.state, r.result is None) for r in read] == [(ItemState.SUCCEEDED, True), (ItemState.SUCCEEDED, False)]


def test_results_survive_a_redis_restart(clock: FakeClock, s3_bucket: S3Bucket) -> None:
    durable = RedisServer(appendonly=True)  # its own: a restart of the module's server would empty it
    durable.start()
    store = RedisJobStore(durable.url, clock=clock, results=S3ResultStore(f"s3://{s3_bucket.name}/{PREFIX}"))
    try:
        job = make_job(store, 2)
        for lease in store.lease("w1", max_items=2, lease_s=LEASE_S):
            store.complete("w1", lease.item_id, {**RESULT, "position": lease.position})

        durable.kill()
        durable.start()

        read = store.results(tenant=TENANT, job_id=job.id)
        assert read is not None
        assert [r.result for r in read] == [{**RESULT, "position": 0}, {**RESULT, "position": 1}]
    finally:
        store.close()
        durable.cleanup()


def reader(server: RedisServer, clock: FakeClock, url: str | None) -> RedisJobStore:
    """Another process's view of the same queue, with its own PREANNOTATE_RESULTS_URL (None: unset)."""
    return RedisJobStore(server.url, clock=clock, results=None if url is None else S3ResultStore(url))


@pytest.mark.parametrize("url", [None, "s3://another-bucket/results/"], ids=["unset", "another-bucket"])
def test_a_reader_whose_results_url_differs_answers_503_and_names_the_setting(
    store: RedisJobStore, server: RedisServer, clock: FakeClock, url: str | None
) -> None:
    job = make_job(store, 1)
    (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
    store.complete("w1", lease.item_id, RESULT)
    api = reader(server, clock, url)
    try:
        with pytest.raises(PreannotateError) as err:
            api.results(tenant=TENANT, job_id=job.id)
        listed = api.results(tenant=TENANT, job_id=job.id, with_results=False)  # a status listing still works
    finally:
        api.close()
    assert err.value.code is ErrorCode.RESULTS_UNAVAILABLE  # never "result_missing": the result is there
    assert "same PREANNOTATE_RESULTS_URL" in err.value.message
    assert listed is not None
    assert [(r.state, r.result) for r in listed] == [(ItemState.SUCCEEDED, None)]


def test_a_page_reads_about_its_own_size_not_the_rest_of_the_job(store: RedisJobStore, db: redis.Redis) -> None:
    job = make_job(store, 400)
    db.config_resetstat()

    page = store.results(tenant=TENANT, job_id=job.id, after=9, limit=5, with_results=False)

    assert page is not None
    assert [r.position for r in page] == [10, 11, 12, 13, 14]
    hmgets = int(db.info("commandstats")["cmdstat_hmget"]["calls"])
    assert hmgets <= 64  # one window; the whole rest of the job would be 390
    later = store.results(tenant=TENANT, job_id=job.id, states={ItemState.SUCCEEDED}, limit=5, with_results=False)
    assert later == []  # nothing matches: every window is read, to the end


def test_a_result_written_after_its_job_went_is_removed_later_when_the_bucket_refuses_now(
    store: RedisJobStore, clock: FakeClock, db: redis.Redis, s3_bucket: S3Bucket
) -> None:
    job = make_job(store, 1)
    assert store.lease("w1", max_items=1, lease_s=LEASE_S)
    store.cancel_job(tenant=TENANT, job_id=job.id)
    store.delete_job(tenant=TENANT, job_id=job.id)
    # the worker still runs: its check passed just before the delete, so it writes (simulated by writing here)
    results = store._results
    assert results is not None
    results.put(results.key(job.id, 0), RESULT)

    with denying(s3_bucket, "s3:DeleteObject"):
        store._forget_objects(job.id)  # what complete() does once COMPLETE refuses and the job is gone

    assert len(objects(s3_bucket, job.id)) == 1
    clock.advance(300.0)
    assert store.expire_jobs() == 1
    assert objects(s3_bucket) == {}


def test_a_job_removed_while_its_results_are_read_is_gone_not_missing(
    store: RedisJobStore, s3_bucket: S3Bucket
) -> None:
    job = make_job(store, 2)
    for lease in store.lease("w1", max_items=2, lease_s=LEASE_S):
        store.complete("w1", lease.item_id, RESULT)
    results = store._results
    assert results is not None
    read = results.get_many

    def deleted_first(keys: Sequence[str]) -> list[dict[str, Any] | None]:
        assert store.delete_job(tenant=TENANT, job_id=job.id)  # lands between the key scan and the object reads
        return read(keys)

    results.get_many = deleted_first  # type: ignore[method-assign]

    assert store.results(tenant=TENANT, job_id=job.id) is None  # the stream then cuts the body short


def test_a_result_store_outage_fails_the_item_retryably_not_as_a_lost_lease(
    server: RedisServer, clock: FakeClock, db: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in client_env(f"http://127.0.0.1:{free_port()}").items():  # nothing listens there
        monkeypatch.setenv(name, value)
    results = S3ResultStore("s3://gone/results", connect_timeout_s=0.2, read_timeout_s=0.2, max_attempts=1)
    store = RedisJobStore(server.url, clock=clock, results=results)
    worker = ResilientStore(store, threading.Event(), base_s=0.01, cap_s=0.05, give_up_s=0.3)
    try:
        job = make_job(store, 1)
        (lease,) = worker.lease("w1", max_items=1, lease_s=LEASE_S)

        with pytest.raises(PreannotateError) as err:
            worker.complete("w1", lease.item_id, RESULT)

        assert err.value.code is ErrorCode.RESULTS_UNAVAILABLE
        assert "s3://gone/results/" in err.value.message
        assert store.heartbeat("w1", [lease.item_id], lease_s=LEASE_S) == [lease.item_id]  # still ours to fail
        worker.fail("w1", lease.item_id, code=err.value.code.code, message=err.value.message, retryable=True,
                    retry_in_s=0.0)  # fmt: skip
        (record,) = store.results(tenant=TENANT, job_id=job.id) or []
        assert record.state is ItemState.QUEUED  # retried later, its reason on record, not lease_expired
    finally:
        store.close()
