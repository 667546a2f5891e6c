"""Distributed mode end to end, in real processes: redis-server (AOF), `preannotate serve` that loads no
models, and two `preannotate worker` processes (reliability.md §5 rows 2, 12, 15, at CI size). Every test runs
twice: with results in Redis, and with results in object storage (a real S3-compatible server, moto's server
mode, reached over HTTP as a MinIO would be; issue 13), where Redis must hold keys and never result bytes.

Leases are 2 s with 0.5 s heartbeats, so a killed worker's items come back within about 2 s. Every check
of "exactly once" reads the stored results: one result per item, every sampled frame once, nothing
pending in the stream, nothing dead-lettered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.samples import write_video
from tests.integration.servers import Server, free_port, running, wait_for_job
from tests.redis_server import RedisServer
from tests.s3_server import MotoServer, S3Bucket, boto3_client, client_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SHORT_FRAMES, LONG_FRAMES = 20, 3000  # frames per item at fps=0 (every frame)
# A lease long enough that a loaded CI machine's heartbeats (every 0.5 s) never let it lapse by accident.
LEASE_S, GRACE_S = 4.0, 3.0
# The drain test's grace: far shorter than the long clip takes even on a machine several times faster.
DRAIN_GRACE_S = 1.5


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_video(root / "short.mp4", width_px=96, height_px=64, fps=10, duration_s=SHORT_FRAMES / 10, gop=10)
    write_video(root / "long.mp4", width_px=96, height_px=64, fps=10, duration_s=LONG_FRAMES / 10, gop=10)
    return root


RESULTS_PREFIX = "results/"


@pytest.fixture(scope="module", params=["redis", "s3"], ids=["results-in-redis", "results-in-s3"])
def results_bucket(request: pytest.FixtureRequest) -> S3Bucket | None:
    """None: results in Redis; else the bucket results go to (``PREANNOTATE_RESULTS_URL``)."""
    if request.param == "redis":
        return None
    server: MotoServer = request.getfixturevalue("s3_server")
    client = boto3_client(server.endpoint)
    name = f"pa-distributed-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return S3Bucket(name, server.endpoint, client)


@pytest.fixture(scope="module")
def queue(results_bucket: S3Bucket | None) -> Iterator[RedisServer]:
    """A fresh Redis per results mode: the same job bodies must make new jobs."""
    server = RedisServer(appendonly=True)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def env(queue: RedisServer, media: Path, results_bucket: S3Bucket | None) -> dict[str, str]:
    objects: dict[str, str] = {}
    if results_bucket is not None:
        objects = {
            **client_env(results_bucket.endpoint),
            "PREANNOTATE_RESULTS_URL": f"s3://{results_bucket.name}/{RESULTS_PREFIX}",
        }
    return {
        **objects,
        "PREANNOTATE_QUEUE_URL": queue.url,
        "PREANNOTATE_LOCAL_ROOTS": str(media),
        "PREANNOTATE_LEASE_S": str(LEASE_S),
        "PREANNOTATE_HEARTBEAT_S": "0.5",
        "PREANNOTATE_MODEL_TTL_S": "3",
        "PREANNOTATE_WORKER_GRACE_S": str(GRACE_S),
        "PREANNOTATE_CPU_THREADS": "1",  # four processes share two cores
    }


@pytest.fixture(scope="module")
def api(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(db_path=tmp_path_factory.mktemp("api") / "unused.db", env={**env, "PREANNOTATE_WORKERS": "0"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def db(queue: RedisServer) -> Iterator[redis.Redis]:
    client = queue.client()
    yield client
    client.close()


class Worker:
    """A `preannotate worker` subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path, *, probes: bool = False) -> None:
        self.log_path = log_path
        self.port = free_port() if probes else None
        flags = ["--port", str(self.port)] if self.port else []
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "worker", "-v", *flags],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.tag = f"-{self.process.pid}-"  # in every consumer and worker name it uses

    def wait_ready(self, db: redis.Redis, timeout_s: float = 60.0) -> None:
        _wait(lambda: any(self.tag in w for w in db.zrange("pa:workers", 0, -1)), timeout_s, self.log)

    def probe(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def held(self, db: redis.Redis) -> list[int]:
        """Items leased to this worker's threads right now."""
        return [int(i) for i in db.zrange("pa:leases", 0, -1) if self.tag in (db.hget(f"pa:item:{i}", "owner") or "")]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait(condition: Callable[[], object], timeout_s: float, describe: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"not true after {timeout_s} s\n{describe()}")


@pytest.fixture
def workers(env: dict[str, str], db: redis.Redis, tmp_path: Path) -> Iterator[list[Worker]]:
    started = [
        Worker({**env, "PREANNOTATE_WORKERS": "2"}, tmp_path / f"worker{i}.log", probes=i == 1) for i in range(2)
    ]
    try:
        for worker in started:
            worker.wait_ready(db)
        yield started
    finally:
        for worker in started:
            worker.stop()


def _submit(client: httpx.Client, media: Path, video: str, n: int, tag: str) -> str:
    items = [{"name": f"{tag}-{i}", "slots": [{"url": (media / video).as_uri()}]} for i in range(n)]
    response = client.post("/v1/jobs", json={"items": items, "fps": 0})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def _item_ids(db: redis.Redis, job_id: str) -> list[int]:
    first, n = (int(v) for v in db.hmget(f"pa:job:{job_id}", ["first", "n"]))
    return list(range(first, first + n))


def _assert_stored_once(db: redis.Redis, job_id: str, n: int, bucket: S3Bucket | None) -> None:
    """Each item's result stored once: one object per item and no result bytes in Redis, or one Redis key each."""
    ids = _item_ids(db, job_id)
    if bucket is None:
        assert sum(bool(db.exists(f"pa:result:{i}")) for i in ids) == n
        return
    listed = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix=f"{RESULTS_PREFIX}{job_id}/")
    assert sorted(o["Key"] for o in listed.get("Contents", [])) == sorted(
        f"{RESULTS_PREFIX}{job_id}/{p}.json.gz" for p in range(n)
    )
    assert not any(db.exists(f"pa:result:{i}") for i in ids)
    refs = [db.hget(f"pa:item:{i}", "rkey") for i in ids]
    assert refs == [f"s3://{bucket.name}/{RESULTS_PREFIX}{job_id}/{p}.json.gz" for p in range(n)]


