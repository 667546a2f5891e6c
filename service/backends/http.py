"""The one HTTP client wrapper every labeling-tool client sends through: one retry policy, one error mapping.

Each vendor client keeps its own ``httpx.Client`` (base URL, auth, timeouts) and wraps it here; sends are
retried per :class:`~service.backends.retry.RetryPolicy` (429/5xx with backoff, ``Retry-After`` honoured,
transport errors retried), and what is left becomes a :class:`~service.backends.retry.BackendError` naming the
vendor, which ``backend_error_to_preannotate`` maps to the service's codes.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Hashable, Mapping
from typing import Any, TypedDict, TypeVar, Unpack, cast

import httpx
from pydantic import TypeAdapter, ValidationError

from service.backends.retry import (
    BackendError,
    RetryPolicy,
    check_response,
    safe_target,
    send_with_retries,
    transport_error,
)

log = logging.getLogger(__name__)

Param = str | int | float | bool | None
Params = Mapping[str, Param] | list[tuple[str, Param]] | None
"""Query parameters: a mapping, or (key, value) pairs for repeated keys (``item_ids[]``)."""

T = TypeVar("T")


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:  # a type form: what TypeAdapter takes
    return TypeAdapter(kind)


def parse_answer(backend: str, kind: type[T], data: object, what: str, *, status: int | None = None) -> T:
    """A vendor's JSON answer as ``kind`` (a pydantic model, a TypedDict, a ``list[...]`` of them), validated once
    here at the client boundary; an answer of another shape is the vendor's fault and final (a retry would get
    the same answer).

    Raises:
        BackendError: ``<what>: unexpected answer (<first field at fault>)``, not retryable.
    """
    try:
        return cast(T, _adapter(cast(Hashable, kind)).validate_python(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"])) or "the answer"
        raise BackendError(
            backend, f"{what}: unexpected answer ({where}: {error['msg']})", status=status, retryable=False
        ) from None


class CallOptions(TypedDict, total=False):
    """:meth:`VendorHttp.call`'s keyword arguments."""

    params: Params
    json_body: object
    content: bytes | None
    headers: Mapping[str, str] | None
    retry: RetryPolicy | None
    ok_statuses: frozenset[int]


class VendorHttp:
    """One vendor's client with the shared retry loop; thread-safe as far as ``httpx.Client`` is.

    Attributes:
        backend: The vendor's name in errors (``label_studio``, ``v7``, ``encord``).
        client: The wrapped client (its owner's base URL, auth and timeouts).
        retry: The vendor's default policy; a call may pass a stricter one (a non-idempotent create).
    """

    def __init__(self, backend: str, client: httpx.Client, retry: RetryPolicy) -> None:
        self.backend = backend
        self.client = client
        self.retry = retry

    def close(self) -> None:
        self.client.close()

    def send(
        self,
        request: httpx.Request,
        what: str,
        *,
        retry: RetryPolicy | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send with retries; a 2xx (or a status in ``ok_statuses``) comes back, anything else raises.

        Raises:
            BackendError: The last failure once the policy gave up (a transport error is retryable).
        """
        started = time.monotonic()
        try:
            response = send_with_retries(self.client, request, retry or self.retry)
        except httpx.TransportError as exc:
            raise transport_error(self.backend, exc, what) from None
        log.debug("%s -> %d in %.2f s", safe_target(request), response.status_code, time.monotonic() - started)
        if response.status_code in ok_statuses:
            return response
        return check_response(self.backend, response, what)

    def call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Params = None,
        json_body: object = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Build and :meth:`send` one API request (bodies are bytes, so a retry can replay them)."""
        request = self.client.build_request(
            method, path, params=params, json=json_body, content=content, headers=headers
        )
        return self.send(request, what, retry=retry, ok_statuses=ok_statuses)

    def call_json(self, method: str, path: str, what: str, **options: Unpack[CallOptions]) -> object:
        """:meth:`call`, returning the answer's JSON."""
        return self.json_of(self.call(method, path, what, **options), what)

    def call_as(self, kind: type[T], method: str, path: str, what: str, **options: Unpack[CallOptions]) -> T:
        """:meth:`call`, returning the answer's JSON as ``kind`` (see :func:`parse_answer`)."""
        response = self.call(method, path, what, **options)
        return parse_answer(self.backend, kind, self.json_of(response, what), what, status=response.status_code)

    def json_of(self, response: httpx.Response, what: str) -> object:
        """The answer's JSON; a body that is not JSON (a proxy's error page) is worth another try later."""
        try:
            return response.json()
        except ValueError:
            raise BackendError(
                self.backend, f"{what}: the answer is not JSON", status=response.status_code, retryable=True
            ) from None
