"""Request body caps (uvicorn has none): 413 before the body is read when Content-Length is too big,
and while streaming when it lies or is absent."""

from __future__ import annotations

import json
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ErrorCode


def media_type(content_type: str) -> str:
    """``Application/JSON; charset=utf-8`` -> ``application/json``."""
    return content_type.split(";")[0].strip().lower()


class _TooLarge(BaseException):
    """Raised from ``receive``; a BaseException so the framework's body-parsing ``except Exception``
    (which would answer 400) lets it through to this middleware."""


class BodySizeLimit:
    """Bodies may be ``max_json_bytes``; uploads (not JSON) to ``upload_paths`` may be ``max_upload_bytes``.

    The cap follows the route, never only the Content-Type a client chose: a JSON route posted as
    ``text/plain`` keeps the JSON cap.
    """

    def __init__(
        self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int, upload_paths: Collection[str] = ()
    ) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_paths = frozenset(upload_paths)

    def limit_for(self, path: str, content_type: str) -> int:
        if path == "/v7/infer":  # V7 sends base64 images: an upload in a JSON envelope (4/3 larger)
            return self.max_upload_bytes * 4 // 3 + 1024
        if path == "/ls/predict":  # Label Studio sends every selected task at once, and drops a 413 silently
            return max(self.max_json_bytes, self.max_upload_bytes)
        if path in self.upload_paths and content_type != "application/json":
            return self.max_upload_bytes
        return self.max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        limit = self.limit_for(str(scope.get("path", "")), media_type(headers.get("content-type", "")))
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _reject(send, limit)
            return
        received = 0
        responded = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not responded:
                await _reject(send, limit)


async def _reject(send: Send, limit: int) -> None:
    code = ErrorCode.REQUEST_TOO_LARGE
    body = json.dumps(
        {"error": {"code": code.code, "message": f"request body is over {limit} bytes", "retryable": False}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code.http_status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
