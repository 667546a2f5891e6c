"""The previews' media cache with the real fetcher over HTTP on 127.0.0.1: one fetch per tenant and URL, the
bound on disk kept (least recently used removed, files in use never), and the files gone once cleared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
