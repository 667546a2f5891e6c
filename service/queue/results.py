"""Where item results live when the job store keeps only their keys: object storage (issue 13).

The job store (SQLite, Redis) holds the queue, each item's state and counters. An item's result (the typed
``ItemPredictions`` a worker computed, as JSON) is either stored inline beside them, or, with a ``ResultStore``,
written as one compressed object before the item is settled, the job store keeping only the object's key.
The key is derived from the job and the item's position, so an item delivered twice (a worker killed after
writing, a lease that lapsed) overwrites its own object and never leaves a second one.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

RESULT_SUFFIX = ".json.gz"
# Level 6 (zlib's default) packs a 1.8 MB video result to about an eighth in ~40 ms; level 9 buys a few % more
# for twice the CPU, on the worker's thread that is about to settle the item.
_GZIP_LEVEL = 6


def result_to_bytes(result: Mapping[str, object]) -> bytes:
    """A result as its stored object: compact JSON, gzip (``mtime=0``: the same result is the same bytes)."""
    text = json.dumps(result, separators=(",", ":"))
    return gzip.compress(text.encode(), compresslevel=_GZIP_LEVEL, mtime=0)


def result_from_bytes(data: bytes) -> dict[str, Any]:
    """A stored object's result (``result_to_bytes`` undone)."""
    value = json.loads(gzip.decompress(data))
    if not isinstance(value, dict):
        raise ValueError(f"a stored result is a JSON object, not {type(value).__name__}")
    return value


def result_key(prefix: str, job_id: str, position: int) -> str:
    """An item's object key: ``{prefix}{job id}/{position}.json.gz``; every object of a job shares the job's folder
    (``job_prefix``), which is how a deleted or expired job's objects are found."""
    return f"{job_prefix(prefix, job_id)}{position}{RESULT_SUFFIX}"


def job_prefix(prefix: str, job_id: str) -> str:
    if not job_id or "/" in job_id:
        raise ValueError(f"not a job id: {job_id!r}")
    return f"{prefix}{job_id}/"


class ResultStore(Protocol):
    """Item results as objects, one per item; what the distributed job store needs from object storage.

    Every method raises ``PreannotateError(RESULTS_UNAVAILABLE)`` (503, retryable) when the storage cannot be
    reached or refuses, so a worker retries the item and the API answers 503, as for an unreachable queue.
    """

    @property
    def where(self) -> str:
        """The store as a URL without credentials (``s3://bucket/prefix/``), for messages and logs."""
        ...

    def key(self, job_id: str, position: int) -> str:
        """The object key of the item at ``position`` of ``job_id`` (``result_key`` under the store's prefix)."""
        ...

    def ref(self, key: str) -> str:
        """Where ``key`` is, whatever the reader's settings: ``s3://bucket/key`` (what the job store keeps)."""
        ...

    def key_of(self, ref: str) -> str:
        """The key of a ``ref`` this store made.

        Raises:
            PreannotateError: RESULTS_UNAVAILABLE when ``ref`` is in another bucket or under another prefix (the
                API and the workers disagree on PREANNOTATE_RESULTS_URL).
        """
        ...

    def put(self, key: str, result: Mapping[str, object]) -> None:
        """Write ``result`` at ``key`` (``result_to_bytes``), replacing what an earlier delivery wrote there."""
        ...

    def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """The results at ``keys``, in order, fetched concurrently; None where no object exists (deleted by a
        lifecycle rule, or never written) or where it is not a stored result (logged)."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object (gone already is fine)."""
        ...

    def delete_job(self, job_id: str) -> int:
        """Remove every object of ``job_id``; returns how many there were."""
        ...

    def check(self) -> None:
        """Write and delete a probe object (startup): raise ``PreannotateError`` naming the bucket when either fails,
        so missing permissions show at startup rather than on every item."""
        ...

    def close(self) -> None: ...
