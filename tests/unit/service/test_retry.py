"""The one backoff policy: its schedule, and the job worker and the queue reconnects waiting by it."""

from __future__ import annotations

import threading
import time

import pytest

from service.errors import ErrorCode, PreannotateError
from service.jobs.worker import retry_delay_s
from service.queue.redis_store import RedisJobStore
from service.queue.resilient_store import ResilientStore
from service.retry import RetryPolicy


@pytest.mark.parametrize(("attempt", "ceiling_s"), [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (8, 256.0), (9, 300.0)])
def test_the_ceiling_doubles_from_the_base_up_to_the_cap(attempt: int, ceiling_s: float) -> None:
    assert RetryPolicy(base_delay_s=2.0, max_delay_s=300.0).ceiling_s(attempt) == ceiling_s


def test_the_sleep_is_full_jitter_under_the_ceiling() -> None:
    assert RetryPolicy(base_delay_s=1.0, max_delay_s=60.0, random=lambda: 0.25).backoff_s(3) == 1.0


def test_a_long_outage_does_not_overflow_the_exponent() -> None:
    assert RetryPolicy(base_delay_s=0.25, max_delay_s=5.0).ceiling_s(100_000) == 5.0


def test_a_failed_items_requeue_delay_follows_the_policy() -> None:
    for attempt, ceiling_s in ((1, 2.0), (2, 4.0), (5, 32.0), (50, 300.0)):
        assert all(0 <= retry_delay_s(attempt) <= ceiling_s for _ in range(200))


def test_queue_reconnects_back_off_by_the_policy_and_survive_a_long_outage() -> None:
    # The backoff touches no Redis: an unreachable URL is never dialled.
    store = ResilientStore(RedisJobStore("redis://127.0.0.1:1"), threading.Event(), base_s=0.25, cap_s=5.0)
    down = PreannotateError(ErrorCode.NOT_READY, "the job queue is unreachable")

    first = store._down(down) - time.monotonic()
    assert 0 <= first <= 0.5  # one failure: up to base_s x 2
    for _ in range(5_000):
        retry_at = store._down(down)
    assert retry_at - time.monotonic() <= 5.0