def _assert_exactly_once(
    client: httpx.Client, db: redis.Redis, job_id: str, tag: str, n: int, frames: int, bucket: S3Bucket | None
) -> dict[str, Any]:
    job = wait_for_job(client, job_id, timeout_s=90)
    assert job["status"] == "succeeded", job
    assert job["progress"] == {
        "items_total": n,
        "items_done": n,
        "items_succeeded": n,
        "items_failed": 0,
        "frames_planned": n * frames,
        "frames_done": n * frames,
    }
    coco = client.get(f"/v1/jobs/{job_id}/result", params={"format": "coco"}).json()
    per_item: dict[str, list[int]] = {}
    for image in coco["images"]:
        per_item.setdefault(image["item"], []).append(image["frame_index"])
    assert sorted(per_item) == sorted(f"{tag}-{i}" for i in range(n))
    assert all(sorted(indexes) == list(range(frames)) for indexes in per_item.values())
    _assert_stored_once(db, job_id, n, bucket)
    return job


def _assert_drained(db: redis.Redis) -> None:
    """Nothing queued, leased, pending in the stream or dead-lettered."""
    assert db.scard("pa:active") == 0
    assert db.xpending("pa:items", "workers")["pending"] == 0
    assert db.xlen("pa:dead") == 0


def test_kill_9_worker_mid_job(
    api: Server, workers: list[Worker], db: redis.Redis, media: Path, results_bucket: S3Bucket | None
) -> None:
    victim, survivor = workers
    with api.client() as client:
        jobs = [(_submit(client, media, "short.mp4", 10, f"kill{j}"), f"kill{j}") for j in range(2)]
        _wait(lambda: victim.held(db), 30, victim.log)
        victim.process.kill()
        killed_at = time.monotonic()
        orphans = victim.held(db)  # read after the kill: an item finished just before it is no orphan
        assert orphans, victim.log()

        # Redelivered once the lease lapses (not before), to the surviving worker.
        def reclaimed() -> bool:
            owners = [db.hget(f"pa:item:{i}", "owner") or "" for i in orphans]
            return all(survivor.tag in o or db.hget(f"pa:item:{i}", "state") == "succeeded"
                       for i, o in zip(orphans, owners, strict=True))  # fmt: skip

        _wait(reclaimed, 30, survivor.log)
        assert time.monotonic() - killed_at <= LEASE_S + 3.0  # the lease, then the survivor's next poll

        for job_id, tag in jobs:
            _assert_exactly_once(client, db, job_id, tag, 10, SHORT_FRAMES, results_bucket)
        _assert_drained(db)
    assert {int(db.hget(f"pa:item:{i}", "attempts") or 0) for i in orphans} == {2}
    assert survivor.process.poll() is None
    assert survivor.probe("/healthz").json() == {"status": "ok"}
    assert survivor.probe("/readyz").json() == {"status": "ready", "models": ["builtin:centerface"]}
    metrics = survivor.probe("/metrics").text
    assert 'preannotate_job_items_total{outcome="succeeded"}' in metrics
    # The victim held items of an unfinished job: the survivor finished it, and counted it once.
    assert _sample(metrics, 'preannotate_jobs_finished_total{status="succeeded"}') >= 1
    assert _sample(metrics, 'preannotate_jobs_finished_total{status="failed"}') == 0
    with api.client() as client:
        api_metrics = client.get("/metrics").text
    for text in (metrics, api_metrics):  # the queue's health, read from Redis by either kind of process
        assert _sample(text, "preannotate_queue_dead_letters") == 0
        assert _sample(text, "preannotate_queue_delayed_retries") == 0
        assert _sample(text, "preannotate_queue_lag") == 0


