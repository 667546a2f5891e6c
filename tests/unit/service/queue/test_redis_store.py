"""RedisJobStore on a real redis-server: the shared JobStore contract, plus what only Redis adds
(streams, dead letters, cross-process leasing, connection failures)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from models.types import ModelInfo
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.jobs.submit import create_job_from
from service.queue.redis_store import RedisJobStore
from service.queue.resilient_store import ResilientStore
from service.queue.store import ItemState, JobRecord, JobStatus, JobStore
from service.remote_models import JobModel, PublishedModel, RemoteModels
from service.spec.requests import JobCreate
from tests.integration.servers import free_port
from tests.redis_server import RedisServer
from tests.unit.service.queue.store_contract import (
    LEASE_S,
    SPEC,
    TENANT,
    Corrupt,
    FakeClock,
    FinishedJobs,
    JobStoreContract,
    StoreFactory,
    items,
    make_job,
    status,
)


class TestRedisJobStoreContract(JobStoreContract):
    @pytest.fixture
    def store_factory(self, make_store: StoreFactory) -> StoreFactory:
        return make_store

    @pytest.fixture
    def corrupt(self, db: redis.Redis) -> Corrupt:
        return corrupt_in(db)


def corrupt_in(db: redis.Redis) -> Corrupt:
    """``Corrupt`` for a Redis store: the job's and items' hashes written over in place."""

    def overwrite(
        store: JobStore, job_id: str, *, request: str | None = None, item: tuple[int, str] | None = None
    ) -> None:
        if request is not None:
            db.hset(f"pa:job:{job_id}", "request", request)
        if item is not None:
            first = int(db.hget(f"pa:job:{job_id}", "first"))  # type: ignore[arg-type]
            db.hset(f"pa:item:{first + item[0]}", "item", item[1])

    return overwrite


# --- streams ------------------------------------------------------------------------------------------


def test_lease_is_a_stream_delivery_and_complete_acks_it(store: RedisJobStore, db: redis.Redis) -> None:
    make_job(store, 2)
    (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)

    assert db.xpending("pa:items", "workers")["pending"] == 1
    assert store.queue_stats() == {"lag": 1, "pending": 1, "delayed": 0, "dead": 0, "active": 2}
    assert store.complete("w1", lease.item_id, {"boxes": []})
    assert db.xpending("pa:items", "workers")["pending"] == 0
    assert store.queue_stats()["lag"] == 1  # trimming acked history keeps the lag readable (KEDA)


def test_delivery_claims_are_shared_by_processes_and_expire(server: RedisServer, db: redis.Redis) -> None:
    api_1, api_2 = RedisJobStore(server.url), RedisJobStore(server.url)
    try:
        assert api_1.claim_delivery("generic:d-1", "body:a", ttl_s=0.2) == "body:a"
        assert api_2.claim_delivery("generic:d-1", "body:b", ttl_s=0.2) == "body:a"
        [key] = db.keys("pa:delivery:*")
        assert 0 < db.pttl(key) <= 200  # Redis forgets it by itself
        time.sleep(0.3)
        assert api_2.claim_delivery("generic:d-1", "body:b", ttl_s=60) == "body:b"
    finally:
        api_1.close()
        api_2.close()


def test_concurrent_workers_count_each_finished_job_once(store: RedisJobStore) -> None:
    counted = FinishedJobs()
    for n in range(3):
        make_job(store, 20, key=f"k{n}", prefix=f"j{n}-")

    def work(worker: str) -> None:
        while leases := store.lease(worker, max_items=2, lease_s=LEASE_S):
            for lease in leases:
                if lease.position % 7:
                    store.complete(worker, lease.item_id, {})
                else:
                    store.fail(worker, lease.item_id, code="corrupt_media", message="x", retryable=False, retry_in_s=0)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert store.depth() == 0
    assert counted.gained() == {"partially_failed": 3}


def test_heartbeat_resets_idle_without_counting_a_delivery(store: RedisJobStore, db: redis.Redis) -> None:
    make_job(store, 1)
    (lease,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
    time.sleep(0.3)
    assert db.xpending_range("pa:items", "workers", "-", "+", 1)[0]["time_since_delivered"] >= 300

    assert store.heartbeat("w1", [lease.item_id], lease_s=LEASE_S) == [lease.item_id]

    (entry,) = db.xpending_range("pa:items", "workers", "-", "+", 1)
    assert entry["time_since_delivered"] < 200
    assert entry["times_delivered"] == 1


def test_heartbeat_keeps_a_long_item(store: RedisJobStore, clock: FakeClock) -> None:
    make_job(store, 1)
    (lease,) = store.lease("w1", max_items=1, lease_s=2.0)
    for _ in range(20):  # 20 s of work on a 2 s lease, renewed every second
        clock.advance(1.0)
        assert store.heartbeat("w1", [lease.item_id], lease_s=2.0) == [lease.item_id]
        assert store.lease("w2", max_items=1, lease_s=2.0) == []

    assert store.complete("w1", lease.item_id, {"frames": 20})


def test_reclaim_moves_the_entry_to_the_new_worker(store: RedisJobStore, clock: FakeClock, db: redis.Redis) -> None:
    make_job(store, 1)
    store.lease("w1", max_items=1, lease_s=LEASE_S)
    clock.advance(LEASE_S + 1)

    (taken,) = store.lease("w2", max_items=1, lease_s=LEASE_S)

    (entry,) = db.xpending_range("pa:items", "workers", "-", "+", 10)
    assert (entry["consumer"], entry["times_delivered"], taken.attempt) == ("w2", 2, 2)


def test_complete_after_losing_the_lease_stores_nothing(
    store: RedisJobStore, clock: FakeClock, db: redis.Redis
) -> None:
    job = make_job(store, 1)
    (lost,) = store.lease("w1", max_items=1, lease_s=LEASE_S)
    clock.advance(LEASE_S + 1)
    (taken,) = store.lease("w2", max_items=1, lease_s=LEASE_S)

    assert not store.complete("w1", lost.item_id, {"by": "w1"})

    assert db.get(f"pa:result:{lost.item_id}") is None
    assert db.xpending("pa:items", "workers")["pending"] == 1  # still w2's, not acked by w1
    assert store.complete("w2", taken.item_id, {"by": "w2"})
    results = store.results(tenant=TENANT, job_id=job.id)
    assert results is not None
    assert [r.result for r in results] == [{"by": "w2"}]


def test_poison_item_is_dead_lettered_after_exactly_max_attempts(make_store: StoreFactory, db: redis.Redis) -> None:
    store = make_store(max_attempts=3)
    job = make_job(store, 2)
    deliveries = 0
    while leases := store.lease("w1", max_items=2, lease_s=LEASE_S):
        for lease in leases:
            if lease.position == 0:
                deliveries += 1
                store.fail("w1", lease.item_id, code="internal", message="img0.jpg: boom", retryable=True, retry_in_s=0)
            else:
                store.complete("w1", lease.item_id, {})

    assert deliveries == 3
    ((_, fields),) = db.xrange("pa:dead")
    assert (fields["name"], fields["code"], fields["reason"], fields["attempts"]) == (
        "img0.jpg", "internal", "img0.jpg: boom", "3",
    )  # fmt: skip
    record = store.get_job(tenant=TENANT, job_id=job.id)
    assert record is not None
    assert (record.status, record.items_succeeded, record.items_failed) == (JobStatus.PARTIALLY_FAILED, 1, 1)
    assert store.queue_stats() == {"lag": 0, "pending": 0, "delayed": 0, "dead": 1, "active": 0}


def test_crashing_item_is_dead_lettered_with_the_lease_reason(
    make_store: StoreFactory, clock: FakeClock, db: redis.Redis
) -> None:
    store = make_store(max_attempts=2)
    make_job(store, 1)
    for _ in range(2):
        assert store.lease("w", max_items=1, lease_s=LEASE_S)
        clock.advance(LEASE_S + 1)  # the worker dies every time

    assert store.lease("w", max_items=1, lease_s=LEASE_S) == []
    ((_, fields),) = db.xrange("pa:dead")
    assert fields["code"] == "lease_expired"
    assert "attempt 2 of 2" in fields["reason"]


def test_release_hands_items_back_without_spending_an_attempt(store: RedisJobStore, db: redis.Redis) -> None:
    make_job(store, 3)
    first, second = store.lease("w1", max_items=2, lease_s=LEASE_S)

    assert store.release("w1", [first.item_id, 999]) == [first.item_id]
    assert store.heartbeat("w1", [first.item_id, second.item_id], lease_s=LEASE_S) == [second.item_id]
    store.forget_worker("host", ["w1"])  # still holds `second`: kept
    assert [c["name"] for c in db.xinfo_consumers("pa:items", "workers")] == ["(released)", "w1"]

    again, third = store.lease("w2", max_items=2, lease_s=LEASE_S)
    assert (again.item_id, again.attempt) == (first.item_id, 1)  # ahead of new work, attempt uncounted
    assert third.position == 2


def test_cancelled_entries_are_skipped_and_trimmed(store: RedisJobStore, db: redis.Redis) -> None:
    job = make_job(store, 5)
    store.cancel_job(tenant=TENANT, job_id=job.id)
    later = make_job(store, 1, key="later")

    (lease,) = store.lease("w", max_items=5, lease_s=LEASE_S)
    store.complete("w", lease.item_id, {})
    store.lease("w", max_items=5, lease_s=LEASE_S)

    assert lease.job_id == later.id
    assert db.xlen("pa:items") <= 1
    assert store.queue_stats()["lag"] == 0


def test_jobs_expire_after_the_retention(server: RedisServer, db: redis.Redis) -> None:
    store = RedisJobStore(server.url, retention_s=60)
    try:
        job, _ = store.create_job(tenant=TENANT, idem_key="k", spec=SPEC, items=items(2))
        assert 0 < db.ttl(f"pa:job:{job.id}") <= 60
        (lease,) = store.lease("w", max_items=1, lease_s=5)
        store.complete("w", lease.item_id, {})
        assert 0 < db.ttl(f"pa:result:{lease.item_id}") <= 60
    finally:
        store.close()


def test_server_clock_by_default(server: RedisServer, db: redis.Redis) -> None:
    store = RedisJobStore(server.url)
    try:
        job, _ = store.create_job(tenant=TENANT, idem_key="k", spec=SPEC, items=items(1))
        server_now = float(db.time()[0])
        assert abs(job.created_at - server_now) < 2
        (lease,) = store.lease("w", max_items=1, lease_s=5)
        assert abs(float(db.hget(f"pa:item:{lease.item_id}", "until")) - server_now - 5) < 2
    finally:
        store.close()


# --- two processes ------------------------------------------------------------------------------------


def _drain(url: str, name: str, start: Any, out: Any) -> None:
    store = RedisJobStore(url, max_attempts=3)
    store.depth()  # connected
    start.wait(timeout=30)  # a barrier: both processes begin together
    taken: list[int] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.0:
        leases = store.lease(name, max_items=8, lease_s=30)
        if leases:
            idle_since = time.monotonic()
        for lease in leases:
            taken.append(lease.item_id)
            time.sleep(0.002)  # some work, so the other process gets a share
            assert store.complete(name, lease.item_id, {"by": name})
    out.put((name, taken))
    store.close()


def test_two_processes_drain_200_items_exactly_once(server: RedisServer, db: redis.Redis) -> None:
    store = RedisJobStore(server.url)
    try:
        jobs = [store.create_job(tenant=TENANT, idem_key=f"k{j}", spec=SPEC, items=items(20))[0] for j in range(10)]
        ctx = multiprocessing.get_context("spawn")  # a connection pool must not cross a fork
        start, out = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_drain, args=(server.url, f"p{i}", start, out)) for i in range(2)]
        for p in procs:
            p.start()
        taken = dict(out.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=10)

        assert all(p.exitcode == 0 for p in procs)
        a, b = taken["p0"], taken["p1"]
        assert a, "both processes leased"
        assert b, "both processes leased"
        assert not set(a) & set(b)
        assert len(a) + len(b) == len(set(a) | set(b)) == 200
        for job in jobs:
            results = store.results(tenant=TENANT, job_id=job.id)
            assert results is not None
            assert [r.state for r in results] == [ItemState.SUCCEEDED] * 20
        assert store.queue_stats() == {"lag": 0, "pending": 0, "delayed": 0, "dead": 0, "active": 0}
    finally:
        store.close()


# --- connection failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{port}/0", "unix:///nonexistent/redis.sock"])
def test_unreachable_redis_is_not_ready_at_once(url: str) -> None:
    store = RedisJobStore(url.format(port=free_port()), connect_timeout_s=5)
    calls = [
        lambda: store.depth(),
        lambda: store.lease("w", max_items=1, lease_s=5),
        lambda: store.create_job(tenant=TENANT, idem_key="k", spec=SPEC, items=items(1)),
        lambda: store.get_job(tenant=TENANT, job_id="x"),
    ]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(PreannotateError) as caught:
            call()
        assert time.monotonic() - start < 1.0
        assert caught.value.code is ErrorCode.NOT_READY
        assert caught.value.retry_after_s
        assert "password" not in caught.value.message
    assert not store.ping()


def test_recovers_after_a_restart_with_aof() -> None:
    srv = RedisServer(appendonly=True)
    try:
        srv.start()
        store = RedisJobStore(srv.url)
        job, _ = store.create_job(tenant=TENANT, idem_key="k", spec=SPEC, items=items(2))
        (lease,) = store.lease("w", max_items=1, lease_s=60)
        srv.kill()
        with pytest.raises(PreannotateError) as caught:
            store.lease("w", max_items=1, lease_s=60)
        assert caught.value.code is ErrorCode.NOT_READY

        srv.start()  # same socket; the pool replaces its dead connections; scripts are loaded again

        assert store.complete("w", lease.item_id, {"ok": 1})
        (second,) = store.lease("w", max_items=1, lease_s=60)
        assert store.complete("w", second.item_id, {"ok": 2})
        record = store.get_job(tenant=TENANT, job_id=job.id)
        assert record is not None
        assert record.status is JobStatus.SUCCEEDED
        store.close()
    finally:
        srv.cleanup()


# --- model catalog ------------------------------------------------------------------------------------


def _model(spec: str, name: str) -> PublishedModel:
    info = ModelInfo(spec, name, f"{name}-v1", ("face",), "onnxruntime", "cpu", 1, 640)
    return PublishedModel(spec, info, max_batch_size=4)


def test_published_models_outlive_their_workers(store: RedisJobStore, clock: FakeClock) -> None:
    store.publish_models("host-1", [_model("builtin:centerface", "centerface")], ttl_s=10)
    store.publish_models("host-2", [_model("builtin:centerface", "centerface"), _model("onnx:/m.onnx", "m")], ttl_s=10)
    remote = RemoteModels(store.published_models, "builtin:centerface", cache_s=0)

    assert [(m.spec, m.live_workers) for m in remote.all()] == [("builtin:centerface", 2), ("onnx:/m.onnx", 1)]
    assert remote.get(None).info.class_names == ("face",)
    assert remote.get("m").spec == "onnx:/m.onnx"
    with pytest.raises(PreannotateError) as caught:
        remote.get("nope")
    assert caught.value.code is ErrorCode.MODEL_NOT_FOUND

    clock.advance(11)
    assert store.live_workers() == 0
    assert [(m.spec, m.live_workers) for m in remote.all()] == [("builtin:centerface", 0), ("onnx:/m.onnx", 0)]


def test_a_boxes_only_model_is_published_as_the_release_before_masks_reads_it(
    store: RedisJobStore, db: redis.Redis
) -> None:
    """Rolling update: API pods of the release before masks build ``ModelInfo(**info)`` from the catalog, so a
    boxes-only model's publication carries no ``makes_masks`` (only a model that makes masks says so)."""
    seg_info = dataclasses.replace(_model("onnx:/seg.onnx", "seg").info, makes_masks=True)
    store.publish_models(
        "host-1", [_model("builtin:centerface", "centerface"), PublishedModel("onnx:/seg.onnx", seg_info, 4)], ttl_s=10
    )
    stored = {spec: json.loads(raw)["info"] for spec, raw in db.hgetall("pa:models").items()}
    before_masks = {f.name for f in dataclasses.fields(ModelInfo)} - {"makes_masks", "open_vocabulary"}

    assert set(stored["builtin:centerface"]) == before_masks
    assert stored["onnx:/seg.onnx"]["makes_masks"] is True
    by_spec = {m.spec: m.info for m in store.published_models()}
    assert by_spec["builtin:centerface"] == _model("builtin:centerface", "centerface").info
    assert by_spec["onnx:/seg.onnx"] == seg_info


