"""`preannotate serve` as a real uvicorn process on 127.0.0.1, driven with real HTTP clients."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest
import skimage.data
from pycocotools.coco import COCO

from service.samples import write_pan_video, write_video
from tests.integration.servers import OTHER_TOKEN, TOKEN, MediaServer, Server, running, wait_for_job

ASTRONAUT_FACE = (173, 82, 274, 180)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    astronaut = skimage.data.astronaut()
    paths = {
        "photo": root / "astronaut.png",
        "camera": root / "camera.png",
        "video": root / "pan.mp4",
        "long_video": root / "long.mp4",
        "corrupt": root / "broken.mp4",
        "corrupt_image": root / "broken.png",
        "text": root / "notes.txt",
    }
    cv2.imwrite(str(paths["photo"]), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(paths["camera"]), skimage.data.camera())
    write_pan_video(astronaut, paths["video"], duration_s=3.0, fps=25)
    write_video(paths["long_video"], duration_s=40.0, width_px=320, height_px=240, gop=30)
    paths["corrupt"].write_bytes(paths["video"].read_bytes()[:1500])
    paths["corrupt_image"].write_bytes(paths["photo"].read_bytes()[:5000])
    paths["text"].write_text("not media")
    return paths


@pytest.fixture(scope="module")
def media_server(media: dict[str, Path]) -> Iterator[MediaServer]:
    with MediaServer(media["photo"].parent) as server:
        yield server


@pytest.fixture(scope="module")
def server(
    media: dict[str, Path], media_server: MediaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("db") / "jobs.db"
    with running(
        db,
        PREANNOTATE_LOCAL_ROOTS=str(media["photo"].parent),
        PREANNOTATE_FETCH_ALLOWED_HOSTS=f"127.0.0.1:{media_server.port}",
        PREANNOTATE_MAX_UPLOAD_BYTES=str(2 * 1024**2),
        PREANNOTATE_MAX_ITEMS_PER_JOB="20",
        PREANNOTATE_LEASE_S="5",
        PREANNOTATE_HEARTBEAT_S="1",
    ) as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _face_found(detections: list[dict[str, object]]) -> bool:
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    for det in detections:
        x1, y1, x2, y2 = det["xyxy"]  # type: ignore[misc]
        overlap = max(0, min(x2, fx2) - max(x1, fx1)) * max(0, min(y2, fy2) - max(y1, fy1))
        if overlap > 0.5 * (fx2 - fx1) * (fy2 - fy1):
            return True
    return False


def _error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert "Traceback" not in body["error"]["message"]
    return str(body["error"]["code"])


# --- health, auth, models ----------------------------------------------------------------------


def test_health_routes_need_no_token(server: Server) -> None:
    with server.client(token=None) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").json() == {"status": "ready", "models": ["builtin:centerface"]}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/predict"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/abc"),
        ("DELETE", "/v1/jobs/abc"),
        ("GET", "/v1/jobs/abc/result"),
        ("GET", "/metrics"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_every_other_route_needs_a_valid_token(server: Server, method: str, path: str, token: str | None) -> None:
    with server.client(token=token) as c:
        response = c.request(method, path)
    assert response.status_code == 401
    assert _error_code(response) == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_models(client: httpx.Client) -> None:
    [model] = client.get("/v1/models").json()
    assert model["spec"] == "builtin:centerface"
    assert model["classes"] == ["face"]
    assert model["default"] is True


def test_openapi_documents_the_api(server: Server) -> None:
    with server.client(token=None) as anonymous:
        spec = anonymous.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/models"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobCreate"}
    assert spec["components"]["schemas"]["JobCreate"]["examples"]
    assert {"SlotIn", "ItemIn", "PredictUrlRequest", "ErrorResponse"} <= set(spec["components"]["schemas"])


# --- predict -----------------------------------------------------------------------------------


def test_predict_upload_finds_the_face(client: httpx.Client, media: dict[str, Path]) -> None:
    response = client.post("/v1/predict", files={"file": media["photo"].read_bytes()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"], body["model"]) == (512, 512, "builtin:centerface")
    assert body["model_version"].startswith("centerface-")
    assert _face_found(body["detections"])
    assert body["detections"][0]["label"] == "face"


def test_predict_by_file_and_http_url(client: httpx.Client, media: dict[str, Path], media_server: MediaServer) -> None:
    by_file = client.post("/v1/predict", json={"url": media["photo"].as_uri()})
    by_http = client.post("/v1/predict", json={"url": f"{media_server.url}/astronaut.png?X-Amz-Signature=secret"})
    assert by_file.status_code == by_http.status_code == 200, (by_file.text, by_http.text)
    assert by_file.json()["detections"] == by_http.json()["detections"]
    assert _face_found(by_file.json()["detections"])


def test_predict_threshold_and_classes(client: httpx.Client, media: dict[str, Path]) -> None:
    strict = client.post("/v1/predict", files={"file": media["photo"].read_bytes()}, data={"threshold": "0.99"})
    assert strict.json()["detections"] == []
    unknown = client.post("/v1/predict", json={"url": media["photo"].as_uri(), "classes": ["car"]})
    assert unknown.status_code == 422
    assert _error_code(unknown) == "invalid_argument"


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("video", 415, "unsupported_media"),
        ("text", 415, "unsupported_media"),
        ("corrupt", 415, "unsupported_media"),  # a (broken) video is still not an image
        ("corrupt_image", 422, "corrupt_media"),
    ],
)
def test_predict_refuses_what_is_not_an_image(
    client: httpx.Client, media: dict[str, Path], kind: str, status: int, code: str
) -> None:
    response = client.post("/v1/predict", files={"file": media[kind].read_bytes()})
    assert response.status_code == status, response.text
    assert _error_code(response) == code


def test_predict_errors_name_the_file_as_the_client_sent_it(
    client: httpx.Client, media: dict[str, Path], media_server: MediaServer
) -> None:
    broken = media["corrupt_image"].read_bytes()
    unnamed = client.post("/v1/predict", files={"file": broken})
    named = client.post("/v1/predict", files={"file": ("../photos/holiday.png", broken, "image/png")})
    fetched = client.post("/v1/predict", json={"url": f"{media_server.url}/broken.png?X-Amz-Signature=canary-sig"})

    messages = [r.json()["error"]["message"] for r in (unnamed, named, fetched)]
    assert [_error_code(r) for r in (unnamed, named, fetched)] == ["corrupt_media"] * 3, messages
    assert messages[0].startswith("upload: ")
    assert messages[1].startswith("holiday.png: ")  # its last path part
    assert messages[2].startswith(f"{media_server.url}/broken.png#")  # redacted: no query
    for message in messages:  # never the server's scratch directory
        assert "predict-" not in message
        assert tempfile.gettempdir() not in message
        assert "canary-sig" not in message


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"url": "file:///etc/passwd"}, 422, "url_not_allowed"),
        ({"url": "http://127.0.0.1:1/x.png"}, 422, "url_not_allowed"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, 422, "url_not_allowed"),
        ({"url": "gopher://127.0.0.1/"}, 422, "url_not_allowed"),
        ({"url": "x", "model": "builtin:nope"}, 404, "model_not_found"),
        ({"url": "x", "threshold": 3}, 422, "invalid_argument"),
        ({"nope": 1}, 422, "invalid_argument"),
    ],
)
def test_predict_bad_requests(client: httpx.Client, body: dict[str, object], status: int, code: str) -> None:
    response = client.post("/v1/predict", json=body)
    assert response.status_code == status, response.text
    assert _error_code(response) == code


def test_predict_upload_over_the_limit_is_413(client: httpx.Client) -> None:
    response = client.post("/v1/predict", files={"file": b"\x00" * (3 * 1024**2)})
    assert response.status_code == 413
    assert _error_code(response) == "request_too_large"


def test_predict_wrong_content_type_is_415(client: httpx.Client) -> None:
    response = client.post("/v1/predict", content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert _error_code(response) == "unsupported_media"


def test_fifty_concurrent_predicts_each_get_their_own_answer(server: Server, media: dict[str, Path]) -> None:
    photos = {"photo": media["photo"].read_bytes(), "camera": media["camera"].read_bytes()}

    async def one(client: httpx.AsyncClient, name: str) -> tuple[str, dict[str, object]]:
        response = await client.post("/v1/predict", files={"file": photos[name]})
        assert response.status_code == 200, response.text
        return name, response.json()

    async def main() -> list[tuple[str, dict[str, object]]]:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
        ) as c:
            return await asyncio.gather(*(one(c, "photo" if i % 2 else "camera") for i in range(50)))

    results = asyncio.run(main())
    assert len(results) == 50
    for name, body in results:
        assert (body["width"], body["height"]) == (512, 512)
        if name == "photo":
            assert _face_found(body["detections"])  # type: ignore[arg-type]
        else:
            assert body["detections"][0]["xyxy"][0] > 190  # type: ignore[index]  # camera's face is further right


# --- jobs --------------------------------------------------------------------------------------


def _job(media: dict[str, Path], media_server: MediaServer) -> dict[str, object]:
    return {
        "items": [
            {"name": "photo", "slots": [{"url": media["photo"].as_uri()}]},
            {"name": "clip", "slots": [{"name": "main", "url": f"{media_server.url}/pan.mp4", "type": "video"}]},
            {"name": "broken", "slots": [{"url": media["corrupt"].as_uri()}]},
            {
                "name": "case",
                "slots": [
                    {"name": "left", "url": media["camera"].as_uri()},
                    {"name": "right", "url": media["photo"].as_uri()},
                ],
            },
        ],
        "fps": 2,
    }


def test_job_lifecycle_and_coco_result(
    client: httpx.Client, media: dict[str, Path], media_server: MediaServer, tmp_path: Path
) -> None:
    submitted = client.post("/v1/jobs", json=_job(media, media_server))
    assert submitted.status_code == 202, submitted.text
    accepted = submitted.json()
    assert accepted["created"] is True
    assert submitted.headers["Location"] == accepted["status_url"]

    job = wait_for_job(client, accepted["job_id"])
    assert job["status"] == "partially_failed"
    assert job["progress"] == {
        "items_total": 4,
        "items_done": 4,
        "items_succeeded": 3,
        "items_failed": 1,
        "frames_planned": 9,
        "frames_done": 9,
    }
    [error] = job["errors"]  # type: ignore[misc]
    assert error["item"] == "broken"
    assert error["code"] == "corrupt_media"

    result = client.get(f"/v1/jobs/{accepted['job_id']}/result", params={"format": "coco"})
    assert result.status_code == 200
    coco = result.json()
    path = tmp_path / "result.json"
    path.write_text(json.dumps(coco))
    gt = COCO(str(path))
    assert len(gt.loadRes(coco["annotations"]).getAnnIds()) == len(coco["annotations"]) > 3
    names = {im["file_name"] for im in coco["images"]}
    assert {"photo/astronaut.png", "clip/frame_000000.jpg", "case/left/camera.png", "case/right/astronaut.png"} <= names
    clip = [im for im in coco["images"] if im["item"] == "clip"]
    assert [(im["frame_index"], im["timestamp_s"], im["video"]) for im in clip] == [
        (0, 0.0, "pan.mp4"),
        (12, 0.48, "pan.mp4"),
        (25, 1.0, "pan.mp4"),
        (37, 1.48, "pan.mp4"),
        (50, 2.0, "pan.mp4"),
        (62, 2.48, "pan.mp4"),
    ]
    assert coco["info"]["job_id"] == accepted["job_id"]


@pytest.mark.parametrize("fmt", ["coco", "darwin", "labelstudio", "encord"])
def test_every_result_format_keeps_the_items_it_can_express(
    client: httpx.Client, media: dict[str, Path], media_server: MediaServer, fmt: str
) -> None:
    """An item with a video and a still is no Encord label row: it is listed as skipped, never a 500."""
    mixed = [{"name": "cam", "url": f"{media_server.url}/pan.mp4", "type": "video"}, {"url": media["photo"].as_uri()}]
    body = {
        "items": [{"name": "mixed", "slots": mixed}, {"name": "photo", "slots": [{"url": media["photo"].as_uri()}]}]
    }
    job = client.post("/v1/jobs", json=body | {"fps": 1})
    assert job.status_code in (200, 202), job.text
    assert wait_for_job(client, job.json()["job_id"])["status"] == "succeeded"

    response = client.get(f"/v1/jobs/{job.json()['job_id']}/result", params={"format": fmt})
    assert response.status_code == 200, response.text
    served = response.json()
    if fmt == "encord":
        assert [row["data_title"] for row in served["label_rows"]] == ["photo"]
        [skipped] = served["skipped_items"]
        assert (skipped["item"], skipped["code"]) == ("mixed", "unsupported_by_format")
        assert "video" in skipped["reason"]
        assert "image" in skipped["reason"]
    else:
        assert served["skipped_items"] == []
    if fmt == "darwin":
        assert [d["item"]["name"] for d in served["items"]] == ["mixed", "photo"]
    if fmt == "coco":
        assert {im["item"] for im in served["images"]} == {"mixed", "photo"}


def test_idempotency(client: httpx.Client, media: dict[str, Path]) -> None:
    body = {"items": [{"name": "p", "slots": [{"url": media["photo"].as_uri()}]}], "threshold": 0.61}
    first = client.post("/v1/jobs", json=body)
    again = client.post("/v1/jobs", json=body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["job_id"] == again.json()["job_id"]
    assert again.json()["created"] is False

    keyed = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc-123"})
    other_body = client.post("/v1/jobs", json={**body, "threshold": 0.7}, headers={"Idempotency-Key": "abc-123"})
    assert keyed.status_code == 202
    assert keyed.json()["job_id"] != first.json()["job_id"]
    assert other_body.status_code == 422  # a key names one request: reusing it for another is a client bug
    assert _error_code(other_body) == "idempotency_key_reused"
    retried = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "abc-123"})
    assert (retried.status_code, retried.json()["job_id"]) == (200, keyed.json()["job_id"])


def test_tenants_cannot_see_each_others_jobs(server: Server, client: httpx.Client, media: dict[str, Path]) -> None:
    job_id = client.post(
        "/v1/jobs", json={"items": [{"name": "t", "slots": [{"url": media["photo"].as_uri()}]}], "threshold": 0.62}
    ).json()["job_id"]
    with server.client(token=OTHER_TOKEN) as other:
        for method, path in [
            ("GET", f"/v1/jobs/{job_id}"),
            ("GET", f"/v1/jobs/{job_id}/result"),
            ("DELETE", f"/v1/jobs/{job_id}"),
        ]:
            response = other.request(method, path)
            assert response.status_code == 404
            assert _error_code(response) == "job_not_found"


def test_cancel(client: httpx.Client, media: dict[str, Path]) -> None:
    items = [{"name": f"v{i}", "slots": [{"url": media["long_video"].as_uri()}]} for i in range(6)]
    job_id = client.post("/v1/jobs", json={"items": items, "fps": 0}).json()["job_id"]
    cancelled = client.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    time.sleep(1.5)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert job["progress"]["items_succeeded"] < 6


def test_result_before_the_job_finishes_is_409(client: httpx.Client, media: dict[str, Path]) -> None:
    items = [{"name": f"w{i}", "slots": [{"url": media["long_video"].as_uri()}]} for i in range(2)]
    job_id = client.post("/v1/jobs", json={"items": items, "fps": 0, "threshold": 0.9}).json()["job_id"]
    response = client.get(f"/v1/jobs/{job_id}/result")
    assert response.status_code == 409
    assert _error_code(response) == "job_not_finished"
    client.delete(f"/v1/jobs/{job_id}")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"items": []}, 422, "invalid_argument"),
        ({"items": [{"name": "a", "slots": [{"url": "ftp://x/y.png"}]}]}, 422, "url_not_allowed"),
        ({"items": [{"name": "a", "slots": [{"url": "https://user:pw@x/y.png"}]}]}, 422, "url_not_allowed"),
        ({"items": [{"name": "a", "slots": [{"name": "../etc", "url": "https://x/y.png"}]}]}, 422, "invalid_argument"),
        (
            {"items": [{"name": "a", "slots": [{"url": "https://x/1.png"}, {"url": "https://x/2.png"}]}]},
            422,
            "invalid_argument",
        ),
        (
            {"items": [{"name": f"i{i}", "slots": [{"url": "https://x/y.png"}]} for i in range(21)]},
            422,
            "too_many_items",
        ),
        ({"items": [{"name": "a", "slots": [{"url": "https://x/y.png"}]}], "model": "hf:nope"}, 404, "model_not_found"),
        (
            {"items": [{"name": "a", "slots": [{"url": "https://x/y.png"}]}], "outputs": ["yolo-txt"]},
            422,
            "invalid_argument",
        ),
        ({"videos": [{"objectUrl": "https://x/" + "a" * 17_000}]}, 422, "invalid_argument"),
        ({"nifti": [{"objectUrl": "https://x/brain.nii.gz"}]}, 422, "invalid_argument"),
        ({"images": [{"objectUrl": "https://x/a.jpg", "title": "t" * 301}]}, 422, "invalid_argument"),
    ],
    ids=[
        "no-items",
        "ftp",
        "credentials",
        "slot-traversal",
        "duplicate-slots",
        "too-many-items",
        "unknown-model",
        "unknown-output",
        "encord-url-too-long",
        "encord-nifti",
        "encord-title-too-long",
    ],
)
def test_job_validation(client: httpx.Client, body: dict[str, object], status: int, code: str) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    assert _error_code(response) == code


def test_json_body_over_the_limit_is_413(client: httpx.Client) -> None:
    response = client.post(
        "/v1/jobs", content=b"{" + b" " * (2 * 1024**2) + b"}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{}", "text/plain", 415, "unsupported_media"),
        (b"{}", None, 415, "unsupported_media"),
        (b"[" * 100_000, "application/json", 422, "invalid_argument"),  # too deep for any JSON parser: not a 500
        (b"{" + b" " * (2 * 1024**2) + b"}", "text/plain", 413, "request_too_large"),  # the route's cap, any type
    ],
    ids=["text-plain", "no-type", "deep-nesting", "large-text-plain"],
)
def test_job_body_must_be_json(
    client: httpx.Client, content: bytes, content_type: str | None, status: int, code: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/jobs", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert _error_code(response) == code


def test_encord_registration_json_becomes_a_job(
    client: httpx.Client, media: dict[str, Path], media_server: MediaServer
) -> None:
    body = {
        "images": [{"objectUrl": f"{media_server.url}/astronaut.png", "title": "astro.png"}],
        "videos": [{"objectUrl": f"{media_server.url}/pan.mp4"}],
        "image_groups": [
            {
                "title": "seq",
                "createVideo": True,
                "objectUrl_1": f"{media_server.url}/camera.png",
                "objectUrl_0": f"{media_server.url}/astronaut.png",
            },
            {
                "title": "group",
                "createVideo": False,
                "objectUrl_0": f"{media_server.url}/astronaut.png",
                "objectUrl_1": f"{media_server.url}/camera.png",
            },
        ],
    }
    submitted = client.post("/v1/jobs", json=body, params={"fps": 1})
    assert submitted.status_code == 202, submitted.text
    job = wait_for_job(client, submitted.json()["job_id"])
    assert job["status"] == "succeeded", job
    coco = client.get(f"/v1/jobs/{submitted.json()['job_id']}/result").json()
    by_item: dict[str, list[str]] = {}
    for image in coco["images"]:
        by_item.setdefault(image["item"], []).append(image["file_name"])
    assert by_item["astro.png"] == ["astro.png/astronaut.png"]  # the Encord title names the item
    assert len(by_item["pan.mp4"]) == 3
    assert by_item["seq"] == ["seq/astronaut.png", "seq/camera.png"]  # objectUrl order, not key order
    assert sorted(by_item["group"]) == ["group/0/astronaut.png", "group/1/camera.png"]


def test_metrics_after_work(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    assert 'preannotate_batch_size_count{model="centerface"}' in text
    assert 'route="/v1/predict"' in text
    assert "preannotate_queue_depth" in text
    assert "secret" not in text


def test_presigned_signature_never_logged(server: Server, client: httpx.Client, media_server: MediaServer) -> None:
    client.post("/v1/predict", json={"url": f"{media_server.url}/astronaut.png?X-Amz-Signature=canary-s3cr3t"})
    client.post("/v1/predict", json={"url": f"{media_server.url}/missing.png?X-Amz-Signature=canary-s3cr3t"})
    assert "canary-s3cr3t" not in server.log()
    assert TOKEN not in server.log()


# --- separate servers: queue limits, batching, restarts ----------------------------------------


def test_queue_full_is_429_with_retry_after(tmp_path: Path, media: dict[str, Path]) -> None:
    with (
        running(
            tmp_path / "q.db",
            PREANNOTATE_WORKERS="0",
            PREANNOTATE_MAX_QUEUE_DEPTH="3",
            PREANNOTATE_LOCAL_ROOTS=str(media["photo"].parent),
        ) as srv,
        srv.client() as c,
    ):
        items = [{"name": name, "slots": [{"url": media["photo"].as_uri()}]} for name in ("p1", "p2")]
        assert c.post("/v1/jobs", json={"items": items}).status_code == 202
        full = c.post("/v1/jobs", json={"items": items, "threshold": 0.3})
        assert full.status_code == 429
        assert _error_code(full) == "queue_full"
        assert 1 <= int(full.headers["Retry-After"]) <= 60
        # a client retrying a job that was accepted gets that job, full queue or not
        again = c.post("/v1/jobs", json={"items": items})
        assert again.status_code == 200, again.text


def test_every_media_limit_is_a_setting(tmp_path: Path, media: dict[str, Path]) -> None:
    twelve_s = media["photo"].parent / "twelve.mp4"  # under the size cap, over the duration cap
    write_video(twelve_s, duration_s=12.0, width_px=160, height_px=120, gop=30)
    with (
        running(
            tmp_path / "limits.db",
            PREANNOTATE_LOCAL_ROOTS=str(media["photo"].parent),
            PREANNOTATE_MAX_SLOTS_PER_ITEM="2",
            PREANNOTATE_MAX_JSON_BYTES="4000",
            PREANNOTATE_MAX_IMAGE_PIXELS="100000",  # the 512x512 photo has 262 144
            PREANNOTATE_MAX_VIDEO_DURATION_S="10",  # long.mp4 lasts 40 s
            PREANNOTATE_MAX_FRAMES_PER_SLOT="5",  # pan.mp4 at 5 fps gives 15
            PREANNOTATE_MAX_FILE_BYTES=str(media["photo"].stat().st_size),  # long.mp4 is larger
        ) as srv,
        srv.client() as c,
    ):

        def slot(name: str) -> dict[str, str]:
            return {"name": name, "url": media[name].as_uri()}

        three = c.post(
            "/v1/jobs", json={"items": [{"name": "x", "slots": [slot("photo"), slot("camera"), slot("video")]}]}
        )
        assert three.status_code == 422
        assert "limit is 2" in three.json()["error"]["message"]
        big = c.post("/v1/jobs", json={"items": [{"name": "x" * 5000, "slots": [slot("photo")]}]})
        assert big.status_code == 413
        upload = c.post("/v1/predict", files={"file": media["photo"].read_bytes()})
        assert upload.status_code == 422
        assert _error_code(upload) == "dimensions_too_large"

        items = [
            {"name": "photo", "slots": [slot("photo")]},
            {"name": "frames", "slots": [slot("video")]},
        ]
        job = c.post("/v1/jobs", json={"items": items, "fps": 5}).json()
        videos = [
            {"name": "long", "slots": [slot("long_video")]},
            {"name": "twelve", "slots": [{"url": twelve_s.as_uri()}]},
        ]
        video_job = c.post("/v1/jobs", json={"items": videos}).json()
        for job_id, expected in [
            (job["job_id"], {"photo": "dimensions_too_large", "frames": "too_many_frames"}),
            (video_job["job_id"], {"long": "file_too_large", "twelve": "video_too_long"}),
        ]:
            errors = wait_for_job(c, job_id)["errors"]
            assert {e["item"]: e["code"] for e in errors} == expected  # type: ignore[union-attr]


def test_concurrent_predicts_are_merged_into_batches(tmp_path: Path, media: dict[str, Path]) -> None:
    with running(tmp_path / "b.db", PREANNOTATE_MAX_BATCH_SIZE="8", PREANNOTATE_MAX_WAIT_MS="300") as srv:
        photo = media["photo"].read_bytes()

        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=srv.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
            ) as c:
                return await asyncio.gather(*(c.post("/v1/predict", files={"file": photo}) for _ in range(16)))

        responses = asyncio.run(main())
        assert all(r.status_code == 200 and _face_found(r.json()["detections"]) for r in responses)
        with srv.client() as c:
            text = c.get("/metrics").text
        count = float(text.split('preannotate_batch_size_count{model="centerface"}')[1].split()[0])
        total = float(text.split('preannotate_batch_size_sum{model="centerface"}')[1].split()[0])
        assert total == 16  # every request went through the batcher (warm-up runs before it)
        assert count < total  # fewer model calls than frames: requests were merged


def test_restart_mid_job_completes_the_job(tmp_path: Path, media: dict[str, Path]) -> None:
    """kill -9 the server while it works on a job; a new server on the same database finishes it."""
    db = tmp_path / "restart.db"
    env = {
        "PREANNOTATE_LOCAL_ROOTS": str(media["photo"].parent),
        "PREANNOTATE_LEASE_S": "2",
        "PREANNOTATE_HEARTBEAT_S": "0.5",
        "PREANNOTATE_WORKERS": "1",
    }
    items = [{"name": f"long{i}", "slots": [{"url": media["long_video"].as_uri()}]} for i in range(2)]
    first = Server(db_path=db, env=env)
    first.start()
    try:
        with first.client() as c:
            job_id = c.post("/v1/jobs", json={"items": items, "fps": 10}).json()["job_id"]
            deadline = time.monotonic() + 60
            while c.get(f"/v1/jobs/{job_id}").json()["progress"]["frames_done"] == 0:
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.1)
    finally:
        first.kill()
    second = Server(db_path=db, env=env)
    second.start()
    try:
        with second.client() as c:
            job = wait_for_job(c, job_id, timeout_s=180)
            assert job["status"] == "succeeded", job
            coco = c.get(f"/v1/jobs/{job_id}/result").json()
        assert len(coco["images"]) == 2 * 400  # 40 s at 10 fps, each item once: nothing lost, nothing doubled
    finally:
        second.stop()


def test_unready_server_answers_503(tmp_path: Path) -> None:
    server = Server(db_path=tmp_path / "u.db", env={"PREANNOTATE_MODEL": "onnx:/nonexistent.onnx"})
    server.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        with server.client() as c:
            while True:
                try:
                    ready = c.get("/readyz")
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            while ready.json()["status"] == "loading":  # the load fails fast, but a busy machine is slow to start it
                assert time.monotonic() < deadline
                time.sleep(0.1)
                ready = c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "failed"
            assert "model_not_found" in ready.json()["error"]
            busy = c.get("/v1/models")
            assert busy.status_code == 503
            assert _error_code(busy) == "not_ready"
            assert "Retry-After" in busy.headers
    finally:
        server.stop()
