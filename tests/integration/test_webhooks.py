"""Upload webhooks end to end on a real `preannotate serve`: a duplicate storm, S3 events for files a loopback
"MinIO" serves, the generic HMAC webhook, a V7 stage delivery into the V7 fake, and Label Studio's own
TASKS_CREATED deliveries from a real Label Studio (plus the reconciliation sweep) with exactly one
prediction per task."""

from __future__ import annotations

import http.server
import json
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import skimage.data

from service.intake.signatures import sign
from tests.fakes.http import serving
from tests.fakes.v7_server import FakeV7, Item
from tests.integration.label_studio import LabelStudio, running_label_studio
from tests.integration.servers import MediaServer, Server, running, wait_for_job

S3_SECRET = "CANARY-minio-auth-token-" + "m" * 16
HMAC_SECRET = "CANARY-generic-hmac-" + "h" * 16
V7_SECRET = "CANARY-v7-stage-auth-" + "v" * 16
V7_KEY = "CANARY-v7-api-key-" + "k" * 16
LS_SECRET = "CANARY-ls-webhook-secret-" + "l" * 16
STORM_OBJECTS = 50
STORM_DELIVERIES = 3
IMAGE_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="Face"/></RectangleLabels>
</View>"""


def require_webhooks(server: Server, hook: str) -> None:
    """A configured webhook answers an unauthenticated POST with 401; 404 would mean it is not wired."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        status = client.post(f"/v1/webhooks/{hook}", content=b"{}").status_code
    assert status == 401, f"/v1/webhooks/{hook} answered {status}: not wired into the app or its settings"


def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": "application/json", **headers}, timeout=30)


def signed(body: bytes, delivery: str) -> dict[str, str]:
    ts = int(time.time())
    return {
        "X-Preannotate-Timestamp": str(ts),
        "X-Preannotate-Signature": sign(HMAC_SECRET, ts, body),
        "X-Preannotate-Delivery": delivery,
    }


def wait_all(client: httpx.Client, job_ids: set[str], timeout_s: float = 240.0) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    return {job_id: wait_for_job(client, job_id, max(1.0, deadline - time.monotonic())) for job_id in sorted(job_ids)}


# -- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A "MinIO" tree: bucket ``uploads`` with STORM_OBJECTS small images under ``cams/`` (keys with spaces)."""
    root = tmp_path_factory.mktemp("minio")
    cams = root / "uploads" / "cams" / "front door"
    cams.mkdir(parents=True)
    face = cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR), (128, 128))
    for n in range(STORM_OBJECTS):
        cv2.imwrite(str(cams / f"img {n}.png"), np.roll(face, n, axis=1))
    cv2.imwrite(str(root / "astronaut.png"), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="module")
def minio(media_root: Path) -> Iterator[MediaServer]:
    with MediaServer(media_root) as server:
        yield server


@pytest.fixture(scope="module")
def v7() -> Iterator[FakeV7]:
    app = FakeV7(api_key=V7_KEY, team="acme", dataset_slug="faces", dataset_id=7)
    app.items["item-1"] = Item(
        id="item-1",
        name="astronaut.png",
        path="/",
        slots=[{"slot_name": "0", "file_name": "astronaut.png", "type": "image"}],
        layout=None,
        status="new",
    )
    with serving(app):
        yield app
    assert app.errors == [], app.errors