def test_an_open_vocabulary_model_is_published_as_one(store: RedisJobStore, db: redis.Redis) -> None:
    """API pods pin and refuse prompted jobs by ``open_vocabulary``: it reaches them; a fixed-class model's
    publication still lacks it (older API pods build ``ModelInfo(**info)``)."""
    owl_info = dataclasses.replace(_model("hf:/owlv2", "owlv2").info, class_names=(), open_vocabulary=True)
    store.publish_models(
        "host-1", [_model("builtin:centerface", "centerface"), PublishedModel("hf:/owlv2", owl_info, 4)], ttl_s=10
    )
    stored = {spec: json.loads(raw)["info"] for spec, raw in db.hgetall("pa:models").items()}
    assert stored["hf:/owlv2"]["open_vocabulary"] is True
    assert "open_vocabulary" not in stored["builtin:centerface"]
    remote = RemoteModels(store.published_models, "builtin:centerface", cache_s=0)
    assert remote.for_job("hf:/owlv2").open_vocabulary
    assert not remote.for_job(None).open_vocabulary


def test_a_publication_with_fields_of_a_newer_release_is_read(store: RedisJobStore, db: redis.Redis) -> None:
    """A newer worker may publish fields this release does not know: they are ignored, not a TypeError."""
    store.publish_models("host-1", [_model("builtin:centerface", "centerface")], ttl_s=10)
    body = json.loads(db.hget("pa:models", "builtin:centerface"))  # type: ignore[arg-type]
    body["info"]["prompt_kinds"] = ["box", "point"]
    db.hset("pa:models", "builtin:centerface", json.dumps(body))

    (published,) = store.published_models()

    assert published.info == _model("builtin:centerface", "centerface").info


