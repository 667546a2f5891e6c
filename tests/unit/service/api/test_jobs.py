"""The jobs routes on the real FastAPI router and a real SQLite store: duplicate item names, how long and for
what a repeated submission returns the old job, listing a tenant's jobs, and finished items while a job runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.webhooks.config import WebhookConfig
from tests.unit.service.jobs.store_contract import FakeClock
from tests.unit.service.webhooks.helpers import TOKEN, WebhookApp, webhook_app

OTHER_TOKEN = "another-tenants-api-token-" + "o" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_TOKEN}"}


def item(name: str, url: str = "https://media.example.com/a.jpg") -> dict[str, Any]:
    return {"name": name, "slots": [{"url": url}]}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock) -> Iterator[WebhookApp]:
    with webhook_app(
        tmp_path, WebhookConfig(), tokens=(TOKEN, OTHER_TOKEN), store_clock=clock, local_roots=[tmp_path]
    ) as a:
        yield a


def post(app: WebhookApp, body: Any, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    return app.client.post("/v1/jobs", json=body, headers={**AUTH, **(headers or {})}, params=params)


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


# -- item names ----------------------------------------------------------------------------------------------------


def test_duplicate_item_names_are_422_and_store_nothing(app: WebhookApp) -> None:
    response = post(app, {"items": [item("a"), item("b"), item("a", "https://media.example.com/other.jpg")]})

    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "duplicate_item_name",
        "message": response.json()["error"]["message"],
        "retryable": False,
    }
    assert "'a'" in response.json()["error"]["message"]
    assert app.jobs() == 0


def test_an_encord_registration_whose_titles_collide_is_422(app: WebhookApp) -> None:
    body = {
        "images": [
            {"objectUrl": "https://media.example.com/x/img.jpg"},
            {"objectUrl": "https://m.example.com/y/img.jpg"},
        ]
    }

    response = post(app, body)

    assert (response.status_code, error_code(response)) == (422, "duplicate_item_name")
    assert "title" in response.json()["error"]["message"]
    assert app.jobs() == 0
