"""``/v1/predict`` on a minimal app with a fake detector: what its errors call an upload (never the server's
scratch path) and what they say a file is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pycocotools import mask as mask_utils  # type: ignore[import-untyped, unused-ignore]  # no stubs
from pydantic import SecretStr

from models.base import Segmenter
from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes.predict import _upload_name, router
from service.api.state import AppState
from service.config import Settings
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.pipeline.masking import SharedSegmenter
from service.samples import write_video
from tests.fakes.segmenter import BrokenSegmenter, EllipseSegmenter, GatedSegmenter, a_job_holding, ellipse_in
from tests.unit.service.api.test_jobs_segmenter import BigBox
from tests.unit.service.backends.test_ls_ml_backend import CentreBox

TOKEN = "predict-test-token-" + "z" * 20


@pytest.mark.parametrize(
    ("filename", "shown"),
    [
        (None, "upload"),
        ("", "upload"),
        ("photo.png", "photo.png"),
        ("../../etc/photo.png", "photo.png"),
        ("C:\\Users\\me\\photo.png", "photo.png"),
        ("holiday\nphoto\x1b.png", "holidayphoto.png"),
        ("dir/", "upload"),
        ("x" * 300, "x" * 100),
    ],
)
def test_an_upload_is_named_by_the_clients_file_name(filename: str | None, shown: str) -> None:
    assert _upload_name(filename) == shown


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(api_tokens=SecretStr(TOKEN), db_path=tmp_path / "jobs.db", work_dir=tmp_path)
    batcher = DynamicBatcher(CentreBox(), max_batch_size=4, max_wait_ms=0)
    batcher.start()
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(router)
    app.state.preannotate = AppState(
        settings=settings,
        auth=TokenAuth([TOKEN]),
        store=None,  # type: ignore[arg-type]  # /v1/predict never touches the job store
        fetcher=Fetcher(settings.fetch_policy()),
        models=ModelRegistry([LoadedModel(spec="fake:centre", batcher=batcher)]),
    )
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield c
    finally:
        batcher.close()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"just some notes, not a picture\n" * 20, id="text"),
        pytest.param(np.random.default_rng(7).bytes(4096), id="random-bytes"),
    ],
)
def test_a_file_of_no_media_kind_is_unsupported_media_not_a_video(client: TestClient, content: bytes) -> None:
    response = client.post("/v1/predict", files={"file": ("notes.txt", content, "text/plain")})

    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_media"
    assert error["message"].startswith("notes.txt: not a supported image")
    assert "video" not in error["message"]  # sniff's fallback guess is no finding to report


def test_a_real_video_is_still_sent_to_the_jobs_route(client: TestClient, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, duration_s=0.5, width_px=64, height_px=48)

    response = client.post("/v1/predict", files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")})

    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media"
    assert "got video" in response.json()["error"]["message"]


def test_an_image_upload_is_detected(client: TestClient, tmp_path: Path) -> None:
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), np.full((40, 80, 3), 128, np.uint8))

    response = client.post("/v1/predict", files={"file": ("grey.png", image.read_bytes(), "image/png")})

    assert response.status_code == 200, response.text
    assert [d["label"] for d in response.json()["detections"]] == ["face"]


@contextmanager
def masking_app(
    tmp_path: Path, segmenter: Segmenter, *, predict_timeout_s: float = 30.0
) -> Iterator[tuple[TestClient, ModelRegistry]]:
    """The predict route with ``segmenter`` loaded (``PREANNOTATE_SEGMENTER``), and the registry sharing it."""
    settings = Settings(
        api_tokens=SecretStr(TOKEN),
        db_path=tmp_path / "jobs.db",
        work_dir=tmp_path,
        predict_timeout_s=predict_timeout_s,
    )
    batcher = DynamicBatcher(BigBox(), max_batch_size=4, max_wait_ms=0)
    batcher.start()
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(router)
    registry = ModelRegistry([LoadedModel(spec="fake:centre", batcher=batcher)], segmenter=segmenter)
    app.state.preannotate = AppState(
        settings=settings,
        auth=TokenAuth([TOKEN]),
        store=None,  # type: ignore[arg-type]  # /v1/predict never touches the job store
        fetcher=Fetcher(settings.fetch_policy()),
        models=registry,
    )
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield c, registry
    finally:
        batcher.close()


@pytest.fixture
def masking_client(tmp_path: Path) -> Iterator[TestClient]:
    """``client`` with a segmenter loaded: every box gets its inscribed ellipse."""
    with masking_app(tmp_path, EllipseSegmenter()) as (client, _):
        yield client


def test_with_a_segmenter_a_detection_carries_its_mask_as_coco_rle(masking_client: TestClient, tmp_path: Path) -> None:
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), np.full((96, 128, 3), 128, np.uint8))

    response = masking_client.post("/v1/predict", files={"file": ("grey.png", image.read_bytes(), "image/png")})

    assert response.status_code == 200, response.text
    (detection,) = response.json()["detections"]
    assert detection["mask"]["size"] == [96, 128]
    decoded = mask_utils.decode({"size": detection["mask"]["size"], "counts": detection["mask"]["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), ellipse_in(detection["xyxy"], 96, 128))


def test_without_masks_a_detection_has_no_mask_key(client: TestClient, tmp_path: Path) -> None:
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), np.full((40, 80, 3), 128, np.uint8))

    response = client.post("/v1/predict", files={"file": ("grey.png", image.read_bytes(), "image/png")})

    assert response.status_code == 200, response.text
    assert [set(d) for d in response.json()["detections"]] == [{"xyxy", "score", "label", "class_id"}]


def test_the_openapi_schema_documents_the_mask(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["MaskRlePublic"]["required"]) == {"size", "counts"}
    assert "mask" in schemas["DetectionPublic"]["properties"]
    assert "mask" not in schemas["DetectionPublic"].get("required", [])


def grey_png(tmp_path: Path) -> bytes:
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), np.full((96, 128, 3), 128, np.uint8))
    return image.read_bytes()


def test_requests_wait_for_a_segmenter_busy_with_a_job_no_longer_than_their_deadline(tmp_path: Path) -> None:
    """Two requests behind a job's batch: one waits for the model in the segmenter's thread, the other for that
    thread; each gives up at its deadline."""
    gated = GatedSegmenter()
    body = grey_png(tmp_path)
    with (
        masking_app(tmp_path, gated, predict_timeout_s=0.5) as (client, registry),
        a_job_holding(gated, registry.segmenter),
        ThreadPoolExecutor(2) as pool,
    ):
        started = time.monotonic()
        answers = [
            pool.submit(client.post, "/v1/predict", files={"file": ("grey.png", body, "image/png")}) for _ in range(2)
        ]
        responses = [answer.result(timeout=10) for answer in answers]
        elapsed_s = time.monotonic() - started

    for response in responses:
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "deadline_exceeded"
        assert "segmenter ellipse was busy" in response.json()["error"]["message"]
    assert elapsed_s < 3.0  # not when the job's batch let go (5 s)


def test_requests_queued_for_the_segmenter_wait_on_the_loop_not_on_threads(tmp_path: Path) -> None:
    """Behind a job's batch, one request waits in a thread of the segmenter's own; the others wait on its limiter
    without a thread, and all are answered once the model is free."""
    gated = GatedSegmenter()
    body = grey_png(tmp_path)
    with masking_app(tmp_path, gated) as (client, registry), a_job_holding(gated, registry.segmenter):
        shared = registry.segmenter
        assert isinstance(shared, SharedSegmenter)

        def predict() -> int:
            return client.post("/v1/predict", files={"file": ("grey.png", body, "image/png")}).status_code

        with ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(predict) for _ in range(3)]
            deadline = time.monotonic() + 5
            while shared.limiter.statistics().tasks_waiting < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            queued = shared.limiter.statistics()
            gated.release.set()
            statuses = [answer.result(timeout=10) for answer in answers]

    assert (queued.borrowed_tokens, queued.tasks_waiting) == (1, 2)
    assert statuses == [200, 200, 200]


def test_a_segmenter_failure_is_an_internal_error_without_its_message(tmp_path: Path) -> None:
    with masking_app(tmp_path, BrokenSegmenter()) as (client, _):
        response = client.post("/v1/predict", files={"file": ("grey.png", grey_png(tmp_path), "image/png")})

    assert response.status_code == 500, response.text
    assert response.json()["error"] == {
        "code": "internal",
        "message": "segmenter ellipse failed; see the server log",
        "retryable": True,
    }