def test_with_nothing_published_jobs_take_model_specs_unpinned(store: RedisJobStore) -> None:
    """Cold start: workers scaled to zero publish nothing, and only a queued job would wake one."""
    remote = RemoteModels(store.published_models, "builtin:centerface", extra_specs=["onnx:/m.onnx"], cache_s=0)

    assert remote.all() == []
    assert remote.pending() == ["builtin:centerface", "onnx:/m.onnx"]
    assert remote.for_job(None) == JobModel("builtin:centerface", None, None)
    assert remote.for_job("onnx:/m.onnx") == JobModel("onnx:/m.onnx", None, None)
    assert remote.for_job("hf:/models/detr") == JobModel("hf:/models/detr", None, None)  # a spec, not configured
    for unknown in ("m", "builtin:nope", "yolo.pt"):  # a short name is known only once published; bad specs
        with pytest.raises(PreannotateError) as caught:
            remote.for_job(unknown)
        assert caught.value.code is ErrorCode.MODEL_NOT_FOUND, unknown
        assert "builtin:centerface" in caught.value.message

    store.publish_models("host-1", [_model("builtin:centerface", "centerface")], ttl_s=10)
    assert remote.for_job(None) == JobModel("builtin:centerface", "centerface-v1", ("face",))
    assert remote.pending() == ["onnx:/m.onnx"]


