"""The jobs routes on the real FastAPI router and a real SQLite store: duplicate item names, how long and for
what a repeated submission returns the old job, listing a tenant's jobs, and finished items while a job runs."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.errors import ErrorCode, PreannotateError
from service.intake.config import WebhookConfig
from service.jobs.outputs import job_result
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions, item_predictions_to_json
from service.pipeline.tracks import TrackerOptions
from service.queue.store import ItemState
from tests.builders import make_detections, make_result
from tests.unit.service.intake.helpers import TOKEN, WebhookApp, webhook_app
from tests.unit.service.queue.store_contract import FakeClock

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


def b64(cursor: str) -> str:
    """A cursor made by hand, as a client forging one would."""
    return base64.urlsafe_b64encode(cursor.encode()).decode()


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


# -- the tracker ---------------------------------------------------------------------------------------------------


def test_a_jobs_tracker_is_pinned_from_its_body_over_the_settings(tmp_path: Path, clock: FakeClock) -> None:
    with webhook_app(tmp_path, WebhookConfig(), store_clock=clock, track_max_gap_s=6.0, track_offline=False) as app:
        tracks = {"distance_gate": 0.8, "join_gap_s": 30, "appearance": False, "high_score": 0.6}
        response = post(app, {"items": [item("a", "https://media.example.com/a.mp4")], "tracks": tracks})
        assert response.status_code in (200, 201, 202), response.text
        (lease,) = app.store.lease("w", max_items=1, lease_s=60.0)
    assert lease.spec.tracker_or(None) == TrackerOptions(
        max_gap_s=6.0, distance_gate=0.8, offline=False, join_gap_s=30.0, appearance=False, high_score=0.6
    )


@pytest.mark.parametrize(
    ("tracks", "message"),
    [
        ({"enabled": True, "iou": 0.3}, "tracks.iou was removed (tracks match on centre distance in box sizes, "
         "not IoU): use tracks.distance_gate"),
        ({"max_gap": 2}, "tracks.max_gap was removed"),
        ({"max_gap_s": 7200}, "tracks.max_gap_s: Input should be less than or equal to 600"),
        ({"distance_gate": 0}, "tracks.distance_gate: Input should be greater than 0"),
        ({"offline": "false"}, "tracks.offline: Input should be a valid boolean"),
    ],
)  # fmt: skip
def test_bad_job_tracks_are_a_422_that_says_what_to_send(app: WebhookApp, tracks: dict[str, Any], message: str) -> None:
    response = post(app, {"items": [item("a", "https://media.example.com/a.mp4")], "tracks": tracks})
    assert response.status_code == 422
    assert error_code(response) == "invalid_argument"
    assert message in response.json()["error"]["message"]
    assert app.jobs() == 0


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


# -- what makes two submissions the same ---------------------------------------------------------------------------


BODY = {"items": [item("a")], "threshold": 0.4}


def finish_all(app: WebhookApp) -> None:
    """Every queued item succeeds: the jobs are finished, so the retention window applies to them."""
    for lease in app.store.lease("w", max_items=100, lease_s=60):
        app.store.complete("w", lease.item_id, {})


def test_an_identical_body_returns_the_job_only_inside_the_retention_window(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    with webhook_app(tmp_path, WebhookConfig(), store_clock=clock, idempotency_retention_s=3600) as app:
        clock.advance(-3570)  # the first job was stored 59.5 min ago (the API reads the real time)
        first = post(app, BODY)
        clock.advance(3570)
        inside = post(app, BODY)
        keyed = post(app, BODY, {"Idempotency-Key": "k-1"})
        clock.advance(-3601)
        old_keyed = post(app, BODY, {"Idempotency-Key": "k-2"})
        clock.advance(3601)
        still_queued = post(app, BODY, {"Idempotency-Key": "k-2"})  # older than the window, but not started yet
        finish_all(app)
        outside = post(app, BODY, {"Idempotency-Key": "k-2"})
        again = post(app, BODY, {"Idempotency-Key": "k-2"})

    assert (first.status_code, inside.status_code) == (202, 200)
    assert inside.json()["job_id"] == first.json()["job_id"]
    assert keyed.status_code == 202
    assert (still_queued.status_code, still_queued.json()["job_id"]) == (200, old_keyed.json()["job_id"])
    assert (old_keyed.status_code, outside.status_code, again.status_code) == (202, 202, 200)
    assert outside.json()["job_id"] != old_keyed.json()["job_id"]
    assert again.json()["job_id"] == outside.json()["job_id"]


def test_an_expired_key_takes_another_body_but_a_live_one_still_refuses_it(app: WebhookApp, clock: FakeClock) -> None:
    clock.advance(-86_400)  # the default window: a day
    post(app, BODY, {"Idempotency-Key": "k-1"})
    clock.advance(30)  # 30 s before the window ends (the API reads the real time)
    post(app, BODY, {"Idempotency-Key": "k-2"})
    clock.advance(86_370)
    finish_all(app)  # a queued or running job's key never expires
    live = post(app, {**BODY, "threshold": 0.9}, {"Idempotency-Key": "k-2"})
    expired = post(app, {**BODY, "threshold": 0.9}, {"Idempotency-Key": "k-1"})

    assert (live.status_code, error_code(live)) == (422, "idempotency_key_reused")
    assert (expired.status_code, expired.json()["created"]) == (202, True)


@pytest.mark.parametrize("key", [None, "k-1"], ids=["same-body", "idempotency-key"])
def test_a_cancelled_or_failed_job_is_never_returned_for_a_repeat(app: WebhookApp, key: str | None) -> None:
    headers = {"Idempotency-Key": key} if key else {}
    cancelled = post(app, BODY, headers).json()["job_id"]
    app.client.delete(f"/v1/jobs/{cancelled}", headers=AUTH)

    retried = post(app, BODY, headers)
    (lease,) = app.store.lease("w", max_items=1, lease_s=60)
    app.store.fail("w", lease.item_id, code="corrupt_media", message="a: bad", retryable=False, retry_in_s=0)
    after_failure = post(app, BODY, headers)
    running = post(app, BODY, headers)

    assert (retried.status_code, retried.json()["created"]) == (202, True)
    assert retried.json()["job_id"] != cancelled
    assert lease.job_id == retried.json()["job_id"]
    assert after_failure.status_code == 202
    assert after_failure.json()["job_id"] not in (cancelled, retried.json()["job_id"])
    assert (running.status_code, running.json()["job_id"]) == (200, after_failure.json()["job_id"])


def test_a_changed_file_is_a_new_job_and_an_unchanged_one_is_not(app: WebhookApp, tmp_path: Path) -> None:
    media = tmp_path / "a.jpg"
    media.write_bytes(b"first version")
    body = {"items": [item("a", media.as_uri())]}
    first = post(app, body)
    same = post(app, body)
    keyed = post(app, body, {"Idempotency-Key": "k-1"})

    media.write_bytes(b"second version, longer")
    changed = post(app, body)
    stat = media.stat()
    os.utime(media, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same size, touched
    touched = post(app, body)
    keyed_again = post(app, body, {"Idempotency-Key": "k-1"})

    assert (first.status_code, same.status_code) == (202, 200)
    assert same.json()["job_id"] == first.json()["job_id"]
    assert (changed.status_code, touched.status_code) == (202, 202)
    assert len({first.json()["job_id"], changed.json()["job_id"], touched.json()["job_id"]}) == 3
    # An Idempotency-Key names the request, whatever happened to the file since: a retry gets its job.
    assert (keyed_again.status_code, keyed_again.json()["job_id"]) == (200, keyed.json()["job_id"])


# -- listing jobs, items while a job runs ---------------------------------------------------------------------------


def test_get_jobs_lists_this_tokens_jobs_newest_first_a_page_at_a_time(tmp_path: Path) -> None:
    with webhook_app(tmp_path, WebhookConfig(), tokens=(TOKEN, OTHER_TOKEN), max_page_size=2) as app:
        mine = [post(app, {"items": [item(f"a{i}")]}).json()["job_id"] for i in range(3)]
        theirs = app.client.post("/v1/jobs", json={"items": [item("t")]}, headers=OTHER_AUTH).json()["job_id"]
        first = app.client.get("/v1/jobs", headers=AUTH)
        second = app.client.get("/v1/jobs", params={"cursor": first.json()["next_cursor"]}, headers=AUTH)
        other = app.client.get("/v1/jobs", params={"limit": 1}, headers=OTHER_AUTH)
        too_big = app.client.get("/v1/jobs", params={"limit": 3}, headers=AUTH)
        forged = [b64("jobs:" + "9" * 30), b64("jobs:-1"), b64(f"jobs:{2**63}")]  # SQLite's integers end at 2**63
        bad_cursors = [
            app.client.get("/v1/jobs", params={"cursor": c}, headers=AUTH)
            for c in ("nonsense!", "aXRlbXM6Mw", first.json()["next_cursor"] + "x", *forged)  # aXRlbXM6Mw: items:3
        ]
        anonymous = app.client.get("/v1/jobs")

    assert [j["id"] for j in first.json()["jobs"]] == [mine[2], mine[1]]  # the default page: max_page_size here
    assert first.json()["jobs"][0]["status"] == "queued"
    assert ([j["id"] for j in second.json()["jobs"]], second.json()["next_cursor"]) == ([mine[0]], None)
    assert ([j["id"] for j in other.json()["jobs"]], other.json()["next_cursor"]) == ([theirs], None)
    assert (too_big.status_code, error_code(too_big)) == (422, "invalid_argument")
    assert [(r.status_code, error_code(r)) for r in bad_cursors] == [(422, "invalid_argument")] * 6
    assert anonymous.status_code == 401


def _item_result(name: str) -> dict[str, Any]:
    slots = [SlotMeta(name, "0", MediaKind.IMAGE, ("https://media.example.com/a.jpg",), 640, 480, None, 1, 1)]
    frame = make_result(
        make_detections([[64, 48, 320, 240]], [0.9], [0]), item=name, slot="0", source=slots[0].source_files[0]
    )
    return json.loads(json.dumps(item_predictions_to_json(ItemPredictions(frame.info.item, tuple(slots), (frame,)))))


def test_finished_items_and_their_results_are_readable_while_the_job_runs(app: WebhookApp) -> None:
    job_id = post(app, {"items": [item(f"img{i}.jpg") for i in range(4)], "outputs": ["darwin"]}).json()["job_id"]
    leases = app.store.lease("w", max_items=3, lease_s=60)
    app.store.complete("w", leases[0].item_id, _item_result("img0.jpg"))
    app.store.fail("w", leases[1].item_id, code="fetch_failed", message="img1.jpg: 503", retryable=False, retry_in_s=0)
    app.store.complete("w", leases[2].item_id, _item_result("img2.jpg"))
    url = f"/v1/jobs/{job_id}/items"

    done = app.client.get(url, params={"state": ["succeeded", "failed"], "format": "darwin", "limit": 2}, headers=AUTH)
    rest = app.client.get(
        url,
        params={"state": ["succeeded", "failed"], "format": "darwin", "cursor": done.json()["next_cursor"]},
        headers=AUTH,
    )
    everything = app.client.get(url, headers=AUTH)
    status = app.client.get(f"/v1/jobs/{job_id}", headers=AUTH)
    foreign = app.client.get(url, headers=OTHER_AUTH)
    bad_state = app.client.get(url, params={"state": "done"}, headers=AUTH)
    bad_cursors = [
        app.client.get(url, params={"cursor": b64(c)}, headers=AUTH)
        for c in ("items:" + "9" * 30, "items:-5", f"items:{2**63}", "items:x", "jobs:1")
    ]

    assert done.status_code == 200
    assert done.json()["job_status"] == "running"
    page = done.json()["items"]
    assert [(i["position"], i["name"], i["state"]) for i in page] == [
        (0, "img0.jpg", "succeeded"),
        (1, "img1.jpg", "failed"),
    ]
    (darwin_item,) = page[0]["result"]["items"]
    assert darwin_item["item"]["name"] == "img0.jpg"
    assert [a["name"] for a in darwin_item["annotations"]] == ["face"]
    assert page[1]["result"] is None
    assert page[1]["error"] == {
        "item": "img1.jpg",
        "code": "fetch_failed",
        "message": "img1.jpg: 503",
        "retryable": True,
    }
    assert [(i["position"], i["state"]) for i in rest.json()["items"]] == [(2, "succeeded")]
    assert rest.json()["next_cursor"] is None
    assert [(i["state"], i["result"]) for i in everything.json()["items"]] == [
        ("succeeded", None),  # no format: no result
        ("failed", None),
        ("succeeded", None),
        ("queued", None),
    ]
    assert status.json()["errors"][0]["retryable"] is True  # the enum's: fetch_failed may succeed on a resubmission
    assert (foreign.status_code, error_code(foreign)) == (404, "job_not_found")
    assert (bad_state.status_code, error_code(bad_state)) == (422, "invalid_argument")
    assert [(r.status_code, error_code(r)) for r in bad_cursors] == [(422, "invalid_argument")] * 5


def test_an_item_error_code_the_enum_does_not_know_is_not_retryable(app: WebhookApp) -> None:
    job_id = post(app, {"items": [item("a")]}).json()["job_id"]
    (lease,) = app.store.lease("w", max_items=1, lease_s=60)
    app.store.fail("w", lease.item_id, code="some_future_code", message="a: odd", retryable=False, retry_in_s=0)
    job = app.client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()

    assert job["errors"] == [{"item": "a", "code": "some_future_code", "message": "a: odd", "retryable": False}]


def test_an_item_finished_between_the_routes_reads_is_never_labelled_without_its_models_classes(
    app: WebhookApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A distributed cold start: the job was queued before any worker published its model, so it is unpinned.
    job_id = post(app, {"items": [item("img0.jpg")]}).json()["job_id"]
    with closing(sqlite3.connect(app.state.settings.db_path)) as db, db:
        db.execute("UPDATE jobs SET request = json_set(request, '$.model_version', NULL, '$.class_names', NULL)")
    (lease,) = app.store.lease("w", max_items=1, lease_s=60)
    reads = {"get_job": app.store.get_job, "results": app.store.results}
    raced = []

    def worker_between_reads(name: str) -> Any:
        def read(**kwargs: Any) -> Any:
            answer = reads[name](**kwargs)
            if not raced:  # after the route's first read, whichever it is, the worker pins the model and finishes
                raced.append(name)
                app.store.pin_model(job_id, version="v2", class_names=["face"])
                app.store.complete("w", lease.item_id, _item_result("img0.jpg"))
            return answer

        return read

    for name in reads:
        monkeypatch.setattr(app.store, name, worker_between_reads(name))
    during = app.client.get(f"/v1/jobs/{job_id}/items", params={"format": "darwin"}, headers=AUTH)
    after = app.client.get(f"/v1/jobs/{job_id}/items", params={"format": "darwin"}, headers=AUTH)

    def labels(page: httpx.Response) -> list[list[str]]:
        return [
            [a["name"] for a in entry["result"]["items"][0]["annotations"]]
            for entry in page.json()["items"]
            if entry["state"] == "succeeded"
        ]

    assert raced
    assert all(names == ["face"] for names in labels(during))  # unpinned, it would say "class_0"
    assert labels(after) == [["face"]]


# -- the result, streamed ------------------------------------------------------------------------------------------


@pytest.fixture
def paged_app(tmp_path: Path, clock: FakeClock) -> Iterator[WebhookApp]:
    with webhook_app(tmp_path, WebhookConfig(), store_clock=clock, result_page_items=2) as a:
        yield a


def finished_job(app: WebhookApp, names: list[str], failed: frozenset[str] = frozenset()) -> str:
    job_id = str(post(app, {"items": [item(name) for name in names]}).json()["job_id"])
    for lease in app.store.lease("w", max_items=len(names), lease_s=60):
        name = names[lease.position]
        if name in failed:
            app.store.fail(
                "w", lease.item_id, code="fetch_failed", message=f"{name}: 404", retryable=False, retry_in_s=0
            )
        else:
            app.store.complete("w", lease.item_id, _item_result(name))
    return job_id


def recorded_reads(app: WebhookApp, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every ``results`` read of the real store, with its arguments."""
    reads: list[dict[str, Any]] = []
    results = app.store.results

    def recording(**kwargs: Any) -> Any:
        reads.append(kwargs)
        return results(**kwargs)

    monkeypatch.setattr(app.store, "results", recording)
    return reads