def _sample(text: str, series: str) -> float:
    """The value of one series in a Prometheus text exposition."""
    [value] = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(series + " ")]
    return float(value)


def test_redis_restart_mid_run(
    api: Server,
    workers: list[Worker],
    queue: RedisServer,
    db: redis.Redis,
    media: Path,
    results_bucket: S3Bucket | None,
) -> None:
    with api.client() as client:
        job_id = _submit(client, media, "short.mp4", 20, "restart")
        _wait(lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"]["items_succeeded"] > 0, 30)

        queue.kill()
        try:
            for method, path, body in [
                ("GET", f"/v1/jobs/{job_id}", None),
                ("POST", "/v1/jobs", {"items": [{"name": "x", "slots": [{"url": (media / "short.mp4").as_uri()}]}]}),
                ("GET", "/readyz", None),
            ]:
                response = client.request(method, path, json=body)
                assert response.status_code == 503, (path, response.text)
                if path != "/readyz":
                    assert response.json()["error"]["code"] == "not_ready"
                    assert response.headers["Retry-After"]
            assert workers[1].probe("/readyz").json()["status"] == "queue_unavailable"
            time.sleep(1.0)  # the workers find the queue gone (and back off)
        finally:
            queue.start()  # same socket; the AOF (fsync always) brings back every write

        _assert_exactly_once(client, db, job_id, "restart", 20, SHORT_FRAMES, results_bucket)
        # Both workers reconnected and still take new work.
        after = _submit(client, media, "short.mp4", 4, "after")
        _assert_exactly_once(client, db, after, "after", 4, SHORT_FRAMES, results_bucket)
        _assert_drained(db)
    assert all(w.process.poll() is None for w in workers)


def test_deleting_a_finished_job_removes_its_results(
    api: Server, workers: list[Worker], db: redis.Redis, media: Path, results_bucket: S3Bucket | None
) -> None:
    with api.client() as client:
        job_id = _submit(client, media, "short.mp4", 3, "delete")
        _assert_exactly_once(client, db, job_id, "delete", 3, SHORT_FRAMES, results_bucket)
        ids = _item_ids(db, job_id)

        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204

        assert client.get(f"/v1/jobs/{job_id}/result").status_code == 404
    assert not any(db.exists(f"pa:item:{i}", f"pa:result:{i}") for i in ids)
    assert not db.exists(f"pa:job:{job_id}")
    if results_bucket is not None:
        listed = results_bucket.client.list_objects_v2(Bucket=results_bucket.name, Prefix=f"{RESULTS_PREFIX}{job_id}/")
        assert listed.get("KeyCount", 0) == 0


def test_sigterm_drains_within_the_grace_period(
    api: Server, env: dict[str, str], db: redis.Redis, media: Path, tmp_path: Path, results_bucket: S3Bucket | None
) -> None:
    one_thread = {**env, "PREANNOTATE_WORKERS": "1", "PREANNOTATE_WORKER_GRACE_S": str(DRAIN_GRACE_S)}
    # Both ready before the job exists, so the holder gets no head start beyond the grace period.
    pair = [Worker(one_thread, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        for worker in pair:
            worker.wait_ready(db)
        with api.client() as client:
            job_id = _submit(client, media, "long.mp4", 1, "drain")
            _wait(lambda: any(w.held(db) for w in pair), 30, lambda: "\n".join(w.log() for w in pair))
            victim = next(w for w in pair if w.held(db))
            (item,) = victim.held(db)

            victim.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert victim.process.wait(timeout=DRAIN_GRACE_S + 5) == 0, victim.log()
            assert time.monotonic() - started <= DRAIN_GRACE_S + 1.5
            assert db.hget(f"pa:item:{item}", "state") != "succeeded"  # too long to finish in the grace period

            _assert_exactly_once(client, db, job_id, "drain", 1, LONG_FRAMES, results_bucket)
            _assert_drained(db)
        assert db.hget(f"pa:item:{item}", "attempts") == "1"  # handed back: the attempt was not counted
        assert not any(victim.tag in c["name"] for c in db.xinfo_consumers("pa:items", "workers"))
    finally:
        for worker in pair:
            worker.stop()


def _yolo_onnx(path: Path) -> Path:
    """A YOLO export whose classes are person, car and dog: one person box, whatever the image."""
    import numpy as np

    from tests.unit.models import onnx_graphs

    # (4 + nc, N): cx, cy, w, h, then one score per class.
    candidates = np.array([[320.0], [320.0], [200.0], [300.0], [0.9], [0.01], [0.01]], np.float32)
    model = onnx_graphs.yolo_model(candidates, metadata={"names": "{0: 'person', 1: 'car', 2: 'dog'}"})
    return onnx_graphs.save(model, path)


def test_cold_start_jobs_queue_with_no_worker_then_the_first_worker_runs_them(
    env: dict[str, str], media: Path, tmp_path: Path
) -> None:
    """A fresh install with workers scaled to zero: nothing is published, and only a queued job wakes a worker
    (KEDA scales on the lag). Checks that need the model's classes move to the worker."""
    yolo = f"onnx:{_yolo_onnx(tmp_path / 'yolo.onnx')}"
    fresh = RedisServer()
    fresh.start()
    cold = {**env, "PREANNOTATE_QUEUE_URL": fresh.url}
    # The API is configured with the default model only: the ONNX one is named by spec in the job.
    api = Server(db_path=tmp_path / "unused.db", env={**cold, "PREANNOTATE_WORKERS": "0"})
    worker: Worker | None = None
    try:
        api.start()  # waits for /readyz 200: ready with Redis up and no worker, or k8s never routes a job
        db = fresh.client()
        assert db.zcard("pa:workers") == 0
        with api.client() as client:
            (default,) = client.get("/v1/models").json()
            assert (default["spec"], default["known"], default["version"]) == ("builtin:centerface", False, None)

            url = (media / "short.mp4").as_uri()

            def submit(name: str, **fields: Any) -> str:
                response = client.post("/v1/jobs", json={"items": [{"name": name, "slots": [{"url": url}]}], **fields})
                assert response.status_code == 202, response.text
                return str(response.json()["job_id"])

            on_default = submit("default", fps=0)
            on_spec = submit("spec", fps=0, model=yolo, classes=["person"])
            no_such_class = submit("unicorn", fps=0, model=yolo, classes=["person", "unicorn"])
            unknown = client.post("/v1/jobs", json={"model": "yolo", "items": [{"name": "x", "slots": [{"url": url}]}]})
            assert unknown.status_code == 404, unknown.text  # neither published nor a model spec: refused at once
            assert unknown.json()["error"]["code"] == "model_not_found"
            queued = client.get(f"/v1/jobs/{on_default}").json()
            assert (queued["status"], queued["model_version"]) == ("queued", None)
            assert db.xlen("pa:items") == 3  # the lag KEDA scales on
            # Sync inference needs a model in the API process: a clear 501, not a 503 to wait out.
            predict = client.post("/v1/predict", files={"file": ("a.jpg", b"x", "image/jpeg")})
            assert predict.status_code == 501, predict.text

            worker = Worker({**cold, "PREANNOTATE_WORKERS": "1", "PREANNOTATE_EXTRA_MODELS": yolo}, tmp_path / "w.log")
            for job_id in (on_default, on_spec):
                job = wait_for_job(client, job_id, timeout_s=90)
                assert job["status"] == "succeeded", (job, worker.log())
                assert str(job["model_version"]).startswith("centerface" if job_id == on_default else "yolo")
            coco = client.get(f"/v1/jobs/{on_spec}/result", params={"format": "coco"}).json()
            assert [c["name"] for c in coco["categories"]] == ["person", "car", "dog"]
            assert {a["category_id"] for a in coco["annotations"]} == {coco["categories"][0]["id"]}
            assert len(coco["annotations"]) == SHORT_FRAMES

            failed = wait_for_job(client, no_such_class, timeout_s=30)
            assert failed["status"] == "failed", failed
            (error,) = failed["errors"]
            assert error["code"] == "invalid_argument"  # not retried: every attempt would fail the same way
            assert "unicorn" in error["message"]
            assert db.hget(f"pa:item:{_item_ids(db, no_such_class)[0]}", "attempts") == "1"

            listed = {m["spec"]: m for m in client.get("/v1/models").json()}
            assert listed["builtin:centerface"]["known"] is True
            assert listed[yolo]["classes"] == ["person", "car", "dog"]
        db.close()
    finally:
        if worker is not None:
            worker.stop()
        api.stop()
        fresh.cleanup()


def test_a_job_with_a_segmenter_is_pinned_by_the_api_and_masked_by_a_worker(
    env: dict[str, str], api: Server, media: Path, db: redis.Redis, tmp_path: Path
) -> None:
    """The API pod loads no model: it pins the job to the segmenter it is configured with (spec only); a worker
    running that segmenter takes the job, and every stored box comes back with its mask."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.unit.models.hf_checkpoints import write_tiny_sam

    sam = f"hf:{write_tiny_sam(tmp_path / 'sam')}"
    yolo = f"onnx:{_yolo_onnx(tmp_path / 'yolo.onnx')}"
    worker = Worker(
        {**env, "PREANNOTATE_WORKERS": "1", "PREANNOTATE_EXTRA_MODELS": yolo, "PREANNOTATE_SEGMENTER": sam},
        tmp_path / "w.log",
    )
    try:
        with api.client() as client:
            body = {"items": [{"name": "masked", "slots": [{"url": (media / "short.mp4").as_uri()}]}], "fps": 2}
            refused = client.post("/v1/jobs", json={**body, "model": yolo, "segmenter": sam})
            assert refused.status_code == 404, refused.text  # this API is not configured with that segmenter
            assert refused.json()["error"]["code"] == "model_not_found"
        masked_env = {**env, "PREANNOTATE_WORKERS": "0", "PREANNOTATE_SEGMENTER": sam}
        with running(tmp_path / "unused.db", **masked_env) as masked_api, masked_api.client() as client:
            submitted = client.post("/v1/jobs", json={**body, "model": yolo, "segmenter": sam})
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["job_id"]
            job = wait_for_job(client, job_id, timeout_s=120)
            assert job["status"] == "succeeded", (job, worker.log())
            coco = client.get(f"/v1/jobs/{job_id}/result", params={"format": "coco"}).json()
        annotations = coco["annotations"]
        assert annotations
        assert all(set(a["segmentation"]) == {"size", "counts"} for a in annotations)
        # The API loads no segmenter: the worker pinned the version it runs, for every later worker to match.
        stored = json.loads(db.hget(f"pa:job:{job_id}", "request"))  # type: ignore[arg-type]
        assert stored["segmenter"] == sam
        assert isinstance(stored["segmenter_version"], str)
        assert stored["segmenter_version"]
    finally:
        worker.stop()
