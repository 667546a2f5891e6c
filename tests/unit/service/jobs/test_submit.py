"""``enqueue``: retries of accepted jobs, the queue limit, and a client's Idempotency-Key reused with another body."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from models.prompts import PromptSet
from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.intake.label_studio import delivery_idem as ls_delivery_idem
from service.intake.v7 import delivery_idem as v7_delivery_idem
from service.jobs import submit as submit_module
from service.jobs.submit import (
    FINGERPRINT,
    DrainRate,
    PreparedJob,
    check_urls,
    content_fingerprint,
    content_idem,
    enqueue,
    idempotency_key_idem,
    model_for_prompts,
    queue_full_retry_after_s,
)
from service.queue.sqlite_store import SqliteJobStore
from service.queue.store import JobRecord
from service.remote_models import JobModel
from service.spec.job import JobSpec
from service.spec.requests import ItemIn
from tests.unit.service.queue.store_contract import FakeClock

TENANT = "tenant-a"
PARAMS: dict[str, Any] = {
    "model": "yolo",
    "model_version": "v1",
    "class_names": ["person"],
    "fps": 1.0,
    "sampling": "exact",
    "threshold": 0.5,
    "classes": None,
    "outputs": [],
    "destinations": [],
}


SPEC = JobSpec.from_stored(PARAMS)


def prepared(n: int = 2, **params: Any) -> PreparedJob:
    items = [ItemIn.model_validate({"name": f"img{i}.jpg", "slots": [{"url": f"s3://b/img{i}.jpg"}]}) for i in range(n)]
    return PreparedJob(JobSpec.from_stored({**PARAMS, **params}), items)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def submit(store: SqliteJobStore, job: PreparedJob, key: str, *, depth: int = 100) -> tuple[JobRecord, bool]:
    return enqueue(job, settings=Settings(max_queue_depth=depth), store=store, tenant=TENANT, idem_key=key)


@pytest.mark.parametrize(
    "key",
    [idempotency_key_idem("abc-123"), content_idem(SPEC, prepared().items), "v7:some-delivery"],
    ids=["idempotency-key", "same-body", "webhook-redelivery"],
)
def test_a_retry_of_an_accepted_job_gets_it_while_the_queue_is_full(store: SqliteJobStore, key: str) -> None:
    job, created = submit(store, prepared(2), key, depth=2)
    assert created

    with pytest.raises(PreannotateError) as full:
        submit(store, prepared(1), "key:another", depth=2)
    again, created_again = submit(store, prepared(2), key, depth=2)

    assert full.value.code is ErrorCode.QUEUE_FULL
    assert (again.id, created_again) == (job.id, False)
    assert store.depth() == 2


def test_a_client_key_reused_with_another_body_is_refused(store: SqliteJobStore) -> None:
    key = idempotency_key_idem("abc-123")
    job, _ = submit(store, prepared(2), key)

    with pytest.raises(PreannotateError) as other_params:
        submit(store, prepared(2, threshold=0.7), key)
    with pytest.raises(PreannotateError) as other_items:
        submit(store, prepared(3), key)

    for exc in (other_params.value, other_items.value):
        assert exc.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
        assert (exc.code.code, exc.code.http_status, exc.code.retryable) == ("idempotency_key_reused", 422, False)
        assert job.id in exc.message
    assert store.depth() == 2


def test_a_retry_across_a_model_upgrade_is_the_same_request(store: SqliteJobStore) -> None:
    key = idempotency_key_idem("abc-123")
    job, _ = submit(store, prepared(2), key)

    again, created = submit(store, prepared(2, model_version="v2", class_names=["person", "car"]), key)

    assert (again.id, created) == (job.id, False)
    assert again.spec.model_version == "v1"  # the job stays pinned to the version it was created with


def test_a_job_stored_without_a_fingerprint_matches_any_body(store: SqliteJobStore) -> None:
    key = idempotency_key_idem("abc-123")
    old, _ = store.create_job(tenant=TENANT, idem_key=key, spec=SPEC, items=prepared(2).items)

    again, created = submit(store, prepared(3, threshold=0.9), key)

    assert (again.id, created) == (old.id, False)


def test_only_client_keyed_jobs_store_a_fingerprint(store: SqliteJobStore) -> None:
    job = prepared(2)

    keyed, _ = submit(store, job, idempotency_key_idem("abc-123"))
    by_content, _ = submit(store, job, content_idem(job.spec, job.items))

    assert keyed.spec.to_stored() == {**PARAMS, FINGERPRINT: content_fingerprint(job.spec, job.items)}
    assert by_content.spec.to_stored() == PARAMS  # keys derived from the stored params stay as they were
    assert job.spec.to_stored() == PARAMS  # not changed in place


class _Racing(SqliteJobStore):
    """A store where another request stores the same key between ``find_job`` and ``create_job``."""

    def find_job(self, *, tenant: str, idem_key: str) -> JobRecord | None:
        return None


def test_a_concurrent_request_with_the_same_key_and_another_body_is_refused(tmp_path: Path) -> None:
    store = _Racing(tmp_path / "jobs.db")
    key = idempotency_key_idem("abc-123")
    try:
        first, _ = submit(store, prepared(2), key)
        same, created = submit(store, prepared(2), key)
        with pytest.raises(PreannotateError) as exc:
            submit(store, prepared(2, threshold=0.7), key)
    finally:
        store.close()

    assert (same.id, created) == (first.id, False)
    assert exc.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED


# -- Retry-After of a full queue -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("excess", "items_per_s", "expected"),
    [
        (10, None, 30),  # no rate yet: the fixed fallback
        (10, 2.0, 5),
        (3, 2.0, 2),  # rounded up: never back before the room is there
        (1, 500.0, 1),  # at least a second
        (10_000, 1.0, 60),  # at most a minute
        (10, 0.0, 60),  # nothing finished lately: the longest wait
    ],
)
def test_retry_after_is_the_time_to_drain_the_excess(excess: int, items_per_s: float | None, expected: int) -> None:
    assert queue_full_retry_after_s(excess, items_per_s) == expected


def test_the_drain_rate_is_recent_and_needs_a_span() -> None:
    clock = FakeClock(0.0)
    rate = DrainRate(window_s=60, min_span_s=5, clock=clock)

    assert rate.observe(100) is None
    clock.advance(2)
    assert rate.observe(104) is None  # 2 s: too short to tell
    clock.advance(8)
    assert rate.observe(120) == pytest.approx(2.0)  # 20 items in 10 s
    clock.advance(55)  # the first two readings leave the window
    assert rate.observe(175) == pytest.approx(1.0)  # 55 items in 55 s
    assert rate.observe(3) is None  # the counter started over (Redis flushed): no rate until a new span


def test_a_full_queue_answers_when_the_excess_will_have_drained(
    store: SqliteJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(0.0)
    monkeypatch.setitem(submit_module._DRAIN_RATES, store, DrainRate(min_span_s=5, clock=clock))
    submit(store, prepared(4), "key:first", depth=4)
    leases = store.lease("w1", max_items=4, lease_s=60)

    with pytest.raises(PreannotateError) as unknown:
        submit(store, prepared(2), "key:second", depth=4)
    clock.advance(10)
    for lease in leases[:2]:  # 2 items in 10 s: 0.2 items/s
        store.complete("w1", lease.item_id, {})
    with pytest.raises(PreannotateError) as measured:
        submit(store, prepared(3), "key:second", depth=4)  # 2 queued + 3 = 1 over

    assert unknown.value.retry_after_s == 30
    assert measured.value.code is ErrorCode.QUEUE_FULL
    assert measured.value.retry_after_s == 5  # 1 item at 0.2 items/s


# -- URL checks --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://user:CANARY-pw@media.example.com/a.png",
        "https://CANARY-token@media.example.com/a.png",
        "http://:CANARY-pw@media.example.com/a.png",
        "s3://key:CANARY-secret@bucket/a.png",
    ],
)
def test_credentials_in_a_url_are_refused_before_anything_is_stored(url: str) -> None:
    slots = [{"name": "ok", "url": "https://ok.example.com/b.png"}, {"name": "bad", "url": url}]
    item = ItemIn.model_validate({"name": "a", "slots": slots})

    with pytest.raises(PreannotateError) as refused:
        check_urls([item], max_slots=4)

    assert refused.value.code is ErrorCode.URL_NOT_ALLOWED
    assert "credentials in URLs are not allowed" in refused.value.message
    assert "CANARY" not in refused.value.message


@pytest.mark.parametrize(
    "url",
    ["https://media.example.com/a@2x.png", "https://media.example.com/a.png?by=me@example.com", "s3://bucket/a@b.png"],
)
def test_an_at_sign_outside_the_host_part_is_fine(url: str) -> None:
    check_urls([ItemIn.model_validate({"name": "a", "slots": [{"url": url}]})], max_slots=4)


def test_webhook_and_sweep_keys_keep_a_failed_job_but_only_inside_the_window(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteJobStore(tmp_path / "jobs.db", clock=clock)
    settings = Settings(idempotency_retention_s=600)
    try:
        job, _ = enqueue(prepared(1), settings=settings, store=store, tenant=TENANT, idem_key="ls:task-1", clock=clock)
        (lease,) = store.lease("w", max_items=1, lease_s=60)
        store.fail("w", lease.item_id, code="corrupt_media", message="bad", retryable=False, retry_in_s=0)
        clock.advance(599)
        # A sweep round resubmitting a task whose file is bad gets the failed job, not another failing one.
        kept, created = enqueue(
            prepared(1), settings=settings, store=store, tenant=TENANT, idem_key="ls:task-1", clock=clock
        )
        clock.advance(1)
        renewed, created_after = enqueue(
            prepared(1), settings=settings, store=store, tenant=TENANT, idem_key="ls:task-1", clock=clock
        )
    finally:
        store.close()

    assert (kept.id, created) == (job.id, False)
    assert kept.status.value == "failed"
    assert created_after
    assert renewed.id != job.id


@pytest.mark.parametrize("key", ["ls:task-1", idempotency_key_idem("k-1"), content_idem(SPEC, [])])
def test_a_queued_or_running_job_is_returned_however_old_it_is(tmp_path: Path, key: str) -> None:
    clock = FakeClock()
    store = SqliteJobStore(tmp_path / "jobs.db", clock=clock)
    settings = Settings(idempotency_retention_s=600)

    def again() -> tuple[JobRecord, bool]:
        return enqueue(prepared(2), settings=settings, store=store, tenant=TENANT, idem_key=key, clock=clock)

    try:
        job, _ = again()
        clock.advance(601)  # a backlog longer than the window: the job has not started
        queued, queued_created = again()
        lease = store.lease("w", max_items=1, lease_s=60)[0]
        running, running_created = again()
        store.complete("w", lease.item_id, {})
        (lease,) = store.lease("w", max_items=1, lease_s=60)
        store.complete("w", lease.item_id, {})
        finished, finished_created = again()  # finished, and older than the window: forgotten
    finally:
        store.close()

    assert (queued.id, queued.status.value, queued_created) == (job.id, "queued", False)
    assert (running.id, running.status.value, running_created) == (job.id, "running", False)
    assert finished_created
    assert finished.id != job.id


def test_a_client_key_of_an_old_queued_job_still_refuses_another_body(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteJobStore(tmp_path / "jobs.db", clock=clock)
    settings = Settings(idempotency_retention_s=600)
    key = idempotency_key_idem("k-1")
    try:
        enqueue(prepared(1), settings=settings, store=store, tenant=TENANT, idem_key=key, clock=clock)
        clock.advance(601)
        with pytest.raises(PreannotateError) as caught:
            enqueue(
                prepared(1, threshold=0.9), settings=settings, store=store, tenant=TENANT, idem_key=key, clock=clock
            )
    finally:
        store.close()

    assert caught.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED


UNPINNED = {**PARAMS, "model_version": None, "class_names": None}
"""``PARAMS`` as stored while no worker has published the model (distributed cold start)."""

KEYS: dict[str, Callable[[dict[str, Any]], str]] = {
    "content": lambda params: content_idem(JobSpec.from_stored(params), prepared().items),
    "label-studio": lambda params: ls_delivery_idem(
        7, "TASKS_CREATED", [(1, "2024-01-01T00:00:00Z")], JobSpec.from_stored(params)
    ),
    "v7": lambda params: v7_delivery_idem("item-1", "media-hash", JobSpec.from_stored(params)),
}


@pytest.mark.parametrize("derive", KEYS.values(), ids=KEYS.keys())
def test_a_request_keeps_its_key_once_a_worker_publishes_its_model(derive: Callable[[dict[str, Any]], str]) -> None:
    assert derive(UNPINNED) == derive(PARAMS) == derive({**PARAMS, "model_version": "v2", "class_names": ["car"]})
    assert derive({**PARAMS, "fps": 2.0}) != derive(PARAMS)  # what the client sent still tells jobs apart


@pytest.mark.parametrize("derive", KEYS.values(), ids=KEYS.keys())
def test_a_job_queued_unpinned_is_the_job_of_its_pinned_version_only(
    store: SqliteJobStore, derive: Callable[[dict[str, Any]], str]
) -> None:
    """A Label Studio sweep round before the first worker published, then one after: one job, not two."""
    cold = prepared(1, model_version=None, class_names=None)
    job, _ = submit(store, cold, derive(cold.spec.to_stored()))
    store.pin_model(job.id, version="v1", class_names=["person"])

    warm = prepared(1)  # the published catalog names v1 now
    again, created = submit(store, warm, derive(warm.spec.to_stored()))
    upgraded = prepared(1, model_version="v2", class_names=["person", "car"])
    newer, created_newer = submit(store, upgraded, derive(upgraded.spec.to_stored()))

    assert (again.id, created) == (job.id, False)
    assert created_newer
    assert newer.id != job.id
    assert newer.spec.model_version == "v2"


@pytest.mark.parametrize("derive", KEYS.values(), ids=KEYS.keys())
def test_new_segmenter_weights_make_a_new_job_and_an_unpinned_segmenter_finds_the_old_one(
    store: SqliteJobStore, derive: Callable[[dict[str, Any]], str]
) -> None:
    """The segmenter's version is pinned like the model's: the same request after the segmenter's weights changed
    is another job under a content or delivery key; while either side is unpinned it is the same job."""
    sam_v1 = prepared(1, segmenter="hf:sam", segmenter_version="sam-v1")
    job, _ = submit(store, sam_v1, derive(sam_v1.spec.to_stored()))

    same, created_same = submit(store, sam_v1, derive(sam_v1.spec.to_stored()))
    unpinned = prepared(1, segmenter="hf:sam", segmenter_version=None)  # a distributed API pod's submission
    cold, created_cold = submit(store, unpinned, derive(unpinned.spec.to_stored()))
    sam_v2 = prepared(1, segmenter="hf:sam", segmenter_version="sam-v2")
    newer, created_newer = submit(store, sam_v2, derive(sam_v2.spec.to_stored()))

    assert (same.id, created_same) == (job.id, False)
    assert (cold.id, created_cold) == (job.id, False)
    assert created_newer
    assert newer.spec.segmenter_version == "sam-v2"


OWL = JobModel("hf:/owlv2", "owl-v1", (), open_vocabulary=True)
CENTRE = JobModel("builtin:centerface", "cf-v1", ("face",))


def test_a_prompted_job_is_pinned_to_the_view_of_a_published_open_vocabulary_model() -> None:
    prompts = PromptSet.parse("PED=pedestrian, car")
    pinned = model_for_prompts(OWL, prompts)
    assert (pinned.spec, pinned.version, pinned.class_names) == ("hf:/owlv2", f"owl-v1+{prompts.key}", ("PED", "car"))
    assert model_for_prompts(CENTRE, None) is CENTRE


@pytest.mark.parametrize(("model", "prompts"), [(CENTRE, PromptSet.parse("person")), (OWL, None)])
def test_prompts_a_published_model_cannot_take_are_invalid_prompts(model: JobModel, prompts: PromptSet | None) -> None:
    with pytest.raises(PreannotateError) as caught:
        model_for_prompts(model, prompts)
    assert caught.value.code is ErrorCode.INVALID_PROMPTS


@pytest.mark.parametrize("prompts", [PromptSet.parse("person"), None])
def test_an_unpublished_model_is_left_to_the_first_worker_to_pin_and_check(prompts: PromptSet | None) -> None:
    """Distributed cold start: nobody knows yet whether the model takes prompts."""
    cold = JobModel("hf:/owlv2", None, None)
    assert model_for_prompts(cold, prompts) is cold
