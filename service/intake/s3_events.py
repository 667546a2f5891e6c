"""S3 and MinIO event notifications: the ``ObjectCreated`` records of a delivery, keys decoded.

The body is ``{"Records": [{"eventName", "s3": {"bucket": {"name"}, "object": {"key", "size", "eTag",
"versionId", "sequencer"}}}, ...]}``; MinIO adds top-level ``EventName``/``Key`` and prefixes event names
with ``s3:`` (``s3:ObjectCreated:Put``; AWS sends ``ObjectCreated:Put``). One delivery may batch several
records. Keys arrive URL-encoded the way HTML forms are: ``+`` is a space, ``%2B`` a plus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote_plus

from service.errors import ErrorCode, PreannotateError
from service.s3_routing import S3Rule
from service.spec.job import JobSpec
from service.spec.requests import Destination, ItemIn, JobCreate, SlotIn

# MinIO files metadata-only changes under ObjectCreated too; the bytes are unchanged, so there is nothing to run.
METADATA_EVENTS = frozenset(
    f"ObjectCreated:{kind}" for kind in ("PutTagging", "DeleteTagging", "PutRetention", "PutLegalHold", "PutEncryption")
)
MAX_RECORDS = 1000
MAX_KEY_BYTES = 1024  # S3's own limit on a key's UTF-8 length


@dataclass(frozen=True, slots=True)
class S3Object:
    """One created object.

    Attributes:
        bucket: The bucket name.
        key: The object key, decoded.
        version: ``versionId`` (versioned buckets), else ``sequencer``, else ``eTag``: what tells two
            writes of the same key apart, hence part of the dedupe key.
        size: Bytes, when the event says.
        event: The event name without MinIO's ``s3:`` prefix (``ObjectCreated:Put``).
    """

    bucket: str
    key: str
    version: str
    size: int | None
    event: str


@dataclass(frozen=True, slots=True)
class S3Events:
    """What a delivery held: created objects, and how many records were something else."""

    created: tuple[S3Object, ...]
    other: int


def parse_events(body: object) -> S3Events:
    """The ``ObjectCreated`` objects of a notification body; other events (removals, MinIO's tagging and
    retention changes) are counted.

    An S3 ``s3:TestEvent`` (sent when notifications are configured) has no ``Records`` and yields nothing.

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` for a body that is not a notification, or a created record
            without bucket or key; ``TOO_MANY_ITEMS`` beyond ``MAX_RECORDS`` records.
    """
    if not isinstance(body, Mapping):
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "an S3 event notification is a JSON object")
    records = body.get("Records")
    if records is None:
        return S3Events((), 0)
    if not isinstance(records, list):
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "Records must be a list")
    if len(records) > MAX_RECORDS:
        raise PreannotateError(ErrorCode.TOO_MANY_ITEMS, f"{len(records)} records; the limit is {MAX_RECORDS}")
    created: list[S3Object] = []
    other = 0
    for n, record in enumerate(records):
        event = _event_name(record)
        if not event.startswith("ObjectCreated:") or event in METADATA_EVENTS:
            other += 1
            continue
        created.append(_object(record, event, n))
    return S3Events(tuple(created), other)


def _event_name(record: object) -> str:
    name = record.get("eventName") if isinstance(record, Mapping) else None
    text = name if isinstance(name, str) else ""
    return text.removeprefix("s3:")


def _object(record: Mapping[str, object], event: str, n: int) -> S3Object:
    s3 = record.get("s3")
    s3 = s3 if isinstance(s3, Mapping) else {}
    bucket_info, obj = s3.get("bucket"), s3.get("object")
    bucket = bucket_info.get("name") if isinstance(bucket_info, Mapping) else None
    raw_key = obj.get("key") if isinstance(obj, Mapping) else None
    if not isinstance(bucket, str) or not bucket or not isinstance(raw_key, str) or not raw_key:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"Records[{n}]: s3.bucket.name and s3.object.key needed")
    assert isinstance(obj, Mapping)
    key = unquote_plus(raw_key)
    if len(key.encode()) > MAX_KEY_BYTES or "\x00" in key:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"Records[{n}]: the object key is not a valid S3 key")
    version = next(
        (str(obj[f]) for f in ("versionId", "sequencer", "eTag") if isinstance(obj.get(f), str | int) and obj[f]), ""
    )
    size = obj.get("size")
    return S3Object(
        bucket=bucket,
        key=key,
        version=version,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        event=event,
    )


def s3_job(obj: S3Object, url: str, rule: S3Rule) -> JobCreate:
    """One object as a one-item job with the rule's model, sampling and destination; named by its file name."""
    name = PurePosixPath(obj.key).name or obj.key
    return JobCreate(
        items=[ItemIn(name=name[-300:], slots=[SlotIn(url=url)])],
        model=rule.model,
        fps=rule.fps,
        threshold=rule.threshold,
        destinations=[Destination(backend="v7")] if rule.destination == "v7" else [],
    )


def object_idem(obj: S3Object, spec: JobSpec) -> str:
    """The store key for "this write of this object, these job parameters": a redelivered event (same
    ``versionId`` / ``sequencer``) lands on the same job, an overwrite of the key makes a new one."""
    canonical = json.dumps(
        {"bucket": obj.bucket, "key": obj.key, "version": obj.version, "params": spec.to_stored()},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "s3:" + hashlib.sha256(canonical.encode()).hexdigest()
