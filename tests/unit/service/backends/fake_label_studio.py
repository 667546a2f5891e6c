"""A loopback fake of the Label Studio REST calls the client makes, with fault injection.

It keeps projects, tasks and predictions in dicts, checks the ``Authorization`` header like LS does
(legacy ``Token`` or a ``Bearer`` access token from ``/api/token/refresh/``), serves task media under
``/data/``, and records every request. Own server (not tests/fakes/http.py): that one has no PATCH.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

LEGACY_TOKEN = "legacy-token-0123456789abcdef"


def make_jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped string (the client only reads the payload)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


PAT = make_jwt({"token_type": "refresh", "exp": 4_102_444_800, "jti": "pat-1"})


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: Any


@dataclass
class Fault:
    status: int
    headers: dict[str, str]
    match: Callable[[Seen], bool]
    process_first: bool  # handle the request, then answer the fault (a write that landed, answer lost)


@dataclass
class FakeLabelStudio:
    projects: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[int, dict[str, Any]] = field(default_factory=dict)
    media: dict[str, bytes] = field(default_factory=dict)  # "/data/..." path (with query) -> body
    redirects: dict[str, str] = field(default_factory=dict)  # "/data/..." -> Location
    requests: list[Seen] = field(default_factory=list)
    access_ttl_s: float = 300.0
    refreshes: int = 0
    base_url: str = ""
    _faults: list[Fault] = field(default_factory=list)
    _access: set[str] = field(default_factory=set)
    _next_id: int = 1000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        when: Callable[[Seen], bool] = lambda s: True,
        process_first: bool = False,
    ) -> None:
        self._faults += [Fault(status, dict(headers or {}), when, process_first) for _ in range(times)]

    def add_task(self, project: int, data: dict[str, Any], predictions: list[dict[str, Any]] = ()) -> int:  # type: ignore[assignment]
        task_id = self._new_id()
        self.tasks[task_id] = {"id": task_id, "project": project, "data": data}
        for p in predictions:
            self.add_prediction(task_id, p)
        return task_id

    def add_prediction(self, task_id: int, body: dict[str, Any]) -> int:
        pid = self._new_id()
        self.predictions[pid] = {"id": pid, "task": task_id, "result": [], "score": None, **body}
        return pid

    def predictions_of(self, task_id: int) -> list[dict[str, Any]]:
        return [p for p in self.predictions.values() if p["task"] == task_id]

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- request handling --------------------------------------------------------------------------------------

    def handle(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.requests.append(seen)
            fault = next((f for f in self._faults if f.match(seen)), None)
            if fault is not None:
                self._faults.remove(fault)
                if fault.process_first:
                    self._route(seen)
                return fault.status, {"detail": "injected"}, fault.headers
            return self._route(seen)

    def _route(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        method, path = seen.method, seen.path
        if method == "POST" and path == "/api/token/refresh/":
            return self._refresh(seen.body)
        if not self._authorized(seen.authorization):
            return 401, {"detail": "Authentication credentials were not provided."}, {}
        parts = path.strip("/").split("/")
        if path.startswith("/data/"):
            return self._media(seen)
        if parts[:2] == ["api", "projects"] and len(parts) == 3:
            project = self.projects.get(int(parts[2]))
            if project is None:
                return 404, {"detail": "Not found."}, {}
            if method == "PATCH":
                project.update(seen.body)
            return 200, project, {}
        if path == "/api/tasks/":
            return self._task_page(seen.query)
        if parts[:2] == ["api", "tasks"] and len(parts) == 3 and method == "GET":
            found = self.tasks.get(int(parts[2]))
            return (200, found, {}) if found is not None else (404, {"detail": "Not found."}, {})
        if path == "/api/predictions/" and method == "GET":
            task = int(seen.query["task"][0])
            return 200, self.predictions_of(task), {}
        if path == "/api/predictions/" and method == "POST":
            body = dict(seen.body)
            if int(body["task"]) not in self.tasks:
                return 400, {"detail": "invalid task"}, {}
            return 201, self.predictions[self.add_prediction(int(body.pop("task")), body)], {}
        if parts[:2] == ["api", "predictions"] and len(parts) == 3:
            pid = int(parts[2])
            if pid not in self.predictions:
                return 404, {"detail": "Not found."}, {}
            if method == "DELETE":
                del self.predictions[pid]
                return 204, None, {}
            self.predictions[pid].update(seen.body)
            return 200, self.predictions[pid], {}
        return 404, {"detail": f"no route {method} {path}"}, {}

    def _authorized(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        if scheme == "Token":
            return value == LEGACY_TOKEN
        return scheme == "Bearer" and value in self._access

    def _refresh(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict) or body.get("refresh") != PAT:
            return 401, {"detail": "Token is invalid or expired", "code": "token_not_valid"}, {}
        self.refreshes += 1
        access = make_jwt({"token_type": "access", "exp": time.time() + self.access_ttl_s, "n": self.refreshes})
        self._access.add(access)
        return 200, {"access": access}, {}

    def expire_access_tokens(self) -> None:
        self._access.clear()

    def _task_page(self, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        project = int(query["project"][0])
        page, size = int(query["page"][0]), int(query["page_size"][0])
        tasks = [t for t in self.tasks.values() if t["project"] == project]
        chunk = tasks[(page - 1) * size : page * size]
        if page > 1 and not chunk:
            return 404, {"detail": "Invalid page."}, {}
        if query.get("fields") == ["all"]:
            chunk = [{**t, "predictions": self.predictions_of(t["id"])} for t in chunk]
        return 200, {"total": len(tasks), "tasks": chunk}, {}

    def _media(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        key = seen.path + ("?" + "&".join(f"{k}={v[0]}" for k, v in seen.query.items()) if seen.query else "")
        if key in self.redirects:
            return 302, b"", {"Location": self.redirects[key]}
        if key not in self.media:
            return 404, {"detail": "Not found."}, {}
        return 200, self.media[key], {"Content-Type": "application/octet-stream"}


@contextmanager
def serving(fake: Any) -> Iterator[str]:
    """Serve a fake (anything with ``handle(Seen)``) on 127.0.0.1; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            body = json.loads(raw) if raw and "json" in (self.headers.get("content-type") or "") else raw
            seen = Seen(self.command, parts.path, parse_qs(parts.query), self.headers.get("authorization"), body)
            status, answer, headers = fake.handle(seen)
            data = answer if isinstance(answer, bytes) else (b"" if answer is None else json.dumps(answer).encode())
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    if hasattr(fake, "base_url"):
        fake.base_url = url
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class MediaHost:
    """Another origin serving one file: records the Authorization headers it was sent."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.authorizations: list[str | None] = []

    def handle(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        self.authorizations.append(seen.authorization)
        return 200, self.body, {"Content-Type": "image/png"}
