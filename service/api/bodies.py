"""JSON request bodies read the same way on every route that parses them itself: 415/422, never a 500."""

from __future__ import annotations

import json
from typing import Any

from service.api.middleware import media_type
from service.errors import ErrorCode, PreannotateError


def require_json(content_type: str) -> None:
    """Raises ``UNSUPPORTED_MEDIA`` (415) unless the Content-Type is ``application/json``."""
    if media_type(content_type) != "application/json":
        raise PreannotateError(
            ErrorCode.UNSUPPORTED_MEDIA, f"send the body as application/json, not {content_type or '(no type)'!r}"
        )


def json_body(raw: bytes) -> Any:
    """The parsed body; ``INVALID_ARGUMENT`` (422) for anything that is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: a body of 100 000 '[' is an attack, not a bug
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "the body is not valid JSON") from None
