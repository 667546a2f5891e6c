"""Webhook request checks that come before any parsing: the body cap, then the sender's secret.

Secrets are compared with ``hmac.compare_digest`` against every configured value, without stopping at
the first match, so timing tells nothing about which secret (or how much of one) matched. Error messages
name the header that failed, never a value.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.requests import Request

from service.errors import ErrorCode, PreannotateError


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed ``max_bytes``.

    Runs before any secret or HMAC check: an attacker without the secret must not make us hash megabytes.
    A declared ``Content-Length`` over the cap fails before a byte is read; a missing or lying one fails
    while streaming.

    Raises:
        PreannotateError: ``REQUEST_TOO_LARGE``.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> PreannotateError:
    return PreannotateError(ErrorCode.REQUEST_TOO_LARGE, f"webhook body is over {max_bytes} bytes")


def require_enabled(secrets: Sequence[str], webhook: str) -> None:
    """404 when the webhook has no secret: an unconfigured webhook looks like no route at all.

    Raises:
        PreannotateError: ``ROUTE_NOT_FOUND``.
    """
    if not secrets:
        raise PreannotateError(ErrorCode.ROUTE_NOT_FOUND, f"the {webhook} webhook is not enabled on this server")


def matches_any(presented: str, secrets: Sequence[str]) -> bool:
    """Whether ``presented`` equals one of ``secrets``, in time independent of which one."""
    given = presented.encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, secret.encode())
    return matched


def check_shared_secret(presented: str | None, secrets: Sequence[str], header: str) -> None:
    """A static secret header (Label Studio can send nothing else).

    Raises:
        PreannotateError: ``UNAUTHORIZED`` when the header is missing or matches no secret.
    """
    if not presented:
        raise PreannotateError(ErrorCode.UNAUTHORIZED, f"missing {header} header")
    if not matches_any(presented.strip(), secrets):
        raise PreannotateError(ErrorCode.UNAUTHORIZED, f"{header} does not match")


def check_authorization(presented: str | None, secrets: Sequence[str]) -> None:
    """An ``Authorization`` header holding a configured value, as is or as ``Bearer <value>``.

    Community MinIO sends a one-word ``auth_token`` as ``Bearer <token>`` and a two-word one (``Scheme value``)
    as is; AIStor sends it exactly as configured; a V7 webhook stage sends whatever "authorisation header"
    value was typed in. So each secret is accepted both as is and after ``Bearer``.

    Raises:
        PreannotateError: ``UNAUTHORIZED`` when the header is missing or matches no secret.
    """
    if not presented:
        raise PreannotateError(ErrorCode.UNAUTHORIZED, "missing Authorization header")
    value = presented.strip()
    scheme, _, rest = value.partition(" ")
    candidates = [value]
    if scheme.lower() == "bearer" and rest.strip():
        candidates.append(rest.strip())
    matched = False
    for candidate in candidates:
        matched |= matches_any(candidate, secrets)
    if not matched:
        raise PreannotateError(ErrorCode.UNAUTHORIZED, "Authorization does not match")
