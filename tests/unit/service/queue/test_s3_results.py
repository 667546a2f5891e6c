"""S3ResultStore against a real S3-compatible server (moto's server mode, a subprocess): boto3 over HTTP."""

from __future__ import annotations

import gzip
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.queue import s3_results
from service.queue.results import result_from_bytes
from service.queue.s3_results import S3ResultStore
from tests.s3_server import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    UNSET_ENV,
    MotoServer,
    S3Bucket,
    client_env,
    denying,
    require_moto_server,
)

RESULT = {"name": "clip.mp4", "frames": [{"t_s": 0.5, "boxes": [[1, 2, 3, 4]], "labels": ["cat"]}]}


def make_store(url: str, *, timeout_s: float = 2.0, max_attempts: int = 3) -> S3ResultStore:
    # short timeouts fail the unreachable cases fast; the defaults are for production
    return S3ResultStore(
        url, concurrency=4, connect_timeout_s=timeout_s, read_timeout_s=timeout_s, max_attempts=max_attempts
    )


@pytest.fixture
def store(s3_bucket: S3Bucket) -> Iterator[S3ResultStore]:
    made = make_store(f"s3://{s3_bucket.name}")
    yield made
    made.close()


def object_keys(bucket: S3Bucket) -> list[str]:
    listed = bucket.client.list_objects_v2(Bucket=bucket.name)
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def assert_no_credentials(message: str) -> None:
    assert ACCESS_KEY_ID not in message
    assert SECRET_ACCESS_KEY not in message


def test_round_trip_writes_one_gzip_object_at_the_key(store: S3ResultStore, s3_bucket: S3Bucket) -> None:
    key = store.key("job1", 0)
    store.put(key, RESULT)
    assert store.get_many([key]) == [RESULT]
    # read back with a plain client: the object is what the contract says, not just what our reader accepts
    obj = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)
    assert key == "job1/0.json.gz"
    assert obj["ContentType"] == "application/gzip"
    assert json.loads(gzip.decompress(obj["Body"].read())) == RESULT


def test_a_second_delivery_overwrites_its_own_object(store: S3ResultStore, s3_bucket: S3Bucket) -> None:
    key = store.key("job1", 3)
    store.put(key, {"attempt": 1})
    store.put(key, {"attempt": 2})
    assert object_keys(s3_bucket) == [key]
    assert store.get_many([key]) == [{"attempt": 2}]


def test_get_many_keeps_order_and_gives_none_for_a_missing_key(store: S3ResultStore) -> None:
    keys = [store.key("job1", position) for position in range(12)]
    for position, key in enumerate(keys):
        if position != 5:
            store.put(key, {"position": position})
    got = store.get_many(list(reversed(keys)))
    expected = [None if p == 5 else {"position": p} for p in reversed(range(12))]
    assert got == expected
    assert store.get_many([]) == []
    assert store.get_many([keys[5]]) == [None]


def test_get_many_reads_concurrently(s3_bucket: S3Bucket) -> None:
    store = make_store(f"s3://{s3_bucket.name}")
    seen: set[str] = set()
    real_get = store._get  # observing which threads read; the reads themselves stay real

    def get(key: str) -> object:
        seen.add(threading.current_thread().name)
        time.sleep(0.05)
        return real_get(key)

    store._get = get  # type: ignore[method-assign]
    keys = [store.key("job1", p) for p in range(8)]
    for key in keys:
        store.put(key, {"k": key})
    assert store.get_many(keys) == [{"k": key} for key in keys]
    assert len(seen) > 1
    store.close()


def test_delete_and_delete_job_remove_only_that_job(store: S3ResultStore, s3_bucket: S3Bucket) -> None:
    for job, count in (("ab", 3), ("abc", 2), ("b", 1)):
        for position in range(count):
            store.put(store.key(job, position), {"job": job})
    assert store.delete_job("ab") == 3
    assert object_keys(s3_bucket) == ["abc/0.json.gz", "abc/1.json.gz", "b/0.json.gz"]
    assert store.delete_job("ab") == 0  # nothing left is fine
    store.delete(store.key("abc", 0))
    store.delete(store.key("abc", 0))  # gone already is fine
    assert object_keys(s3_bucket) == ["abc/1.json.gz", "b/0.json.gz"]


def test_delete_job_lists_and_deletes_in_batches(
    store: S3ResultStore, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3's page and DeleteObjects limit is 1000 keys; 4 runs the same paging over 11 keys (1001 puts take seconds)
    monkeypatch.setattr(s3_results, "_DELETE_BATCH", 4)
    for position in range(11):
        store.put(store.key("big", position), {})
    store.put(store.key("other", 0), {})
    calls: list[int] = []
    real = store._client.delete_objects  # counting the real calls, which still run

    def delete_objects(**kwargs: object) -> object:
        calls.append(len(kwargs["Delete"]["Objects"]))  # type: ignore[index]
        return real(**kwargs)

    monkeypatch.setattr(store._client, "delete_objects", delete_objects)
    assert store.delete_job("big") == 11
    assert calls == [4, 4, 3]
    assert object_keys(s3_bucket) == ["other/0.json.gz"]


def test_a_prefix_is_honoured(s3_bucket: S3Bucket) -> None:
    store = make_store(f"s3://{s3_bucket.name}/some/prefix")
    assert store.where == f"s3://{s3_bucket.name}/some/prefix/"
    key = store.key("job1", 0)
    store.put(key, RESULT)
    assert object_keys(s3_bucket) == ["some/prefix/job1/0.json.gz"]
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="job1/0.json.gz", Body=gzip.compress(b"{}"))
    assert store.delete_job("job1") == 1  # the same job id outside the prefix is not ours
    assert object_keys(s3_bucket) == ["job1/0.json.gz"]
    store.close()