@pytest.fixture(scope="module")
def server(minio: MediaServer, v7: FakeV7, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    rules = [{"bucket": "uploads", "prefix": "cams/"}]
    with running(
        tmp_path_factory.mktemp("webhooks") / "jobs.db",
        PREANNOTATE_FETCH_ALLOWED_HOSTS=f"127.0.0.1:{minio.port}",
        PREANNOTATE_WEBHOOK_S3_SECRETS=S3_SECRET,
        PREANNOTATE_WEBHOOK_S3_RULES=json.dumps(rules),
        PREANNOTATE_WEBHOOK_S3_ENDPOINT=minio.url,
        PREANNOTATE_WEBHOOK_GENERIC_SECRETS=f"retired-secret,{HMAC_SECRET}",
        PREANNOTATE_WEBHOOK_V7_SECRETS=V7_SECRET,
        PREANNOTATE_V7_API_KEY=V7_KEY,
        PREANNOTATE_V7_TEAM_SLUG="acme",
        PREANNOTATE_V7_DATASET_SLUG="faces",
        PREANNOTATE_V7_DATASET_ID="7",
        PREANNOTATE_V7_BASE_URL=f"{v7.base_url}/api",
    ) as srv:
        require_webhooks(srv, "generic")
        yield srv
        log = srv.log()
    for secret in (S3_SECRET, HMAC_SECRET, V7_SECRET, V7_KEY):  # reliability.md §3.7
        assert secret not in log


def s3_event(key: str, sequencer: str) -> bytes:
    """A MinIO ObjectCreated delivery (key URL-encoded with '+' for spaces, as MinIO and S3 send it)."""
    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "bucket": {"name": "uploads"},
            "object": {"key": key.replace(" ", "+"), "size": 1, "sequencer": sequencer, "contentType": "image/png"},
        },
    }
    return json.dumps({"EventName": "s3:ObjectCreated:Put", "Key": f"uploads/{key}", "Records": [record]}).encode()


# -- S3: the duplicate storm -------------------------------------------------------------------------------------


def test_a_duplicate_storm_of_s3_events_makes_one_job_per_object(server: Server, minio: MediaServer) -> None:
    """50 objects x 3 deliveries, 50 at a time: exactly 50 jobs, each object fetched and run once."""
    deliveries = [
        (n, s3_event(f"cams/front door/img {n}.png", f"{n:016X}")) for n in range(STORM_OBJECTS)
    ] * STORM_DELIVERIES
    headers = {"Authorization": S3_SECRET, "Content-Type": "application/json"}

    def deliver(delivery: tuple[int, bytes]) -> tuple[int, float, dict[str, Any]]:
        started = time.perf_counter()
        response = sender.post("/v1/webhooks/s3", content=delivery[1], headers=headers)
        return response.status_code, time.perf_counter() - started, response.json()

    # One keep-alive client, as MinIO holds its connection to a webhook target.
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    with (
        httpx.Client(base_url=server.url, timeout=30, limits=limits) as sender,
        ThreadPoolExecutor(max_workers=50) as pool,
    ):
        answers = list(pool.map(deliver, deliveries))
    assert {status for status, _, _ in answers} <= {200, 202}, answers[:3]
    jobs = [job for _, _, body in answers for job in body["jobs"]]
    assert len(jobs) == STORM_OBJECTS * STORM_DELIVERIES
    assert sum(job["created"] for job in jobs) == STORM_OBJECTS
    job_ids = {job["job_id"] for job in jobs}
    assert len(job_ids) == STORM_OBJECTS
    latencies = sorted(seconds for _, seconds, _ in answers)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    p50 = statistics.median(latencies)
    print(f"s3 storm: {len(answers)} deliveries, ack p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    # A bound against regressions, not the SLO: on a 2-core CI box the 50 client threads and the workers' inference
    # share the CPU with the API (measured there: p50 ~0.3 s, p99 ~1-3 s, the same as POST /v1/jobs).
    assert p99 < 10.0

    with server.client() as client:
        finished = wait_all(client, job_ids)
    assert all(job["status"] == "succeeded" for job in finished.values()), list(finished.values())[:3]
    fetched = [hit for hit in minio.hits if hit.startswith("/uploads/cams/")]
    assert len(fetched) == STORM_OBJECTS  # each object downloaded once: no duplicate work either
    assert "/uploads/cams/front%20door/img%200.png" in fetched


def test_s3_events_that_make_no_jobs(server: Server) -> None:
    url = f"{server.url}/v1/webhooks/s3"
    unrouted = s3_event("elsewhere/a.png", "01")
    answer = post(url, unrouted, {"Authorization": f"Bearer {S3_SECRET}"})
    assert answer.status_code == 202
    assert (answer.json()["jobs"], answer.json()["ignored"]) == ([], 1)
    removed = s3_event("cams/a.png", "02").replace(b"ObjectCreated", b"ObjectRemoved")
    assert post(url, removed, {"Authorization": S3_SECRET}).json()["ignored"] == 1
    assert post(url, unrouted, {"Authorization": "Bearer nope"}).status_code == 401
    assert post(url, b"x" * (2 * 1024**2), {"Authorization": S3_SECRET}).status_code == 413


# -- generic -----------------------------------------------------------------------------------------------------


def test_the_generic_webhook_end_to_end(server: Server, minio: MediaServer) -> None:
    body = json.dumps(
        {"items": [{"name": "astronaut", "slots": [{"url": f"{minio.url}/astronaut.png"}]}], "threshold": 0.4}
    ).encode()
    url = f"{server.url}/v1/webhooks/generic"
    first = post(url, body, signed(body, "delivery-1"))
    assert first.status_code == 202, first.text
    (job,) = first.json()["jobs"]
    replay = post(url, body, signed(body, "delivery-1"))
    assert replay.status_code == 200
    assert replay.json()["jobs"][0]["job_id"] == job["job_id"]
    stale = signed(body, "delivery-2") | {"X-Preannotate-Timestamp": str(int(time.time()) - 301)}
    assert post(url, body, stale).status_code == 401
    with server.client() as client:
        assert wait_for_job(client, job["job_id"])["status"] == "succeeded"
        result = client.get(f"/v1/jobs/{job['job_id']}/result").json()
    assert result["annotations"], result


# -- V7 ----------------------------------------------------------------------------------------------------------


def test_a_v7_stage_delivery_imports_once_however_often_it_is_redelivered(
    server: Server, minio: MediaServer, v7: FakeV7
) -> None:
    def delivery(signature: str, annotations: list[Any]) -> bytes:
        return json.dumps(
            {
                "version": "2.0",
                "item": {
                    "name": "astronaut.png",
                    "path": "/",
                    "source_info": {"item_id": "item-1", "team": {"slug": "acme"}},
                    "slots": [
                        {
                            "type": "image",
                            "slot_name": "0",
                            "source_files": [
                                {"file_name": "astronaut.png", "url": f"{minio.url}/astronaut.png?sig={signature}"}
                            ],
                        }
                    ],
                },
                "annotations": annotations,
            }
        ).encode()

    url = f"{server.url}/v1/webhooks/v7"
    assert post(url, delivery("0", []), {"Authorization": "wrong"}).status_code == 401
    first = post(url, delivery("1", []), {"Authorization": V7_SECRET})
    assert first.status_code == 202, first.text
    job_id = first.json()["jobs"][0]["job_id"]
    with server.client() as client:
        assert wait_for_job(client, job_id)["status"] == "succeeded"
    assert v7.item("astronaut.png").imports == ["true"]
    # V7 retries up to 5 times, with fresh presigned URLs, and may send our annotations back.
    redeliveries = [delivery(str(n), v7.item("astronaut.png").annotations) for n in range(2, 7)]
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda body: post(url, body, {"Authorization": f"Bearer {V7_SECRET}"}), redeliveries))
    assert [a.status_code for a in answers] == [200] * 5
    assert {a.json()["jobs"][0]["job_id"] for a in answers} == {job_id}
    time.sleep(1.0)
    assert v7.item("astronaut.png").imports == ["true"]  # one import: no second job, no second prediction
    assert len(v7.item("astronaut.png").annotations) >= 1


