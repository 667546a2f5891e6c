"""S3 routing rules: which bucket/prefix becomes which job (model, fps, destination), and the object's URL.

A leaf below every layer (no service imports): ``service.config`` imports :class:`S3Rule` for the
``webhook_s3_rules`` field, and the intake webhooks match objects with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

_BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"  # S3's bucket naming rules (MinIO follows them)


class S3Rule(BaseModel):
    """Objects created under ``bucket``/``prefix`` become one job each.

    Attributes:
        bucket: The bucket name, exactly.
        prefix: Key prefix (``""`` = the whole bucket); the longest matching prefix wins.
        destination: ``"v7"`` imports into the V7 dataset (the item is found by name, else registered from
            the team's external storage when ``v7_storage_slug`` is set, which needs ``s3://`` URLs);
            ``None`` keeps the results in the job only. Label Studio and Encord need an existing task id or
            data hash, which a new object does not have.
        model: A loaded model's spec or name; None = the service default.
        fps: Frames per second sampled from videos; None = the service default.
        threshold: Minimum score; None = the service default.
    """

    bucket: str = Field(pattern=_BUCKET_PATTERN)
    prefix: str = Field("", max_length=1024)
    destination: Literal["v7"] | None = None
    model: str | None = None
    fps: float | None = Field(None, ge=0.0, le=1000.0)
    threshold: float | None = Field(None, ge=0.0, le=1.0)

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("prefix")
    @classmethod
    def _relative(cls, prefix: str) -> str:
        if prefix.startswith("/"):
            raise ValueError("a key prefix never starts with '/'")
        return prefix


def match_rule(rules: Iterable[S3Rule], bucket: str, key: str) -> S3Rule | None:
    """The rule for an object: same bucket, longest prefix of ``key``; None when no rule matches."""
    matching = [rule for rule in rules if rule.bucket == bucket and key.startswith(rule.prefix)]
    return max(matching, key=lambda rule: len(rule.prefix), default=None)


def object_url(bucket: str, key: str, endpoint: str | None) -> str | None:
    """Where a worker fetches the object.

    ``s3://bucket/key`` (the fetcher's own S3 client: the bucket must be in ``fetch_allowed_buckets``), or,
    with ``endpoint`` (a MinIO at ``http://minio:9000``), the path-style URL ``{endpoint}/{bucket}/{key}``,
    which the fetcher reaches only when that host is in ``fetch_allowed_hosts``.

    Returns:
        The URL, or None for a key an ``s3://`` URL cannot carry: the fetcher passes the URL path through
        unquoted, so ``?`` and ``#`` would cut the key.
    """
    if endpoint:
        return f"{endpoint.rstrip('/')}/{bucket}/{quote(key, safe='/')}"
    if "?" in key or "#" in key:
        return None
    return f"s3://{bucket}/{key}"


def check_rules(
    rules: Sequence[S3Rule], *, endpoint: str | None, allowed_buckets: Iterable[str], allowed_hosts: Iterable[str]
) -> None:
    """Refuse settings whose objects no worker could fetch (for the settings validator).

    Raises:
        ValueError: A rule's bucket is not allow-listed (``s3://`` mode), or the endpoint is not a plain
            ``http(s)://host[:port]`` whose host is allow-listed (endpoint mode).
    """
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
            raise ValueError(f"webhook_s3_endpoint must be http(s)://host[:port], got {endpoint!r}")
        if parts.username or parts.password:
            raise ValueError("webhook_s3_endpoint must not carry credentials")
        hosts = {h.lower() for h in allowed_hosts}
        if parts.hostname.lower() not in hosts and parts.netloc.lower() not in hosts:
            raise ValueError(f"add {parts.netloc} to fetch_allowed_hosts, or workers cannot read webhook_s3_endpoint")
        return
    buckets = set(allowed_buckets)
    missing = sorted({rule.bucket for rule in rules} - buckets)
    if missing:
        raise ValueError(f"webhook_s3_rules buckets {missing} must be in fetch_allowed_buckets (s3:// fetches)")


def parse_results_url(url: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` as ``(bucket, prefix)``, the prefix empty or ending in ``/`` (PREANNOTATE_RESULTS_URL).

    Raises:
        ValueError: Another scheme, a bucket name S3 refuses, credentials, a query, or a prefix with empty or
            ``.``/``..`` segments.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"results_url must be s3://bucket/prefix, got scheme {parts.scheme or 'none'!r}")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError("results_url carries no credentials, query or fragment (credentials come from AWS_*)")
    bucket = parts.netloc
    if not re.fullmatch(_BUCKET_PATTERN, bucket):
        raise ValueError(f"results_url: {bucket!r} is not an S3 bucket name")
    prefix = parts.path.strip("/")
    if prefix and any(segment in ("", ".", "..") for segment in prefix.split("/")):
        raise ValueError(f"results_url: prefix {prefix!r} has an empty, '.' or '..' segment")
    return bucket, f"{prefix}/" if prefix else ""
