"""``ResultStore`` on S3 or an S3-compatible store (MinIO, Ceph): one gzip JSON object per item (issue 13).

One boto3 client (``service.pipeline.s3_client``: the fetcher's endpoint and credential rules) is shared by a
thread pool that reads a page of results at once. botocore's "standard" retries absorb a throttled or briefly
failing request; what still fails is raised as RESULTS_UNAVAILABLE (503, retryable), so a worker retries the item
and the API answers 503, as for an unreachable Redis. Messages name the store (``s3://bucket/prefix/``), the S3 error
code and the exception's type, never botocore's message or the request: no credential can leak through them.
"""

from __future__ import annotations

import importlib
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from service.config import Settings
from service.errors import ErrorCode, PreannotateError
from service.pipeline.s3_client import make_s3_client, s3_error_code, s3_http_status
from service.queue.results import job_prefix, result_from_bytes, result_key, result_to_bytes
from service.s3_routing import parse_results_url

log = logging.getLogger(__name__)

_CONTENT_TYPE = "application/gzip"
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_MISSING_BUCKET = frozenset({"NoSuchBucket"})
_DENIED = frozenset({"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"})


class S3ResultStore:
    """Item results under ``s3://bucket/prefix/{job id}/{position}.json.gz``.

    Args:
        url: ``s3://bucket[/prefix]`` (``PREANNOTATE_RESULTS_URL``).
        concurrency: Objects ``get_many`` reads at once (threads, and HTTP connections kept).
        connect_timeout_s: Per connection attempt.
        read_timeout_s: Longest wait for any read of a response.
        max_attempts: Attempts per request with botocore's "standard" retries (backoff with jitter).

    Raises:
        ValueError: ``url`` is not an ``s3://bucket/prefix`` URL.
        PreannotateError: MISSING_DEPENDENCY when boto3 (the ``s3`` extra) is not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        concurrency: int = 16,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._bucket, self._prefix = parse_results_url(url)
        self._client: Any = make_s3_client(
            needed_for="results_url (s3://)",
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            max_attempts=max_attempts,
            max_pool_connections=concurrency,
        )
        exceptions = importlib.import_module("botocore.exceptions")  # present: make_s3_client imported boto3
        self._errors: tuple[type[Exception], ...] = (exceptions.ClientError, exceptions.BotoCoreError)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-results")
        self._closed = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ResultStore:
        """The store ``PREANNOTATE_RESULTS_URL`` names; ``ValueError`` when it is unset."""
        if settings.results_url is None:
            raise ValueError("results_url is not set")
        return cls(settings.results_url, concurrency=settings.result_fetch_concurrency)

    @property
    def where(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    def key(self, job_id: str, position: int) -> str:
        return result_key(self._prefix, job_id, position)

    def ref(self, key: str) -> str:
        return f"s3://{self._bucket}/{key}"

    def key_of(self, ref: str) -> str:
        if not ref.startswith(self.where):
            raise PreannotateError(
                ErrorCode.RESULTS_UNAVAILABLE,
                f"a result is stored at {ref}, outside this process's result store {self.where}: "
                "give the API and the workers the same PREANNOTATE_RESULTS_URL",
            )
        return self._prefix + ref.removeprefix(self.where)

    def put(self, key: str, result: Mapping[str, object]) -> None:
        body = result_to_bytes(result)
        with self._guard(f"writing {key}"):
            self._client.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=_CONTENT_TYPE)

    def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        if len(keys) <= 1:  # no thread hop for a single item
            return [self._get(key) for key in keys]
        return list(self._pool.map(self._get, keys))  # in order; the first failure is raised

    def delete(self, key: str) -> None:
        with self._guard(f"deleting {key}"):  # DeleteObject on a missing key succeeds
            self._client.delete_object(Bucket=self._bucket, Key=key)

    def delete_job(self, job_id: str) -> int:
        keys = self._list(job_prefix(self._prefix, job_id))
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + _DELETE_BATCH]]
            with self._guard(f"deleting the objects of job {job_id}"):
                reply = self._client.delete_objects(Bucket=self._bucket, Delete={"Objects": batch, "Quiet": True})
            if errors := reply.get("Errors"):  # per-key failures come back in a 200 answer
                codes = sorted({str(e.get("Code")) for e in errors})
                raise self._unavailable(f"deleting {len(errors)} objects of job {job_id}", ", ".join(codes))
        return len(keys)

    def check(self) -> None:
        probe = f"{self._prefix}_probe/{uuid.uuid4().hex}"  # job ids are hex: never a job's folder
        with self._guard("checking the bucket"):
            self._client.head_bucket(Bucket=self._bucket)
        with self._guard(f"writing a probe object {probe}"):
            self._client.put_object(Bucket=self._bucket, Key=probe, Body=b"", ContentType=_CONTENT_TYPE)
        with self._guard(f"deleting the probe object {probe}"):
            self._client.delete_object(Bucket=self._bucket, Key=probe)

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._pool.shutdown(wait=True)
            self._client.close()

    # --- plumbing -----------------------------------------------------------------------------------------------

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            with self._guard(f"reading {key}", missing_ok=True):
                obj = self._client.get_object(Bucket=self._bucket, Key=key)
                data = obj["Body"].read()  # a dropped connection mid-body is a transport error too
        except _MissingKeyError:  # never written, or removed by a lifecycle rule
            return None
        try:
            return result_from_bytes(data)
        except (OSError, EOFError, ValueError) as exc:  # not gzip, truncated, not JSON (UnicodeError is a ValueError)
            # One damaged object must not cost the job's other results: it reads as missing (result_missing).
            log.error("result store %s: %s is not a stored result (%s); read as missing", self.where, key, exc)
            return None

    def _list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with self._guard(f"listing {prefix}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=prefix, PaginationConfig={"PageSize": _DELETE_BATCH}
            )
            for page in pages:
                keys += [str(obj["Key"]) for obj in page.get("Contents", ())]
        return keys

    @contextmanager
    def _guard(self, doing: str, *, missing_ok: bool = False) -> Iterator[None]:
        """botocore's errors as RESULTS_UNAVAILABLE naming the store; with ``missing_ok``, ``NoSuchKey`` as
        _MissingKeyError."""
        try:
            yield
        except self._errors as exc:
            code = s3_error_code(exc)
            if missing_ok and code == "NoSuchKey":
                raise _MissingKeyError from None
            raise self._unavailable(doing, _explain(code, s3_http_status(exc))) from None

    def _unavailable(self, doing: str, why: str) -> PreannotateError:
        return PreannotateError(
            ErrorCode.RESULTS_UNAVAILABLE,
            f"result store {self.where} unavailable while {doing}: {why}",
            retry_after_s=2,
        )


class _MissingKeyError(Exception):
    """No object at the key read."""


def _explain(code: str, status: int | None) -> str:
    if code in _MISSING_BUCKET or code == "404":  # HeadBucket's answer has no body, so no code but the status
        return "the bucket does not exist"
    if code in _DENIED:
        return f"access denied ({code}): check the AWS_* credentials and the bucket's policy"
    if status is None:
        return f"endpoint unreachable ({code})"
    return f"S3 error {code} (HTTP {status})"
