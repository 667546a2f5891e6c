"""A CVAT webhook delivery: its signature, and the task it is about.

CVAT signs each delivery with the webhook's secret: ``X-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``
(cvat/apps/webhooks/signals.py). It sends no timestamp and no delivery id, so a replay cannot be told by its headers;
it is harmless instead: a delivery becomes the job for (task, the task's data, job parameters), and the same
delivery again, or any later event about the same task and data, lands on that job (``cvat_tasks.task_idem``).

The events that start work are ``create:task`` (a task created with its data in one go), ``update:task`` and
``create:job`` (CVAT creates a task's jobs once its data is processed: the data is available). A task without data
yet is acknowledged and left for the event that brings it. Everything else (``ping`` included) is acknowledged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.errors import ErrorCode, PreannotateError

SIGNATURE_HEADER = "X-Signature-256"
TASK_EVENTS = frozenset({"create:task", "update:task", "create:job"})
_MAX_SIGNATURES = 8


def sign(secret: str, body: bytes) -> str:
    """The ``X-Signature-256`` value CVAT sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(header: str | None, body: bytes, secrets: Sequence[str]) -> None:
    """Check a delivery's signature against every configured secret (rotation), in constant time.

    Raises:
        PreannotateError: UNAUTHORIZED for a missing, malformed or non-matching signature.
    """
    if not header or not header.strip():
        raise PreannotateError(ErrorCode.UNAUTHORIZED, f"missing {SIGNATURE_HEADER} header")
    presented = [p.strip().encode() for p in header.split(",") if p.strip().startswith("sha256=")][:_MAX_SIGNATURES]
    if not presented:
        raise PreannotateError(ErrorCode.UNAUTHORIZED, f"{SIGNATURE_HEADER} must be 'sha256=<hex digest>'")
    matched = False
    for secret in secrets:
        expected = sign(secret, body).encode()
        for candidate in presented:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise PreannotateError(ErrorCode.UNAUTHORIZED, f"{SIGNATURE_HEADER} does not match the body")


@dataclass(frozen=True, slots=True)
class CvatDelivery:
    """What a delivery is about.

    Attributes:
        event: ``create:task``, ``update:job``, ``ping`` ...
        task_id: The task it concerns, None when it concerns none (a ping, a project event).
    """

    event: str
    task_id: int | None

    @property
    def starts_work(self) -> bool:
        return self.event in TASK_EVENTS and self.task_id is not None


def parse_delivery(body: object) -> CvatDelivery:
    """Read a delivery (nothing but the event and the task id is kept).

    Raises:
        PreannotateError: INVALID_ARGUMENT for a body that is not a CVAT webhook delivery.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("event"), str):
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "a CVAT webhook body has an 'event'")
    event = str(body["event"])
    resource = event.partition(":")[2]
    task_id: int | None = None
    if resource == "task":
        task_id = _id(body.get("task"), "id")
    elif resource == "job":
        task_id = _id(body.get("job"), "task_id")
    return CvatDelivery(event=event, task_id=task_id)


def _id(value: object, key: str) -> int | None:
    if not isinstance(value, Mapping):
        return None
    found = value.get(key)
    return found if isinstance(found, int) and not isinstance(found, bool) and found > 0 else None
