"""BodySizeLimit: 413 from the declared length, and from the streamed bytes when the length lies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from service.api.middleware import BodySizeLimit


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = FastAPI()
    app.add_middleware(BodySizeLimit, max_json_bytes=100, max_upload_bytes=1000, upload_paths={"/echo"})

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/json-only")
    async def json_only(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize(
    ("content_type", "size", "status"),
    [
        ("application/json", 100, 200),
        ("application/json", 101, 413),
        ("application/json; charset=utf-8", 101, 413),
        ("Application/JSON", 101, 413),
        ("application/octet-stream", 1000, 200),
        ("application/octet-stream", 1001, 413),
    ],
)
def test_declared_length(client: TestClient, content_type: str, size: int, status: int) -> None:
    response = client.post("/echo", content=b"x" * size, headers={"Content-Type": content_type})
    assert response.status_code == status
    if status == 413:
        assert response.json()["error"]["code"] == "request_too_large"


def test_streamed_body_without_length_is_cut(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 100

    response = client.post("/echo", content=chunks(), headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
def test_other_routes_keep_the_json_cap_whatever_the_content_type(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    assert client.post("/json-only", content=b"x" * 100, headers=headers).status_code == 200
    assert client.post("/json-only", content=b"x" * 101, headers=headers).status_code == 413