def test_from_settings(s3_bucket: S3Bucket) -> None:
    url = f"s3://{s3_bucket.name}/r"
    settings = Settings(queue_url="redis://localhost:6379/0", results_url=url, result_fetch_concurrency=3)
    store = S3ResultStore.from_settings(settings)
    store.check()
    assert store.where == url + "/"
    store.close()


def test_check_passes_and_names_a_missing_bucket(store: S3ResultStore, s3_bucket: S3Bucket) -> None:
    store.check()
    missing = make_store(f"s3://{s3_bucket.name}-gone/p")
    with pytest.raises(PreannotateError) as err:
        missing.check()
    assert err.value.code is ErrorCode.RESULTS_UNAVAILABLE
    assert f"s3://{s3_bucket.name}-gone/p/" in err.value.message
    assert "does not exist" in err.value.message
    with pytest.raises(PreannotateError, match="does not exist"):
        missing.put(missing.key("job1", 0), RESULT)
    missing.close()


def test_access_denied_is_named_without_the_credentials(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store(f"s3://{s3_bucket.name}")
    store.put(store.key("job1", 0), RESULT)
    with denying(s3_bucket, "s3:*"), pytest.raises(PreannotateError) as err:
        store.get_many([store.key("job1", 0)])
    if err.value.code is not ErrorCode.RESULTS_UNAVAILABLE or "access denied" not in err.value.message:
        pytest.fail(f"not an access-denied RESULTS_UNAVAILABLE: {err.value.code} {err.value.message}")
    assert_no_credentials(err.value.message)
    store.close()


def test_a_stopped_server_is_not_ready_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    require_moto_server()
    server = MotoServer()  # its own: stopping the session's would fail every later test
    server.start()
    try:
        for name in UNSET_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in client_env(server.endpoint).items():
            monkeypatch.setenv(name, value)
        store = make_store("s3://stopped-bucket/p", timeout_s=0.5)
        store._client.create_bucket(Bucket="stopped-bucket")  # the store's own client, to arrange
        key = store.key("job1", 0)
        store.put(key, RESULT)
        server.kill()
        for call in (store.check, lambda: store.put(key, RESULT), lambda: store.get_many([key, key])):
            started = time.monotonic()
            with pytest.raises(PreannotateError) as err:
                call()
            assert time.monotonic() - started < 5.0  # three attempts with backoff, never a hang
            assert err.value.code is ErrorCode.RESULTS_UNAVAILABLE
            assert "s3://stopped-bucket/p/" in err.value.message
            assert "unreachable" in err.value.message
            assert_no_credentials(err.value.message)
        store.close()
    finally:
        server.cleanup()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never answers: a hung store."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_hung_endpoint_times_out_as_not_ready(
    silent_endpoint: str, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", silent_endpoint)
    store = make_store(f"s3://{s3_bucket.name}", timeout_s=0.3, max_attempts=2)
    started = time.monotonic()
    with pytest.raises(PreannotateError) as err:
        store.check()
    assert time.monotonic() - started < 5.0
    assert err.value.code is ErrorCode.RESULTS_UNAVAILABLE
    assert "unreachable" in err.value.message
    assert_no_credentials(err.value.message)
    store.close()


def test_a_corrupt_object_reads_as_missing_and_is_logged(
    store: S3ResultStore, s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    damaged, fine = store.key("job1", 0), store.key("job1", 1)
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=damaged, Body=b"not gzip")
    store.put(fine, RESULT)

    # one damaged object costs only its own item (listed as result_missing), never the job's other results
    assert store.get_many([damaged, fine]) == [None, RESULT]
    assert f"{damaged} is not a stored result" in caplog.text


def test_refs_name_the_bucket_and_a_ref_of_another_store_is_refused(store: S3ResultStore, s3_bucket: S3Bucket) -> None:
    key = store.key("job1", 3)
    ref = store.ref(key)

    assert ref == f"s3://{s3_bucket.name}/job1/3.json.gz"
    assert store.key_of(ref) == key
    with pytest.raises(PreannotateError) as err:
        store.key_of("s3://another-bucket/results/job1/3.json.gz")
    assert err.value.code is ErrorCode.RESULTS_UNAVAILABLE
    assert "same PREANNOTATE_RESULTS_URL" in err.value.message


def test_check_writes_a_probe_and_names_a_missing_write_permission(s3_bucket: S3Bucket) -> None:
    store = make_store(f"s3://{s3_bucket.name}/results")
    store.check()
    assert object_keys(s3_bucket) == []  # the probe is removed again
    try:
        with (
            denying(s3_bucket, "s3:PutObject"),
            pytest.raises(PreannotateError, match=r"writing a probe object .*denied"),
        ):
            store.check()  # HeadBucket alone passes here: every item would fail later instead
    finally:
        store.close()


def test_without_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` fails even where installed
    with pytest.raises(PreannotateError) as err:
        S3ResultStore("s3://bucket/p")
    assert err.value.code is ErrorCode.MISSING_DEPENDENCY
    assert "pip install 'preannotate[s3]'" in err.value.message


def test_a_bad_url_is_refused() -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        S3ResultStore("https://bucket/p")


def test_objects_decode_with_the_contract(store: S3ResultStore, s3_bucket: S3Bucket) -> None:
    key = store.key("job2", 7)
    store.put(key, RESULT)
    raw = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
    assert result_from_bytes(raw) == RESULT
