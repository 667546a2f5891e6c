"""S3 / MinIO event notifications: created objects with decoded keys; everything else counted, not run."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import ErrorCode, PreannotateError
from service.intake.s3_events import parse_events


def record(key: str, *, event: str = "ObjectCreated:Put", bucket: str = "uploads", **obj: Any) -> dict[str, Any]:
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": event,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": {"key": key, **obj}},
    }


def test_keys_are_url_decoded_like_forms() -> None:
    events = parse_events({"Records": [record("cams/front+door/1%2B1.jpg"), record("caf%C3%A9/%E2%9C%93%20ok.png")]})
    assert [o.key for o in events.created] == ["cams/front door/1+1.jpg", "café/✓ ok.png"]


def test_a_batch_makes_one_object_per_created_record_and_counts_the_rest() -> None:
    events = parse_events(
        {
            "Records": [
                record("a.jpg", event="ObjectCreated:Put", size=10, sequencer="0055AED6DCD90281E5"),
                record("b.jpg", event="ObjectRemoved:Delete"),
                record("c.mp4", event="ObjectCreated:CompleteMultipartUpload", versionId="v2", sequencer="1"),
                record("d.jpg", event="s3:ObjectCreated:Copy", eTag="abc"),  # MinIO's prefix
                record("e.jpg", event="s3:ObjectAccessed:Get"),
                record("f.jpg", event="ObjectRestore:Completed"),
                record("a.jpg", event="s3:ObjectCreated:PutTagging"),  # MinIO: metadata only, same bytes
            ]
        }
    )
    assert [(o.key, o.event) for o in events.created] == [
        ("a.jpg", "ObjectCreated:Put"),
        ("c.mp4", "ObjectCreated:CompleteMultipartUpload"),
        ("d.jpg", "ObjectCreated:Copy"),
    ]
    assert events.other == 4
    a, c, d = events.created
    assert (a.version, a.size) == ("0055AED6DCD90281E5", 10)
    assert c.version == "v2"  # versionId wins over sequencer
    assert d.version == "abc"


def test_minio_envelope() -> None:
    body = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": "uploads/x.png",
        "Records": [record("x.png", event="s3:ObjectCreated:Put")],
    }
    (obj,) = parse_events(body).created
    assert (obj.bucket, obj.key) == ("uploads", "x.png")


def test_the_s3_test_event_makes_nothing() -> None:
    events = parse_events({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "uploads"})
    assert events.created == ()
    assert events.other == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], ErrorCode.INVALID_ARGUMENT),
        ({"Records": {}}, ErrorCode.INVALID_ARGUMENT),
        ({"Records": [record("")]}, ErrorCode.INVALID_ARGUMENT),
        ({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "a"}}}]}, ErrorCode.INVALID_ARGUMENT),
        ({"Records": [record("a%00b")]}, ErrorCode.INVALID_ARGUMENT),
        ({"Records": [record("k" * 1025)]}, ErrorCode.INVALID_ARGUMENT),
        ({"Records": [record("a")] * 1001}, ErrorCode.TOO_MANY_ITEMS),
    ],
)
def test_malformed_notifications(body: Any, code: ErrorCode) -> None:
    with pytest.raises(PreannotateError) as caught:
        parse_events(body)
    assert caught.value.code is code


def test_records_that_are_not_objects_are_other_events() -> None:
    assert parse_events({"Records": ["junk", 3, None]}).other == 3