# -- Label Studio (real) -----------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """A loopback proxy between Label Studio and our server that keeps each delivery (to replay it)."""

    target: str
    deliveries: list[tuple[bytes, dict[str, str], int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                started = time.perf_counter()
                answer = httpx.post(recorder.target, content=body, headers=headers, timeout=5)
                recorder.deliveries.append((body, headers, answer.status_code, time.perf_counter() - started))
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/hook"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    with running_label_studio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@dataclass
class LsSetup:
    ls: LabelStudio
    server: Server
    hooked: int  # a project with our webhook
    swept: int  # a project without one: only the sweep finds its tasks
    images: list[str]


@pytest.fixture(scope="module")
def ls_setup(ls: LabelStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LsSetup]:
    clips = ls.media_root / "clips"
    clips.mkdir()
    photo = clips / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    for n in range(1, 4):
        shutil.copy(photo, clips / f"astronaut-{n}.png")
    hooked = ls.create_project("webhook", IMAGE_CONFIG)
    swept = ls.create_project("sweep", IMAGE_CONFIG)
    for project in (hooked, swept):
        ls.add_local_storage(project, clips)
    images = [ls.local_file_url(clips / f"astronaut-{n}.png") for n in range(1, 4)]
    with running(
        tmp_path_factory.mktemp("ls-webhooks") / "jobs.db",
        PREANNOTATE_LABEL_STUDIO_URL=ls.url,
        PREANNOTATE_LABEL_STUDIO_API_KEY=ls.token,
        PREANNOTATE_WEBHOOK_LABEL_STUDIO_SECRETS=LS_SECRET,
        PREANNOTATE_LABEL_STUDIO_PROJECTS=f"{hooked},{swept}",
        PREANNOTATE_LABEL_STUDIO_SWEEP_INTERVAL_S="1",
        # Long enough for the webhook's job to push first: the sweep is for what webhooks lost.
        PREANNOTATE_LABEL_STUDIO_SWEEP_MIN_AGE_S="4",
    ) as srv:
        require_webhooks(srv, "label-studio")
        yield LsSetup(ls, srv, hooked, swept, images)


def wait_for_predictions(ls: LabelStudio, tasks: list[int], timeout_s: float = 120.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = [len(ls.predictions(t)) for t in tasks]
        if all(counts):
            return counts
        time.sleep(0.5)
    raise TimeoutError(f"predictions per task after {timeout_s} s: {[len(ls.predictions(t)) for t in tasks]}")


@pytest.mark.label_studio
def test_label_studio_tasks_created_to_predictions_exactly_once(ls_setup: LsSetup) -> None:
    ls, server = ls_setup.ls, ls_setup.server
    recorder = Recorder(f"{server.url}/v1/webhooks/label-studio")
    try:
        hook = {
            "project": ls_setup.hooked,
            "url": recorder.url,
            "send_payload": True,
            "send_for_all_actions": False,
            "headers": {"X-Preannotate-Secret": LS_SECRET},
            "is_active": True,
            "actions": ["TASKS_CREATED", "PROJECT_UPDATED"],
        }
        ls.post("/api/webhooks/", json=hook)
        tasks = ls.import_tasks(ls_setup.hooked, [{"image": image} for image in ls_setup.images])
        # LS delivers inside the import request, synchronously; our answer came back within its 1 s timeout.
        created = [d for d in recorder.deliveries if json.loads(d[0])["action"] == "TASKS_CREATED"]
        assert len(created) == 1
        body, headers, status, seconds = created[0]
        assert status == 202
        assert seconds < 1.0  # LS gives up after 1 s (and never retries)
        assert wait_for_predictions(ls, tasks) == [1, 1, 1]
        answer_ids = _replay(server, body, headers, times=3)
        assert len(answer_ids) == 1  # every replay lands on the delivery's one job
        time.sleep(3.0)  # give a wrongly created job or sweep time to push a second prediction
        assert [len(ls.predictions(t)) for t in tasks] == [1, 1, 1]
        prediction = ls.predictions(tasks[0])[0]
        assert prediction["result"][0]["value"]["rectanglelabels"] == ["Face"]
        assert ls.project(ls_setup.hooked)["model_version"] == prediction["model_version"]
        project_token = json.loads(body)["project"].get("token")
    finally:
        recorder.close()
    log = server.log()
    for secret in (LS_SECRET, ls.token, project_token):
        assert not secret or secret not in log


def _replay(server: Server, body: bytes, headers: dict[str, str], *, times: int) -> set[str]:
    url = f"{server.url}/v1/webhooks/label-studio"
    with ThreadPoolExecutor(max_workers=times) as pool:
        answers = list(pool.map(lambda _: httpx.post(url, content=body, headers=headers, timeout=10), range(times)))
    assert [a.status_code for a in answers] == [200] * times, [a.text for a in answers]
    return {job["job_id"] for a in answers for job in a.json()["jobs"]}


@pytest.mark.label_studio
def test_the_sweep_finds_tasks_no_webhook_announced(ls_setup: LsSetup) -> None:
    ls = ls_setup.ls
    tasks = ls.import_tasks(ls_setup.swept, [{"image": image} for image in ls_setup.images[:2]])
    assert wait_for_predictions(ls, tasks) == [1, 1]
    time.sleep(3.0)  # more sweep rounds: nothing new
    assert [len(ls.predictions(t)) for t in tasks] == [1, 1]