def test_with_a_worker_alive_only_a_configured_spec_is_taken_unpublished(
    store: RedisJobStore, clock: FakeClock
) -> None:
    """A live worker publishes what it serves: another spec is a typo, refused now rather than failed per item."""
    remote = RemoteModels(store.published_models, "builtin:centerface", extra_specs=["onnx:/m.onnx"], cache_s=0)
    store.publish_models("host-1", [_model("builtin:centerface", "centerface")], ttl_s=10)

    assert remote.for_job("onnx:/m.onnx") == JobModel("onnx:/m.onnx", None, None)  # configured: still loading
    with pytest.raises(PreannotateError) as caught:
        remote.for_job("onnx:/models/yolo8.onnx")
    assert caught.value.code is ErrorCode.MODEL_NOT_FOUND
    assert "builtin:centerface" in caught.value.message

    clock.advance(11)  # the worker's entry lapses: scaled to zero, the job is what starts one
    assert remote.for_job("onnx:/models/yolo8.onnx") == JobModel("onnx:/models/yolo8.onnx", None, None)


def test_the_catalog_of_a_redis_that_is_down_is_not_ready() -> None:
    def down() -> list[PublishedModel]:
        raise PreannotateError(ErrorCode.NOT_READY, "the job queue is unavailable")

    for call in (RemoteModels(down, "builtin:centerface").for_job, RemoteModels(down, "builtin:centerface").get):
        with pytest.raises(PreannotateError) as caught:
            call(None)
        assert caught.value.code is ErrorCode.NOT_READY


