"""CVAT webhook deliveries: ``X-Signature-256`` checked as CVAT signs it, and the task a delivery is about."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from service.errors import ErrorCode, PreannotateError
from service.intake.cvat import CvatDelivery, parse_delivery, sign, verify_signature

BODY = json.dumps({"event": "create:task", "task": {"id": 5, "name": "clip"}, "webhook_id": 2}).encode()


def _cvat_signature(secret: str, body: bytes) -> str:
    """What CVAT puts in ``X-Signature-256`` (cvat/apps/webhooks/signals.py): the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, digestmod=hashlib.sha256).hexdigest()


def test_sign_is_hmac_sha256_of_the_raw_body() -> None:
    # The textbook HMAC-SHA256 vector, then CVAT's own construction.
    fox = b"The quick brown fox jumps over the lazy dog"
    assert sign("key", fox) == "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert sign("s3cret", BODY) == _cvat_signature("s3cret", BODY)


def test_a_delivery_signed_with_any_configured_secret_passes() -> None:
    for secret in ("old", "new"):  # rotation: both are accepted while both are configured
        verify_signature(_cvat_signature(secret, BODY), BODY, ("old", "new"))
    verify_signature(f"  {_cvat_signature('new', BODY)} ", BODY, ("new",))


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",  # no 'sha256=' prefix
        "sha1=" + hashlib.sha1(BODY).hexdigest(),  # another scheme
        "sha256=",
        "sha256=not-hex",
        _cvat_signature("wrong", BODY),
        _cvat_signature("s3cret", BODY + b" "),  # signed another body
        _cvat_signature("s3cret", BODY).upper(),
    ],
    ids=["none", "empty", "blank", "bare hex", "sha1", "empty digest", "not hex", "wrong secret", "other body", "case"],
)
def test_a_missing_malformed_or_wrong_signature_is_unauthorized(header: str | None) -> None:
    with pytest.raises(PreannotateError) as caught:
        verify_signature(header, BODY, ("s3cret",))
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    assert "s3cret" not in str(caught.value)


def test_no_configured_secret_accepts_nothing() -> None:
    with pytest.raises(PreannotateError) as caught:
        verify_signature(_cvat_signature("", BODY), BODY, ())
    assert caught.value.code is ErrorCode.UNAUTHORIZED


@pytest.mark.parametrize(
    ("body", "delivery", "starts"),
    [
        ({"event": "create:task", "task": {"id": 5}}, CvatDelivery("create:task", 5), True),
        ({"event": "update:task", "task": {"id": 5}, "before_update": {}}, CvatDelivery("update:task", 5), True),
        ({"event": "create:job", "job": {"id": 31, "task_id": 5}}, CvatDelivery("create:job", 5), True),
        ({"event": "update:job", "job": {"id": 31, "task_id": 5}}, CvatDelivery("update:job", 5), False),
        ({"event": "delete:task", "task": {"id": 5}}, CvatDelivery("delete:task", 5), False),
        ({"event": "ping", "webhook": {"id": 2}}, CvatDelivery("ping", None), False),
        ({"event": "create:project", "project": {"id": 4}}, CvatDelivery("create:project", None), False),
        ({"event": "create:task"}, CvatDelivery("create:task", None), False),  # no task in it: nothing to do
        ({"event": "create:task", "task": {"id": "5"}}, CvatDelivery("create:task", None), False),
        ({"event": "create:task", "task": {"id": True}}, CvatDelivery("create:task", None), False),
        ({"event": "create:task", "task": {"id": 0}}, CvatDelivery("create:task", None), False),
        ({"event": "create:job", "job": {"id": 31}}, CvatDelivery("create:job", None), False),
        ({"event": "create:task", "task": [5]}, CvatDelivery("create:task", None), False),
    ],
)
def test_parse_delivery(body: dict[str, object], delivery: CvatDelivery, starts: bool) -> None:
    found = parse_delivery(body)
    assert found == delivery
    assert found.starts_work is starts


@pytest.mark.parametrize("body", [None, [], "create:task", {}, {"event": 3}, {"event": None, "task": {"id": 5}}])
def test_a_body_that_is_no_delivery_is_invalid(body: object) -> None:
    with pytest.raises(PreannotateError) as caught:
        parse_delivery(body)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