@pytest.mark.parametrize("fmt", ["coco", "darwin", "labelstudio"])
def test_the_result_is_streamed_from_pages_of_the_store_as_one_document(
    paged_app: WebhookApp, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    names = [f"img{i}.jpg" for i in range(6)]
    job_id = finished_job(paged_app, names, failed=frozenset({"img3.jpg"}))
    job = paged_app.store.get_job(tenant=paged_app.state.auth.tenant_for(TOKEN), job_id=job_id)
    assert job is not None
    every_item = paged_app.store.results(tenant=job.tenant, job_id=job_id)
    assert every_item is not None
    whole = json.loads(json.dumps(job_result(fmt, job, every_item, paged_app.state.settings)))  # as it was served
    reads = recorded_reads(paged_app, monkeypatch)

    response = paged_app.client.get(f"/v1/jobs/{job_id}/result", params={"format": fmt}, headers=AUTH)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == whole
    assert len(whole["skipped_items"]) == 0
    assert [(r["states"], r["after"], r["limit"]) for r in reads] == [
        ({ItemState.SUCCEEDED}, -1, 2),
        ({ItemState.SUCCEEDED}, 1, 2),
        ({ItemState.SUCCEEDED}, 4, 2),  # img3 failed: img2 and img4 were a page, img5 alone ends it
    ]


def test_a_store_outage_before_the_result_starts_is_a_503_and_after_it_cuts_the_body_short(
    paged_app: WebhookApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = finished_job(paged_app, [f"img{i}.jpg" for i in range(5)])
    reads = recorded_reads(paged_app, monkeypatch)
    recording = paged_app.store.results
    outage_from = [0]

    def down_from_a_read(**kwargs: Any) -> Any:
        if len(reads) >= outage_from[0]:
            reads.append(kwargs)
            raise PreannotateError(ErrorCode.NOT_READY, "the result store is unreachable")
        return recording(**kwargs)

    monkeypatch.setattr(paged_app.store, "results", down_from_a_read)
    url = f"/v1/jobs/{job_id}/result"
    at_once = paged_app.client.get(url, params={"format": "darwin"}, headers=AUTH)
    reads.clear()
    outage_from[0] = 1  # the first page is read, the second is not
    # The failure reaches the server (uvicorn then drops the connection before the chunked body's end: the client
    # sees an incomplete read, never a download that looks whole), logged first.
    with pytest.raises(RuntimeError, match="response already started"):  # Starlette's word for it
        paged_app.client.get(url, params={"format": "darwin"}, headers=AUTH)

    assert (at_once.status_code, error_code(at_once)) == (503, "not_ready")
    assert "the result stream failed after its response started" in caplog.text


def test_a_result_of_an_unfinished_job_is_409_and_of_an_unknown_one_404(app: WebhookApp) -> None:
    job_id = post(app, {"items": [item("a.jpg")]}).json()["job_id"]
    running = app.client.get(f"/v1/jobs/{job_id}/result", headers=AUTH)
    unknown = app.client.get("/v1/jobs/nope/result", headers=AUTH)

    assert (running.status_code, error_code(running)) == (409, "job_not_finished")
    assert (unknown.status_code, error_code(unknown)) == (404, "job_not_found")