def test_forget_worker_drops_idle_consumers_only(store: RedisJobStore, db: redis.Redis) -> None:
    make_job(store, 1)
    store.publish_models("host-1", [_model("builtin:centerface", "centerface")], ttl_s=10)
    store.lease("busy", max_items=1, lease_s=LEASE_S)
    store.lease("idle", max_items=1, lease_s=LEASE_S)

    store.forget_worker("host-1", ["busy", "idle"])

    assert store.live_workers() == 0
    assert [c["name"] for c in db.xinfo_consumers("pa:items", "workers")] == ["busy"]


# --- the worker's wrapper -----------------------------------------------------------------------------


def test_resilient_store_rides_out_a_restart() -> None:
    srv = RedisServer(appendonly=True)
    try:
        srv.start()
        stopping = threading.Event()
        store = ResilientStore(RedisJobStore(srv.url), stopping, base_s=0.05, cap_s=0.2, give_up_s=30)
        store.store.create_job(tenant=TENANT, idem_key="k", spec=SPEC, items=items(2))
        (lease,) = store.lease("w", max_items=1, lease_s=60)
        srv.kill()

        assert store.lease("w", max_items=1, lease_s=60) == []  # backs off instead of raising
        assert store.heartbeat("w", [lease.item_id], lease_s=60) == [lease.item_id]  # unknown: keep working
        assert store.progress("w", lease.item_id, frames_done=7, frames_planned=7)
        restarter = threading.Timer(0.5, srv.start)
        restarter.start()
        assert store.complete("w", lease.item_id, {"ok": True})  # waited for Redis to come back
        restarter.join()

        record = store.store.get_job(tenant=TENANT, job_id=lease.job_id)
        assert record is not None
        assert (record.items_succeeded, record.frames_done) == (1, 7)  # the progress it missed was sent first
        (second,) = store.lease("w", max_items=1, lease_s=60)
        assert store.release_held() == 1
        assert store.store.lease("w2", max_items=1, lease_s=60)[0].item_id == second.item_id
        store.close()
    finally:
        srv.cleanup()


