"""A loopback HTTP server around a fake API: ``http.server`` in a thread, one ``handle`` call per request.

Fakes record every contract violation in ``errors`` and answer it with 400, so a test both sees the client fail
and can assert ``fake.errors == []`` at the end ("fail loudly").
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # path parameters, set by the fake's router

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)


class ContractError(Exception):
    """A request broke the documented contract; the fake answers 400 and records it."""


class FakeApp:
    """Subclasses implement ``route``; faults queued with ``fail_next`` are answered first."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.requests: list[Request] = []
        self.base_url = ""
        self._faults: list[Response] = []
        self._lock = threading.Lock()

    def fail_next(self, status: int, *, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (e.g. 429 with Retry-After, 503)."""
        self._faults += [Response(status, {"error": "injected"}, dict(headers or {})) for _ in range(times)]

    def handle(self, request: Request) -> Response:
        with self._lock:  # one request at a time: the fakes keep plain dicts
            self.requests.append(request)
            if self._faults:
                return self._faults.pop(0)
            try:
                return self.route(request)
            except ContractError as exc:
                self.errors.append(f"{request.method} {request.path}: {exc}")
                return Response(400, {"error": str(exc)})

    def route(self, request: Request) -> Response:
        raise NotImplementedError


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def expect_keys(obj: Any, required: set[str], optional: set[str] = frozenset(), where: str = "body") -> None:  # type: ignore[assignment]
    """``obj`` is an object with every required key and nothing unknown."""
    expect(isinstance(obj, dict), f"{where}: expected an object, got {type(obj).__name__}")
    missing = required - obj.keys()
    unknown = obj.keys() - required - optional
    expect(not missing, f"{where}: missing {sorted(missing)}")
    expect(not unknown, f"{where}: unknown fields {sorted(unknown)}")


@contextmanager
def serving(app: FakeApp) -> Iterator[str]:
    """Run ``app`` on 127.0.0.1 (a free port) for the duration; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = Request(
                self.command,
                parts.path,
                parse_qsl(parts.query, keep_blank_values=True),
                {k.lower(): v for k, v in self.headers.items()},
                body,
            )
            response = app.handle(request)
            raw = response.body if isinstance(response.body, bytes) else json.dumps(response.body).encode()
            self.send_response(response.status)
            headers = {"Content-Type": "application/json", **response.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-api", daemon=True)
    thread.start()
    app.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield app.base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
