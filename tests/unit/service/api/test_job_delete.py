"""DELETE /v1/jobs/{id} and POST /v1/jobs/{id}/cancel on the real router and a real SQLite store (issue 13): a
finished job is removed with its results and its key; a running one is cancelled, and removed by a second DELETE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.intake.config import WebhookConfig
from tests.unit.service.intake.helpers import TOKEN, WebhookApp, webhook_app

OTHER_TOKEN = "another-tenants-api-token-" + "o" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_TOKEN}"}
BODY: dict[str, Any] = {"items": [{"name": "a", "slots": [{"url": "https://media.example.com/a.jpg"}]}]}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebhookApp]:
    with webhook_app(tmp_path, WebhookConfig(), tokens=(TOKEN, OTHER_TOKEN)) as a:
        yield a


def submit(app: WebhookApp, headers: dict[str, str] | None = None) -> httpx.Response:
    return app.client.post("/v1/jobs", json=BODY, headers={**AUTH, **(headers or {})})


def finish(app: WebhookApp) -> None:
    (lease,) = app.store.lease("w", max_items=1, lease_s=60)
    assert app.store.complete("w", lease.item_id, {"slots": [], "frames": []})


def test_deleting_a_finished_job_removes_it_and_its_key(app: WebhookApp) -> None:
    job_id = submit(app, {"Idempotency-Key": "k-1"}).json()["job_id"]
    finish(app)

    deleted = app.client.delete(f"/v1/jobs/{job_id}", headers=AUTH)

    assert (deleted.status_code, deleted.content) == (204, b"")
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result", f"/v1/jobs/{job_id}/items"):
        gone = app.client.get(path, headers=AUTH)
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "job_not_found")
    assert app.client.delete(f"/v1/jobs/{job_id}", headers=AUTH).status_code == 404
    again = submit(app, {"Idempotency-Key": "k-1"})
    assert (again.status_code, again.json()["created"]) == (202, True)
    assert again.json()["job_id"] != job_id


def test_deleting_a_running_job_cancels_it_and_a_second_delete_removes_it(app: WebhookApp) -> None:
    job_id = submit(app).json()["job_id"]

    first = app.client.delete(f"/v1/jobs/{job_id}", headers=AUTH)

    assert (first.status_code, first.json()["status"]) == (200, "cancelled")
    assert app.client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()["status"] == "cancelled"
    assert app.client.delete(f"/v1/jobs/{job_id}", headers=AUTH).status_code == 204
    assert app.client.get(f"/v1/jobs/{job_id}", headers=AUTH).status_code == 404


def test_cancel_keeps_the_job_and_its_finished_results(app: WebhookApp) -> None:
    job_id = app.client.post(
        "/v1/jobs",
        json={"items": [*BODY["items"], {"name": "b", "slots": [{"url": "https://m.example.com/b.jpg"}]}]},
        headers=AUTH,
    ).json()["job_id"]
    finish(app)

    cancelled = app.client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH)

    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    items = app.client.get(f"/v1/jobs/{job_id}/items", headers=AUTH).json()["items"]
    assert [i["state"] for i in items] == ["succeeded", "cancelled"]


@pytest.mark.parametrize("method", ["DELETE", "POST"])
def test_another_tenants_job_is_neither_deleted_nor_cancelled(app: WebhookApp, method: str) -> None:
    job_id = submit(app).json()["job_id"]
    path = f"/v1/jobs/{job_id}" if method == "DELETE" else f"/v1/jobs/{job_id}/cancel"

    response = app.client.request(method, path, headers=OTHER_AUTH)

    assert (response.status_code, response.json()["error"]["code"]) == (404, "job_not_found")
    assert app.client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()["status"] == "queued"
