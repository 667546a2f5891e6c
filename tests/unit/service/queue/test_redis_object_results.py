"""RedisJobStore with its results in object storage (issue 13), on a real redis-server and a real S3-compatible
server (moto's server mode, a subprocess; the store's own boto3 client talks to it over HTTP).

The whole JobStore contract runs again in this mode; then what only it adds: Redis holds each result's key and
never its bytes, a second delivery overwrites its own object, and deleting or expiring a job removes its objects
(later, when the object store refuses at first).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest
import redis

from service.queue.redis_store import RedisJobStore
from service.queue.s3_results import S3ResultStore
from service.queue.store import ItemState, JobStore
from tests.redis_server import RedisServer
from tests.s3_server import S3Bucket
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


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = RedisServer(appendonly=True)
    try:
        srv.start()
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture
def db(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(server: RedisServer, db: redis.Redis, clock: FakeClock, s3_bucket: S3Bucket) -> Iterator[StoreFactory]:
    stores: list[RedisJobStore] = []

    def factory(*, max_attempts: int = 3) -> JobStore:
        results = S3ResultStore(f"s3://{s3_bucket.name}/{PREFIX}", concurrency=4)
        store = RedisJobStore(server.url, max_attempts=max_attempts, clock=clock, results=results)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> RedisJobStore:
    made = make_store()
    assert isinstance(made, RedisJobStore)
    return made


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
    assert db.hget(f"pa:item:{first}", "rkey") == f"{PREFIX}{job.id}/0.json.gz"
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
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": f"arn:aws:s3:::{s3_bucket.name}/*",
            }
        ],
    }
    s3_bucket.client.put_bucket_policy(Bucket=s3_bucket.name, Policy=json.dumps(deny))
    try:
        assert store.expire_jobs() == 0  # Redis forgot the job; its objects could not go yet
    finally:
        s3_bucket.client.delete_bucket_policy(Bucket=s3_bucket.name)

    assert store.get_job(tenant=TENANT, job_id=job.id) is None
    assert len(objects(s3_bucket, job.id)) == 2
    assert db.zscore("pa:expiry", job.id) is not None  # still due

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


def test_results_survive_a_redis_restart(server: RedisServer, store: RedisJobStore, s3_bucket: S3Bucket) -> None:
    job = make_job(store, 2)
    for lease in store.lease("w1", max_items=2, lease_s=LEASE_S):
        store.complete("w1", lease.item_id, {**RESULT, "position": lease.position})

    server.kill()
    server.start()

    read = store.results(tenant=TENANT, job_id=job.id)
    assert read is not None
    assert [r.result for r in read] == [{**RESULT, "position": 0}, {**RESULT, "position": 1}]
