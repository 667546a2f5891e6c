"""One HTTP retry loop for every labeling-tool backend: 429 and 5xx, exponential backoff with full jitter,
``Retry-After`` honoured, bounded in attempts and in total time (the service's one ``RetryPolicy``,
``service.retry``).

Only the request line's ``scheme://host/path`` is ever logged: never headers (API keys), query strings or
bodies (reliability.md §3.7).
"""

from __future__ import annotations

import email.utils
import logging
import math
import time

import httpx

from service.errors import ErrorCode, PreannotateError
from service.retry import RETRY_STATUSES, RetryPolicy

__all__ = [
    "RETRY_STATUSES",
    "BackendError",
    "RetryPolicy",
    "backend_error_to_preannotate",
    "check_response",
    "parse_retry_after",
    "safe_target",
    "send_with_retries",
    "transport_error",
]

logger = logging.getLogger(__name__)
# httpx logs every request URL at INFO (presigned upload URLs hold credentials in the query string) and
# httpcore logs headers at DEBUG (our API keys): keep both quiet whoever configures logging.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class BackendError(Exception):
    """A labeling-tool API call failed for good (after retries).

    Attributes:
        backend: ``v7``, ``encord``, ``label_studio``...
        status: The last HTTP status, or None when no response came (connection, timeout).
        retryable: Whether the same call may succeed later (429, 5xx, transport); False for 4xx.
        retry_after_s: The server's ``Retry-After``, when it gave one.
    """

    def __init__(
        self,
        backend: str,
        message: str,
        *,
        status: int | None,
        retryable: bool,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or junk."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def safe_target(request: httpx.Request) -> str:
    """``METHOD scheme://host/path`` with no query string: presigned upload URLs carry credentials there."""
    url = request.url
    return f"{request.method} {url.scheme}://{url.host}{f':{url.port}' if url.port else ''}{url.path}"


def send_with_retries(client: httpx.Client, request: httpx.Request, policy: RetryPolicy) -> httpx.Response:
    """Send ``request``, retrying per ``policy``; the body must be bytes (a stream cannot be replayed).

    Returns:
        The first non-retryable response, or the last response once attempts, total time or an over-long
        ``Retry-After`` end the loop. The caller decides what a non-2xx response means.

    Raises:
        httpx.TransportError: The last connection or timeout error, when no attempt got a response.
    """
    started = time.monotonic()
    for attempt in range(1, policy.max_attempts + 1):
        response: httpx.Response | None = None
        error: httpx.TransportError | None = None
        try:
            response = client.send(request)
        except httpx.TransportError as exc:
            if not policy.retry_transport_errors:
                raise
            error = exc
        if response is not None and response.status_code not in policy.statuses:
            return response
        if response is not None:
            response.read()  # free the connection; callers may still inspect the body of the last one
        retry_after = parse_retry_after(response.headers.get("retry-after")) if response is not None else None
        if attempt == policy.max_attempts:
            break
        if retry_after is not None and retry_after > policy.max_retry_after_s:
            logger.warning(
                "%s: server asks to wait %.0f s, over the limit; giving up", safe_target(request), retry_after
            )
            break
        delay = policy.backoff_s(attempt)
        if retry_after is not None:
            delay = max(delay, retry_after)  # never earlier than the server asked
        if time.monotonic() - started + delay > policy.max_total_s:
            break
        what = f"status {response.status_code}" if response is not None else type(error).__name__
        logger.warning(
            "%s: %s, retry %d/%d in %.2f s", safe_target(request), what, attempt, policy.max_attempts - 1, delay
        )
        policy.sleep(delay)
    if response is not None:
        return response
    assert error is not None
    raise error


def check_response(backend: str, response: httpx.Response, what: str) -> httpx.Response:
    """Return a 2xx response; raise :class:`BackendError` for anything else.

    The message carries the status and at most 200 characters of the body (API error texts name the bad
    field), never the request's headers.
    """
    if response.is_success:
        return response
    status = response.status_code
    body = " ".join(response.text[:200].split())
    retryable = status in RETRY_STATUSES
    raise BackendError(
        backend,
        f"{what} failed with HTTP {status}: {body}",
        status=status,
        retryable=retryable,
        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
    )


def transport_error(backend: str, exc: httpx.TransportError, what: str) -> BackendError:
    """A :class:`BackendError` for a request that never got an answer (retryable)."""
    return BackendError(backend, f"{what} failed: {type(exc).__name__}", status=None, retryable=True)


def backend_error_to_preannotate(exc: BackendError) -> PreannotateError:
    """The service's error for a failed backend call: retryable ones requeue the item."""
    if exc.retryable:
        code = ErrorCode.BACKEND_UNAVAILABLE
    elif exc.status in (401, 403):
        code = ErrorCode.BACKEND_AUTH_FAILED
    else:
        code = ErrorCode.BACKEND_REJECTED
    retry_after = None if exc.retry_after_s is None else max(1, math.ceil(exc.retry_after_s))
    return PreannotateError(code, str(exc), retry_after_s=retry_after)
