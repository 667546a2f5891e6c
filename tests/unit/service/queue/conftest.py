"""A real redis-server per test module (tests/redis_server.py), emptied before each test that uses ``db``, and the
``RedisJobStore``s on it; a module whose stores keep results in object storage overrides ``results_url``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from service.queue.redis_store import RedisJobStore
from service.queue.s3_results import S3ResultStore
from service.queue.store import JobStore
from tests.redis_server import RedisServer
from tests.unit.service.queue.store_contract import FakeClock, StoreFactory


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = RedisServer()
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
def results_url() -> str | None:
    """Where the stores' results go: None = in Redis (``PREANNOTATE_RESULTS_URL`` unset)."""
    return None


@pytest.fixture
def make_store(
    server: RedisServer, db: redis.Redis, clock: FakeClock, results_url: str | None
) -> Iterator[StoreFactory]:
    stores: list[RedisJobStore] = []

    def factory(*, max_attempts: int = 3, max_saved_thresholds: int = 256) -> JobStore:
        results = None if results_url is None else S3ResultStore(results_url, concurrency=4)
        store = RedisJobStore(
            server.url,
            max_attempts=max_attempts,
            clock=clock,
            results=results,
            max_saved_thresholds=max_saved_thresholds,
        )
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
