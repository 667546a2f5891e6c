"""The one way the service builds a boto3 S3 client: the fetcher's ``s3://`` inputs and the result store.

boto3 is the ``s3`` extra, imported here on first use. The endpoint and credentials are boto3's own: its
credential chain (``AWS_ACCESS_KEY_ID``, a profile, a pod's web identity) and ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` for a MinIO or Ceph store, which then gets path-style addressing.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from service.errors import ErrorCode, PreannotateError


def custom_endpoint() -> str | None:
    """The S3 endpoint set in the environment (read by boto3 itself), or None for AWS."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_s3_client(
    *,
    needed_for: str,
    connect_timeout_s: float,
    read_timeout_s: float,
    max_attempts: int | None = None,
    max_pool_connections: int | None = None,
) -> Any:
    """A new boto3 S3 client; thread-safe once made, so one is shared by every thread of its owner.

    Args:
        needed_for: What needs it (``"s3:// URLs"``), for the missing-extra message.
        connect_timeout_s: Per connection attempt.
        read_timeout_s: Longest wait for any read.
        max_attempts: Total attempts with botocore's "standard" retries (transport errors, 5xx, throttling);
            None keeps botocore's default mode.
        max_pool_connections: HTTP connections kept; at least the number of threads sharing the client, or the
            extra threads open and drop a connection per request. None = botocore's default (10).

    Raises:
        PreannotateError: MISSING_DEPENDENCY naming the ``s3`` extra when boto3 is not installed.
    """
    try:
        boto3 = importlib.import_module("boto3")
        config = importlib.import_module("botocore.config")
    except ImportError:
        msg = f"{needed_for} need boto3: pip install 'preannotate[s3]'"
        raise PreannotateError(ErrorCode.MISSING_DEPENDENCY, msg) from None
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout_s,
        "read_timeout": read_timeout_s,
        # A MinIO/Ceph endpoint has no per-bucket DNS names.
        "s3": {"addressing_style": "path" if custom_endpoint() else "auto"},
    }
    if max_attempts is not None:
        options["retries"] = {"mode": "standard", "total_max_attempts": max_attempts}
    if max_pool_connections is not None:
        options["max_pool_connections"] = max_pool_connections
    # A session of its own: boto3's default session is not thread-safe.
    return boto3.session.Session().client("s3", config=config.Config(**options))


def s3_error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchKey``, ``403``), else the exception's type name;
    without importing botocore, and never the message, which may echo request details."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code) if code else type(exc).__name__


def s3_http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError``; None for a transport error (no response)."""
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return int(status) if status is not None else None
