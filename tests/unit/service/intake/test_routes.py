"""The webhook routes on a minimal app: 413 before any secret work, 401s, 404 when off, dedupe, 202 answers."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service.api.routes import webhooks as routes
from service.intake.config import WebhookConfig
from service.intake.signatures import sign
from service.s3_routing import S3Rule
from tests.unit.service.intake.helpers import TOKEN, WebhookApp, webhook_app
from tests.unit.service.intake.payloads import (
    LS_URL,
    PROJECT_TOKEN,
    darwin_item,
    ls_task,
    ls_tasks_created,
)

LS_SECRET = "CANARY-ls-hook-secret-" + "l" * 16
S3_SECRET = "CANARY-minio-token-" + "m" * 16
V7_SECRET = "CANARY-v7-stage-header-" + "v" * 16
HMAC_SECRET = "CANARY-hmac-key-" + "h" * 16
OLD_HMAC_SECRET = "CANARY-old-hmac-key-" + "o" * 16
LS_KEY = "CANARY-ls-api-key-" + "k" * 16
V7_KEY = "CANARY-v7-api-key-" + "a" * 16
SECRETS = (LS_SECRET, S3_SECRET, V7_SECRET, HMAC_SECRET, OLD_HMAC_SECRET, LS_KEY, V7_KEY, PROJECT_TOKEN)
ENABLED = WebhookConfig(
    label_studio_secrets=(LS_SECRET,),
    s3_secrets=(S3_SECRET,),
    v7_secrets=(V7_SECRET,),
    generic_secrets=(HMAC_SECRET, OLD_HMAC_SECRET),
    s3_rules=(S3Rule(bucket="uploads", prefix="cams/", fps=2.0), S3Rule(bucket="uploads", prefix="bad/", model="nope")),
)
SETTINGS: dict[str, Any] = {
    "label_studio_url": LS_URL,
    "label_studio_api_key": SecretStr(LS_KEY),
    "v7_api_key": SecretStr(V7_KEY),
    "v7_team_slug": "acme",
    "v7_dataset_slug": "mammo",
    "v7_dataset_id": 7,
    "fetch_allowed_buckets": ["uploads"],
}
JOB = {"items": [{"name": "a", "slots": [{"url": "https://media.example.com/a.jpg"}]}]}


@pytest.fixture
def hooks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[WebhookApp]:
    caplog.set_level(logging.DEBUG)
    with webhook_app(tmp_path, ENABLED, **SETTINGS) as app:
        yield app
    logged = caplog.text
    for secret in SECRETS:  # reliability.md §3.7: no secret, key or LS project token in any log line
        assert secret not in logged


def signed(
    body: bytes, *, secret: str = HMAC_SECRET, delivery: str | None = "d-1", at: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if at is None else at
    headers = {"X-Preannotate-Timestamp": str(ts), "X-Preannotate-Signature": sign(secret, ts, body)}
    if delivery:
        headers["X-Preannotate-Delivery"] = delivery
    return headers


def post(app: WebhookApp, hook: str, body: Any, headers: dict[str, str]) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return app.client.post(f"/v1/webhooks/{hook}", content=raw, headers={"Content-Type": "application/json", **headers})


def leased_items(app: WebhookApp) -> list[dict[str, Any]]:
    return [lease.item.model_dump(exclude_none=True) for lease in app.store.lease("test", max_items=100, lease_s=60)]


# -- common rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["label-studio", "s3", "v7", "generic"])
def test_a_webhook_without_a_secret_is_not_found(tmp_path: Path, hook: str) -> None:
    with webhook_app(tmp_path, WebhookConfig(), **SETTINGS) as app:
        response = post(app, hook, {}, {"Authorization": "Bearer anything"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("hook", ["label-studio", "s3", "v7", "generic"])
@pytest.mark.parametrize("streamed", [False, True])
def test_a_2_mib_body_is_413_before_any_secret_or_hmac_work(
    hooks: WebhookApp, monkeypatch: pytest.MonkeyPatch, hook: str, streamed: bool
) -> None:
    headers = {
        "Authorization": S3_SECRET,
        "X-Preannotate-Secret": LS_SECRET,
        **signed(b"small"),
        "Content-Type": "application/json",
    }
    reached: list[str] = []

    def spy(name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            reached.append(name)

        return record

    for name in ("verify", "check_shared_secret", "check_authorization"):
        monkeypatch.setattr(routes, name, spy(name))
    monkeypatch.setattr("hmac.new", spy("hmac.new"))
    monkeypatch.setattr("hmac.compare_digest", spy("compare_digest"))
    big = b"[" + b"0," * (1024**2) + b"0]"  # 2 MiB of valid JSON
    content: Any = iter([big[i : i + 65536] for i in range(0, len(big), 65536)]) if streamed else big
    response = hooks.client.post(f"/v1/webhooks/{hook}", content=content, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert reached == []


@pytest.mark.parametrize(
    ("hook", "headers"),
    [
        ("label-studio", {}),
        ("label-studio", {"X-Preannotate-Secret": "wrong"}),
        ("label-studio", {"Authorization": f"Bearer {TOKEN}"}),  # the API token is not the webhook's secret
        ("s3", {}),
        ("s3", {"Authorization": "Bearer wrong"}),
        ("s3", {"Authorization": f"Bearer {TOKEN}"}),
        ("v7", {"Authorization": S3_SECRET}),  # another webhook's secret
        ("generic", {}),
        ("generic", {"Authorization": f"Bearer {TOKEN}"}),
    ],
)
def test_missing_or_wrong_secrets_are_401(hooks: WebhookApp, hook: str, headers: dict[str, str]) -> None:
    response = post(hooks, hook, {"action": "TASKS_CREATED", "Records": [], **JOB}, headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert hooks.jobs() == 0


# -- generic -----------------------------------------------------------------------------------------------------


def test_generic_end_to_end_and_replays(hooks: WebhookApp) -> None:
    body = json.dumps(JOB).encode()
    first = post(hooks, "generic", body, signed(body, delivery="d-1"))
    assert first.status_code == 202, first.text
    answer = first.json()
    [job] = answer["jobs"]
    assert job["created"] is True
    assert job["status_url"].endswith(f"/v1/jobs/{job['job_id']}")
    # The first API token's tenant owns webhook jobs.
    status = hooks.client.get(f"/v1/jobs/{job['job_id']}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status.status_code == 200
    assert status.json()["status"] == "queued"

    replay = post(hooks, "generic", body, signed(body, delivery="d-1"))
    assert replay.status_code == 200
    assert replay.json()["jobs"] == [{**job, "created": False}]
    assert replay.json()["duplicates"] == 1

    other = json.dumps({**JOB, "threshold": 0.9}).encode()  # same id, other (signed) body: still a no-op
    assert post(hooks, "generic", other, signed(other, delivery="d-1")).status_code == 200
    again = post(hooks, "generic", body, signed(body, delivery="d-2"))  # new id, same content: same job
    assert again.status_code == 200
    assert again.json()["jobs"][0]["job_id"] == job["job_id"]
    assert hooks.jobs() == 1


def test_a_delivery_id_is_shared_by_every_api_process_and_survives_a_restart(tmp_path: Path) -> None:
    # Given a delivery received by one API process (a pod, or this one before a restart)
    body = json.dumps(JOB).encode()
    with webhook_app(tmp_path, ENABLED, **SETTINGS) as first_pod:
        first = post(first_pod, "generic", body, signed(body, delivery="d-shared"))
        assert first.status_code == 202, first.text
        [job] = first.json()["jobs"]
    # When the same delivery id comes back to another process over the same job store, with another body
    other = json.dumps({**JOB, "threshold": 0.9}).encode()
    with webhook_app(tmp_path, ENABLED, **SETTINGS) as second_pod:
        replay = post(second_pod, "generic", other, signed(other, delivery="d-shared"))
        # Then it is a no-op answered with the first delivery's job: no second job
        assert replay.status_code == 200, replay.text
        assert [j["job_id"] for j in replay.json()["jobs"]] == [job["job_id"]]
        assert second_pod.jobs() == 1


def test_a_refused_delivery_can_be_retried_under_its_id(hooks: WebhookApp, monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps(JOB).encode()
    monkeypatch.setattr(hooks.state.settings, "max_queue_depth", 0)
    assert post(hooks, "generic", body, signed(body, delivery="d-429")).status_code == 429
    # The sender's retry (same id, same body, fresh signature) is not taken for a replay.
    monkeypatch.setattr(hooks.state.settings, "max_queue_depth", 100)
    retry = post(hooks, "generic", body, signed(body, delivery="d-429"))
    assert retry.status_code == 202, retry.text
    # Another body under that id is a replay; its first body's job exists now, so that is the answer.
    other = json.dumps({**JOB, "threshold": 0.9}).encode()
    replay = post(hooks, "generic", other, signed(other, delivery="d-429"))
    assert replay.status_code == 200
    assert replay.json()["jobs"][0]["job_id"] == retry.json()["jobs"][0]["job_id"]
    assert hooks.jobs() == 1


def test_a_replay_whose_first_body_made_no_job_is_a_no_op(hooks: WebhookApp, monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps(JOB).encode()
    monkeypatch.setattr(hooks.state.settings, "max_queue_depth", 0)
    assert post(hooks, "generic", body, signed(body, delivery="d-lost")).status_code == 429
    monkeypatch.setattr(hooks.state.settings, "max_queue_depth", 100)
    other = json.dumps({**JOB, "threshold": 0.9}).encode()
    replay = post(hooks, "generic", other, signed(other, delivery="d-lost"))
    assert replay.status_code == 200
    assert replay.json()["jobs"] == []
    assert replay.json()["reasons"] == ["delivery d-lost was already received with another body"]
    assert hooks.jobs() == 0


def test_generic_rotated_secret_and_stale_timestamps(hooks: WebhookApp) -> None:
    body = json.dumps(JOB).encode()
    assert post(hooks, "generic", body, signed(body, secret=OLD_HMAC_SECRET, delivery=None)).status_code == 202
    now = int(time.time())
    for at in (now - 301, now + 301):
        stale = post(hooks, "generic", body, signed(body, delivery=None, at=at))
        assert stale.status_code == 401
    tampered = signed(body, delivery=None)
    assert post(hooks, "generic", body.replace(b"a.jpg", b"b.jpg"), tampered).status_code == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_argument"),
        (b"[1, 2]", "invalid_argument"),
        (json.dumps({"items": []}).encode(), "invalid_argument"),
        # A sender cannot make the workers spend the Label Studio key on a URL of its choosing.
        (
            json.dumps(
                {"items": [{"name": "a", "slots": [{"url": f"label-studio+{LS_URL}/data/upload/1/a.png"}]}]}
            ).encode(),
            "url_not_allowed",
        ),
    ],
)
def test_generic_bad_bodies_are_422(hooks: WebhookApp, body: bytes, code: str) -> None:
    response = post(hooks, "generic", body, signed(body, delivery=None))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == code


def test_generic_bad_delivery_id(hooks: WebhookApp) -> None:
    body = json.dumps(JOB).encode()
    assert post(hooks, "generic", body, signed(body, delivery="no spaces")).status_code == 422


# -- Label Studio ------------------------------------------------------------------------------------------------


def test_label_studio_tasks_created_makes_one_job_and_dedupes(hooks: WebhookApp) -> None:
    body = ls_tasks_created(
        ls_task(22, "/data/local-files/?d=images/frame_0001.jpg"),
        ls_task(23, "/data/upload/1/b.jpg"),
        {**ls_task(24, ""), "data": {"text": "no image"}},
    )
    headers = {"X-Preannotate-Secret": LS_SECRET}
    first = post(hooks, "label-studio", body, headers)
    assert first.status_code == 202, first.text
    answer = first.json()
    assert len(answer["jobs"]) == 1
    assert answer["ignored"] == 1
    assert "task 24" in answer["reasons"][0]
    for _ in range(2):
        again = post(hooks, "label-studio", body, headers)
        assert again.status_code == 200
        assert again.json()["jobs"][0]["job_id"] == answer["jobs"][0]["job_id"]
    assert hooks.jobs() == 1
    items = leased_items(hooks)
    assert [i["name"] for i in items] == ["task-22", "task-23"]
    assert items[0]["external_ids"] == {"label_studio": "22"}
    assert items[0]["slots"] == [
        {"name": "image", "url": f"label-studio+{LS_URL}/data/local-files/?d=images/frame_0001.jpg", "type": "image"}
    ]
    job = hooks.store.get_job(tenant=routes.webhook_tenant(hooks.state), job_id=answer["jobs"][0]["job_id"])
    assert job is not None
    assert job.spec.to_stored()["destinations"] == [{"backend": "label_studio", "project": 17}]


@pytest.mark.parametrize("makes_masks", [False, True])
def test_label_studio_a_brush_only_project_is_served_by_a_model_that_makes_masks(
    tmp_path: Path, makes_masks: bool
) -> None:
    """A model that makes masks itself (no segmenter) fills a BrushLabels-only project: its tasks make a job;
    a boxes-only model has nothing to fill there (422)."""
    brush_only = (
        '<View><Image name="image" value="$image"/>'
        '<BrushLabels name="mask" toName="image"><Label value="face"/></BrushLabels></View>'
    )
    body = ls_tasks_created(ls_task(22, "/data/upload/1/a.jpg"), label_config=brush_only)
    with webhook_app(tmp_path, ENABLED, makes_masks=makes_masks, **SETTINGS) as app:
        answer = post(app, "label-studio", body, {"X-Preannotate-Secret": LS_SECRET})
        assert answer.status_code == (202 if makes_masks else 422), answer.text
        assert app.jobs() == (1 if makes_masks else 0)


def test_label_studio_a_task_with_credentials_in_its_url_is_ignored(hooks: WebhookApp) -> None:
    body = ls_tasks_created(ls_task(22, "/data/upload/1/a.jpg"), ls_task(23, "https://me:CANARY-pw@cdn.example/b.jpg"))
    answer = post(hooks, "label-studio", body, {"X-Preannotate-Secret": LS_SECRET})
    assert answer.status_code == 202, answer.text
    assert answer.json()["ignored"] == 1
    assert "credentials in URLs are not allowed" in answer.json()["reasons"][0]
    assert [i["name"] for i in leased_items(hooks)] == ["task-22"]  # the other task's secret was never stored
    assert "CANARY" not in answer.text


def test_generic_credentials_in_a_url_are_refused(hooks: WebhookApp) -> None:
    body = json.dumps({"items": [{"name": "a", "slots": [{"url": "https://me:CANARY-pw@cdn.example/a.jpg"}]}]})
    answer = post(hooks, "generic", body.encode(), signed(body.encode()))
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "url_not_allowed"
    assert hooks.jobs() == 0


def test_label_studio_a_changed_task_is_a_new_job(hooks: WebhookApp) -> None:
    headers = {"X-Preannotate-Secret": LS_SECRET}
    post(hooks, "label-studio", ls_tasks_created(ls_task(22, "/data/a.jpg", updated_at="t1")), headers)
    changed = post(hooks, "label-studio", ls_tasks_created(ls_task(22, "/data/a.jpg", updated_at="t2")), headers)
    assert changed.status_code == 202
    assert hooks.jobs() == 2


def test_label_studio_other_actions_are_acknowledged(hooks: WebhookApp) -> None:
    for action in ("PROJECT_UPDATED", "ANNOTATION_CREATED", "TASKS_DELETED"):
        body = {**ls_tasks_created(ls_task(1, "/data/a.jpg")), "action": action}
        response = post(hooks, "label-studio", body, {"X-Preannotate-Secret": LS_SECRET})
        assert response.status_code == 202
        assert response.json()["jobs"] == []
        assert response.json()["ignored"] == 1
    assert hooks.jobs() == 0


def test_label_studio_projects_outside_the_allow_list_are_ignored(tmp_path: Path) -> None:
    config = WebhookConfig(label_studio_secrets=(LS_SECRET,), label_studio_projects=(5,))
    with webhook_app(tmp_path, config, **SETTINGS) as app:
        response = post(
            app, "label-studio", ls_tasks_created(ls_task(1, "/data/a.jpg")), {"X-Preannotate-Secret": LS_SECRET}
        )
        assert response.status_code == 202
        assert response.json()["ignored"] == 1
        assert app.jobs() == 0


def test_label_studio_needs_the_backend_and_the_payload(tmp_path: Path) -> None:
    headers = {"X-Preannotate-Secret": LS_SECRET}
    with webhook_app(tmp_path, ENABLED) as app:  # no label_studio_url / key: nowhere to push
        response = post(app, "label-studio", ls_tasks_created(ls_task(1, "/data/a.jpg")), headers)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "backend_not_configured"
    with webhook_app(tmp_path, ENABLED, **SETTINGS) as app:
        response = post(app, "label-studio", {"action": "TASKS_CREATED", "tasks": [ls_task(1, "/data/a.jpg")]}, headers)
        assert response.status_code == 422
        assert "send_payload" in response.json()["error"]["message"]


# -- S3 ----------------------------------------------------------------------------------------------------------


def s3_record(key: str, event: str = "ObjectCreated:Put", sequencer: str = "0A1") -> dict[str, Any]:
    return {"eventName": event, "s3": {"bucket": {"name": "uploads"}, "object": {"key": key, "sequencer": sequencer}}}


def test_s3_one_job_per_routed_object(hooks: WebhookApp) -> None:
    body = {
        "Records": [
            s3_record("cams/front+door/a.jpg"),
            s3_record("cams/b.mp4"),
            s3_record("elsewhere/c.jpg"),
            s3_record("cams/d.jpg", "ObjectRemoved:Delete"),
            s3_record("bad/e.jpg"),  # its rule names a model that is not loaded
            s3_record("cams/folder/"),
        ]
    }
    first = post(hooks, "s3", body, {"Authorization": f"Bearer {S3_SECRET}"})
    assert first.status_code == 202, first.text
    answer = first.json()
    assert len(answer["jobs"]) == 2
    assert answer["ignored"] == 4
    assert any("no webhook_s3_rules" in r for r in answer["reasons"])
    items = leased_items(hooks)
    assert [(i["name"], i["slots"][0]["url"]) for i in items] == [
        ("a.jpg", "s3://uploads/cams/front door/a.jpg"),
        ("b.mp4", "s3://uploads/cams/b.mp4"),
    ]
    redelivered = post(hooks, "s3", body, {"Authorization": S3_SECRET})  # MinIO: the token as configured
    assert redelivered.status_code == 200
    assert redelivered.json()["duplicates"] == 2
    overwritten = post(
        hooks, "s3", {"Records": [s3_record("cams/b.mp4", sequencer="0A2")]}, {"Authorization": S3_SECRET}
    )
    assert overwritten.status_code == 202  # a new write of the same key is new content
    assert hooks.jobs() == 3
    job = hooks.store.get_job(tenant=routes.webhook_tenant(hooks.state), job_id=answer["jobs"][0]["job_id"])
    assert job is not None
    assert job.spec.fps == 2.0  # from the rule


def test_s3_through_a_minio_endpoint(tmp_path: Path) -> None:
    config = WebhookConfig(
        s3_secrets=(S3_SECRET,), s3_rules=(S3Rule(bucket="uploads"),), s3_endpoint="http://minio:9000"
    )
    with webhook_app(tmp_path, config) as app:
        response = post(app, "s3", {"Records": [s3_record("a+b%3F.jpg")]}, {"Authorization": S3_SECRET})
        assert response.status_code == 202
        assert leased_items(app)[0]["slots"][0]["url"] == "http://minio:9000/uploads/a%20b%3F.jpg"


def test_s3_test_events_and_deletes_make_nothing(hooks: WebhookApp) -> None:
    for body in (
        {"Service": "Amazon S3", "Event": "s3:TestEvent"},
        {"Records": [s3_record("cams/a", "ObjectRemoved:Delete")]},
    ):
        response = post(hooks, "s3", body, {"Authorization": S3_SECRET})
        assert response.status_code == 202
        assert response.json()["jobs"] == []
    assert hooks.jobs() == 0


# -- V7 ----------------------------------------------------------------------------------------------------------


def test_v7_delivery_and_redeliveries(hooks: WebhookApp) -> None:
    headers = {"Authorization": V7_SECRET}
    first = post(hooks, "v7", darwin_item(["https://storage.example.com/a.png?sig=1"]), headers)
    assert first.status_code == 202, first.text
    job_id = first.json()["jobs"][0]["job_id"]
    # V7 retries (5 times), with fresh presigned URLs, and after our import with our annotations in it.
    for sig in range(2, 5):
        body = darwin_item([f"https://storage.example.com/a.png?sig={sig}"], annotations=[{"id": "x", "name": "face"}])
        again = post(hooks, "v7", body, headers)
        assert again.status_code == 200
        assert again.json()["jobs"][0]["job_id"] == job_id
    assert hooks.jobs() == 1
    (item,) = leased_items(hooks)
    assert item["external_ids"] == {"v7": "0192f1a2-3b4c-7d5e-8f60-718293a4b5c6"}
    job = hooks.store.get_job(tenant=routes.webhook_tenant(hooks.state), job_id=job_id)
    assert job is not None
    assert job.spec.to_stored()["destinations"] == [{"backend": "v7"}]


def test_v7_not_an_item(hooks: WebhookApp) -> None:
    response = post(hooks, "v7", {"event_type": "workflow_complete", "payload": {}}, {"Authorization": V7_SECRET})
    assert response.status_code == 202
    assert response.json()["ignored"] == 1


def test_v7_needs_the_backend(tmp_path: Path) -> None:
    with webhook_app(tmp_path, ENABLED) as app:
        response = post(app, "v7", darwin_item(["https://s.example.com/a.png"]), {"Authorization": V7_SECRET})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "backend_not_configured"
