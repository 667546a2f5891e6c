"""The shared S3 client factory, through its two users, against a real S3-compatible server (moto, a subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ErrorCode, PreannotateError
from service.pipeline.fetch import Fetcher, FetchPolicy
from service.pipeline.s3_client import make_s3_client
from tests.s3_server import S3Bucket, require_moto_server


def test_the_fetcher_reads_s3_urls_from_a_custom_endpoint(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="in/a.jpg", Body=b"jpeg bytes", ContentType="image/jpeg")
    fetcher = Fetcher(FetchPolicy(allowed_buckets=frozenset({s3_bucket.name}), connect_timeout_s=2.0))
    got = fetcher.fetch(f"s3://{s3_bucket.name}/in/a.jpg", tmp_path)
    assert got.path.read_bytes() == b"jpeg bytes"
    assert (got.content_type, got.temporary) == ("image/jpeg", True)
    with pytest.raises(PreannotateError) as err:
        fetcher.fetch(f"s3://{s3_bucket.name}/in/missing.jpg", tmp_path)
    assert err.value.code is ErrorCode.INPUT_NOT_FOUND


def test_a_custom_endpoint_is_path_style_with_standard_retries(s3_bucket: S3Bucket) -> None:
    client = make_s3_client(
        needed_for="tests", connect_timeout_s=1.0, read_timeout_s=2.0, max_attempts=2, max_pool_connections=7
    )
    config = client.meta.config
    assert config.s3["addressing_style"] == "path"  # MinIO has no per-bucket DNS names
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (1.0, 2.0, 7)
    assert client.meta.endpoint_url == s3_bucket.endpoint
    assert s3_bucket.name in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_aws_itself_is_addressed_as_boto3_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    require_moto_server()  # boto3, or skip (fail under PREANNOTATE_REQUIRE_S3=1)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = make_s3_client(needed_for="tests", connect_timeout_s=1.0, read_timeout_s=1.0)
    assert client.meta.config.s3["addressing_style"] == "auto"
