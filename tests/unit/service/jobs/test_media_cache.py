"""The previews' media cache with the real fetcher over HTTP on 127.0.0.1: one fetch per tenant and URL, the
bound on disk kept (least recently used removed, files in use never, the latest kept even over the bound), the
files gone once cleared; threads sharing it, files vanishing under it, and a caller's deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from service.errors import ErrorCode, PreannotateError
from service.jobs.media_cache import MediaCache
from service.pipeline.fetch import Fetcher, FetchPolicy
from tests.integration.servers import MediaServer

SIZE = 1000


@pytest.fixture
def media(tmp_path: Path) -> Iterator[MediaServer]:
    root = tmp_path / "served"
    root.mkdir()
    for name in ("a", "b", "c"):
        (root / f"{name}.bin").write_bytes(name.encode() * SIZE)
    with MediaServer(root) as server:
        yield server


def cache_for(media: MediaServer, tmp_path: Path, max_bytes: int) -> MediaCache:
    fetcher = Fetcher(FetchPolicy(allowed_hosts=frozenset({f"127.0.0.1:{media.port}"})))
    return MediaCache(fetcher, max_bytes=max_bytes, work_dir=tmp_path)


def cached_files(cache: MediaCache) -> int:
    return len(list(cache.root.iterdir()))


def test_a_url_is_fetched_once_per_tenant(media: MediaServer, tmp_path: Path) -> None:
    cache = cache_for(media, tmp_path, 10 * SIZE)
    for tenant in ("t1", "t1", "t2", "t1"):
        with cache.local(tenant, f"{media.url}/a.bin") as path:
            assert path.read_bytes() == b"a" * SIZE

    assert media.hits == ["/a.bin", "/a.bin"]  # t1 once, t2 once: tenants never share a download
    assert cache.size_bytes == 2 * SIZE
    cache.close()
    assert not cache.root.exists()


def test_the_bound_removes_the_least_recently_used_file_never_one_in_use(media: MediaServer, tmp_path: Path) -> None:
    cache = cache_for(media, tmp_path, int(2.5 * SIZE))
    with cache.local("t", f"{media.url}/a.bin") as a:
        with cache.local("t", f"{media.url}/b.bin"):
            pass
        with cache.local("t", f"{media.url}/c.bin"):
            assert a.exists()  # in use: kept over the bound; b, the least recently used free one, went
            assert cached_files(cache) == 2
        assert a.read_bytes() == b"a" * SIZE
    assert cache.size_bytes <= int(2.5 * SIZE)
    assert cached_files(cache) == 2

    with cache.local("t", f"{media.url}/c.bin"):
        pass
    assert media.hits == ["/a.bin", "/b.bin", "/c.bin"]  # c still cached
    cache.clear()
    assert (cache.size_bytes, cached_files(cache)) == (0, 0)
    cache.close()


def test_a_zero_bound_keeps_nothing_once_read(media: MediaServer, tmp_path: Path) -> None:
    cache = cache_for(media, tmp_path, 0)
    with cache.local("t", f"{media.url}/a.bin") as path:
        assert path.exists()
    assert (cache.size_bytes, cached_files(cache)) == (0, 0)
    cache.close()


def test_a_file_over_the_bound_is_kept_while_it_is_the_latest(media: MediaServer, tmp_path: Path) -> None:
    cache = cache_for(media, tmp_path, SIZE // 2)  # smaller than any one file
    for _ in range(3):
        with cache.local("t", f"{media.url}/a.bin") as path:
            assert path.read_bytes() == b"a" * SIZE
    assert media.hits == ["/a.bin"]  # paging a large video's frames does not download it per frame

    with cache.local("t", f"{media.url}/b.bin"):
        pass
    assert (cache.size_bytes, cached_files(cache)) == (SIZE, 1)  # a went: the bound plus the latest file only
    cache.close()


def test_two_threads_wanting_one_url_fetch_it_once(media: MediaServer, tmp_path: Path) -> None:
    cache = cache_for(media, tmp_path, 10 * SIZE)
    media.delay_s = 0.3  # the second thread asks while the first one's fetch is under way
    start = threading.Barrier(2)

    def read(tenant: str) -> bytes:
        start.wait()
        with cache.local(tenant, f"{media.url}/a.bin") as path:
            return path.read_bytes()

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(read, ["t", "t"])) == [b"a" * SIZE] * 2
    assert media.hits == ["/a.bin"]
    cache.close()


def test_another_threads_fetches_never_evict_a_file_in_use(media: MediaServer, tmp_path: Path) -> None:
    cache = cache_for(media, tmp_path, SIZE)
    holding, done = threading.Event(), threading.Event()

    def hold_a() -> bytes:
        with cache.local("t", f"{media.url}/a.bin") as path:
            holding.set()
            assert done.wait(10)
            return path.read_bytes()

    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(hold_a)
        assert holding.wait(10)
        for name in ("b", "c", "b"):  # each over the bound with a: only free files go
            with cache.local("t", f"{media.url}/{name}.bin") as path:
                assert path.read_bytes() == name.encode() * SIZE
        assert cached_files(cache) == 2  # a (in use) and the latest, b
        done.set()
        assert held.result() == b"a" * SIZE
    with cache.local("t", f"{media.url}/c.bin"):
        pass
    assert (cache.size_bytes, cached_files(cache)) == (SIZE, 1)  # once released, a is evicted like any other
    cache.close()


def test_a_vanished_file_is_fetched_again_and_each_reader_keeps_its_own(media: MediaServer, tmp_path: Path) -> None:
    cache = cache_for(media, tmp_path, SIZE // 2)
    with ExitStack() as first:
        old = first.enter_context(cache.local("t", f"{media.url}/a.bin"))
        old.unlink()  # a tmp cleaner
        with ExitStack() as second:
            new = second.enter_context(cache.local("t", f"{media.url}/a.bin"))
            assert new != old  # a new name: the old reader's file is never the new one
            first.close()  # the old reader is done: the new file is still in use
            with cache.local("t", f"{media.url}/b.bin"):
                pass
            assert new.read_bytes() == b"a" * SIZE
        assert media.hits == ["/a.bin", "/a.bin", "/b.bin"]
    with cache.local("t", f"{media.url}/c.bin"):
        pass
    assert (cache.size_bytes, cached_files(cache)) == (SIZE, 1)  # no pin left behind: only c, the latest
    cache.close()


def test_a_fetch_stops_at_the_callers_deadline(media: MediaServer, tmp_path: Path) -> None:
    cache = cache_for(media, tmp_path, 10 * SIZE)
    media.delay_s = 3.0
    started = time.monotonic()
    with pytest.raises(PreannotateError) as caught, cache.local("t", f"{media.url}/a.bin", deadline_s=started + 0.2):
        pass
    assert caught.value.code is ErrorCode.FETCH_TIMEOUT
    assert time.monotonic() - started < 1.5  # not the fetch policy's 30 s read timeout
    cache.close()
