"""HMAC-SHA256 signatures for ``POST /v1/webhooks/generic`` (reliability.md §3.2).

A sender signs ``f"{timestamp}.".encode() + raw_body`` with a shared secret and sends::

    X-Preannotate-Timestamp: 1767225600                 # Unix seconds, within ±300 s of our clock
    X-Preannotate-Signature: sha256=<64 hex digits>     # several, comma-separated, while rotating keys
    X-Preannotate-Delivery: <unique id of this delivery>  # optional; a repeat is a 2xx no-op

Signing the timestamp with the body stops an old capture from being replayed with a fresh timestamp; the
tolerance bounds how long a capture stays usable, and the delivery id makes a replay a no-op (the route
claims it in the job store, shared by every API process: ``JobStore.claim_delivery``).
Any configured secret verifies, so a new secret can be added before senders switch and the old one removed
after.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from service.errors import ErrorCode, PreannotateError

TIMESTAMP_HEADER = "X-Preannotate-Timestamp"
SIGNATURE_HEADER = "X-Preannotate-Signature"
DELIVERY_HEADER = "X-Preannotate-Delivery"
SCHEME = "sha256"
DELIVERY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_MAX_SIGNATURES = 8  # a header of thousands of candidates would make us hash that many times


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Preannotate-Signature`` value a sender computes (``sha256=<hex>``)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def verify(
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    secrets: Sequence[str],
    tolerance_s: float,
    now: float | None = None,
) -> int:
    """Check a signed delivery; returns its timestamp.

    Args:
        timestamp: The ``X-Preannotate-Timestamp`` header.
        signature: The ``X-Preannotate-Signature`` header: ``sha256=<hex>`` entries, comma-separated.
        body: The raw body, exactly as received.
        secrets: The active secrets; any one verifies.
        tolerance_s: Largest accepted ``|now - timestamp|``.
        now: The current time (tests).

    Raises:
        PreannotateError: ``UNAUTHORIZED`` for a missing, malformed, stale or non-matching signature.
    """
    if not timestamp or not signature:
        missing = TIMESTAMP_HEADER if not timestamp else SIGNATURE_HEADER
        raise PreannotateError(ErrorCode.UNAUTHORIZED, f"missing {missing} header")
    text = timestamp.strip()
    if not text.isdigit() or len(text) > 12:
        raise PreannotateError(ErrorCode.UNAUTHORIZED, f"{TIMESTAMP_HEADER} must be Unix seconds")
    sent_at = int(text)
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        raise PreannotateError(
            ErrorCode.UNAUTHORIZED, f"{TIMESTAMP_HEADER} is more than {tolerance_s:g} s from the server's clock"
        )
    presented = _parse_signatures(signature)
    matched = False
    for secret in secrets:
        expected = sign(secret, sent_at, body).encode()
        for candidate in presented:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise PreannotateError(ErrorCode.UNAUTHORIZED, f"{SIGNATURE_HEADER} does not match the body")
    return sent_at


def _parse_signatures(header: str) -> list[bytes]:
    entries = [part.strip() for part in header.split(",") if part.strip()]
    found = [e.encode() for e in entries[:_MAX_SIGNATURES] if e.startswith(f"{SCHEME}=")]
    if not found:
        raise PreannotateError(ErrorCode.UNAUTHORIZED, f"{SIGNATURE_HEADER} must be '{SCHEME}=<hex digest>'")
    return found


def check_delivery_id(delivery: str | None) -> str | None:
    """The delivery id, or None when absent.

    Raises:
        PreannotateError: ``INVALID_ARGUMENT`` for an id that is not 1-128 of ``[A-Za-z0-9._:-]``.
    """
    if delivery is None or not delivery.strip():
        return None
    value = delivery.strip()
    if not DELIVERY_ID_PATTERN.match(value):
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, f"{DELIVERY_HEADER} must be 1-128 of [A-Za-z0-9._:-]")
    return value
