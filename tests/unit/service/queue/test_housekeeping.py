"""The API's housekeeper on a real SQLite store: expired jobs go at startup and then periodically, in batches, and a
store that fails now and then does not end the thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from service.errors import ErrorCode, PreannotateError
from service.queue.housekeeping import Housekeeper
from service.queue.sqlite_store import SqliteJobStore
from tests.unit.service.queue.store_contract import TENANT, FakeClock, make_job

DAY_S = 86400.0


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_expire_now_works_off_a_backlog_in_batches(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteJobStore(tmp_path / "jobs.db", clock=clock, retention_s=DAY_S)
    try:
        for i in range(230):
            make_job(store, 1, key=f"k{i}")
        keeper = Housekeeper(expire=store.expire_jobs, expire_every_s=60.0)
        assert keeper.expire_now() == 0
        clock.advance(DAY_S)

        assert keeper.expire_now() == 230  # three calls of at most 100

        assert store.list_jobs(tenant=TENANT, limit=5) == ([], None)
    finally:
        store.close()


def test_the_thread_expires_at_start_and_every_period_and_survives_failures(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteJobStore(tmp_path / "jobs.db", clock=clock, retention_s=DAY_S)
    calls: list[str] = []

    def flaky_expire(*, limit: int) -> int:
        calls.append("expire")
        if len(calls) == 1:
            raise PreannotateError(ErrorCode.NOT_READY, "the store is down")
        return store.expire_jobs(limit=limit)

    promoted = threading.Event()
    keeper = Housekeeper(
        expire=flaky_expire, expire_every_s=1.0, promote=lambda: int(promoted.set() or 0), promote_every_s=0.05
    )
    old = make_job(store, 1, key="old")
    clock.advance(DAY_S)
    keeper.start()
    try:
        assert wait_for(lambda: store.get_job(tenant=TENANT, job_id=old.id) is None)
        assert promoted.is_set()
        assert calls.count("expire") >= 2  # the failed first sweep, then the one a period later
    finally:
        keeper.stop()
        store.close()


def test_a_slow_sweep_never_holds_up_the_retry_promoter() -> None:
    release = threading.Event()
    promoted: list[float] = []

    def stuck_expire(*, limit: int) -> int:  # a bucket that answers after its timeouts, again and again
        release.wait(10.0)
        return 0

    def promote() -> int:
        promoted.append(time.monotonic())
        return 0

    keeper = Housekeeper(expire=stuck_expire, expire_every_s=60.0, promote=promote, promote_every_s=0.02)
    keeper.start()
    try:
        assert wait_for(lambda: len(promoted) >= 10, timeout_s=3.0)
    finally:
        release.set()
        keeper.stop()