def test_items_the_pool_released_are_not_released_again_at_shutdown(
    store: RedisJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    resilient = ResilientStore(store, threading.Event())
    make_job(store, 2)
    first, second = resilient.lease("w", max_items=2, lease_s=LEASE_S)
    calls: list[list[int]] = []
    release = store.release

    def spy(worker: str, item_ids: Sequence[int]) -> list[int]:
        calls.append(list(item_ids))
        return release(worker, item_ids)

    monkeypatch.setattr(store, "release", spy)

    assert resilient.release("w", [first.item_id]) == [first.item_id]  # WorkerPool stopping the item
    assert resilient.release_held() == 1  # the drain's backstop: only what the pool did not hand back

    assert calls == [[first.item_id], [second.item_id]]


def test_due_retries_are_promoted_without_a_worker(store: RedisJobStore, clock: FakeClock) -> None:
    make_job(store, 1)
    (lease,) = store.lease("w", max_items=1, lease_s=LEASE_S)
    store.fail("w", lease.item_id, code="fetch_failed", message="503", retryable=True, retry_in_s=30)
    assert store.queue_stats() == {"lag": 0, "pending": 0, "delayed": 1, "dead": 0, "active": 1}

    assert store.promote_due() == 0
    clock.advance(30)
    assert store.promote_due() == 1

    assert store.queue_stats() == {"lag": 1, "pending": 0, "delayed": 0, "dead": 0, "active": 1}  # KEDA sees it


def test_a_full_redis_is_not_ready_and_changes_nothing(store: RedisJobStore, db: redis.Redis) -> None:
    job = make_job(store, 2)
    db.config_set("maxmemory", "1")  # noeviction (the default): every write is refused
    try:
        for call in (
            lambda: store.create_job(tenant=TENANT, idem_key="k2", spec=SPEC, items=items(1)),
            lambda: store.lease("w", max_items=1, lease_s=LEASE_S),
        ):
            with pytest.raises(PreannotateError) as caught:
                call()
            assert caught.value.code is ErrorCode.NOT_READY
    finally:
        db.config_set("maxmemory", "0")
    assert store.queue_stats() == {"lag": 2, "pending": 0, "delayed": 0, "dead": 0, "active": 2}
    assert len(store.lease("w", max_items=5, lease_s=LEASE_S)) == 2
    assert status(store, job) is JobStatus.RUNNING


def test_a_model_published_after_a_lookup_is_found_at_once(store: RedisJobStore) -> None:
    remote = RemoteModels(store.published_models, "builtin:centerface", cache_s=60)
    with pytest.raises(PreannotateError):
        remote.get(None)  # nothing yet (and that answer is not cached for a minute)
    store.publish_models("host-1", [_model("builtin:centerface", "centerface")], ttl_s=10)
    time.sleep(0.3)

    assert remote.get(None).spec == "builtin:centerface"
    store.publish_models("host-1", [_model("onnx:/m.onnx", "m")], ttl_s=10)
    time.sleep(0.3)
    assert remote.get("m").spec == "onnx:/m.onnx"


def test_a_job_queued_before_any_worker_published_is_found_again(server: RedisServer, db: redis.Redis) -> None:
    """The same body, posted with no worker alive and again once one has published and pinned it: one job."""
    store = RedisJobStore(server.url)  # the server's clock: the dedupe window is measured on the wall clock
    remote = RemoteModels(store.published_models, "builtin:centerface", cache_s=0)
    body = JobCreate.model_validate({"items": [{"name": "a", "slots": [{"url": "https://media.example.com/a.jpg"}]}]})

    def post() -> tuple[JobRecord, bool]:
        return create_job_from(body, settings=Settings(), store=store, models=remote, tenant=TENANT)

    try:
        cold, _ = post()
        assert cold.spec.model_version is None
        store.publish_models("host-1", [_model("builtin:centerface", "centerface")], ttl_s=10)
        store.pin_model(cold.id, version="centerface-v1", class_names=["face"])  # the first worker's pin
        warm, created_warm = post()
        newer = _model("builtin:centerface", "centerface")
        newer = dataclasses.replace(newer, info=dataclasses.replace(newer.info, version="centerface-v2"))
        store.publish_models("host-2", [newer], ttl_s=10)  # a rolling update publishes another version
        upgraded, created_upgraded = post()
    finally:
        store.close()

    assert (warm.id, created_warm) == (cold.id, False)
    assert created_upgraded
    assert upgraded.id != cold.id
    assert upgraded.spec.model_version == "centerface-v2"
