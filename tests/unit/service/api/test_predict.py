"""``/v1/predict`` on a minimal app with a fake detector: what its errors call an upload (never the server's
scratch path) and what they say a file is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pycocotools import mask as mask_utils  # type: ignore[import-untyped, unused-ignore]  # no stubs
from pydantic import SecretStr

from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes.predict import _upload_name, router
from service.api.state import AppState
from service.config import Settings
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.samples import write_video
from tests.fakes.segmenter import EllipseSegmenter, ellipse_in
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


@pytest.fixture
def masking_client(tmp_path: Path) -> Iterator[TestClient]:
    """``client`` with a segmenter loaded (``PREANNOTATE_SEGMENTER``): every box gets its inscribed ellipse."""
    settings = Settings(api_tokens=SecretStr(TOKEN), db_path=tmp_path / "jobs.db", work_dir=tmp_path)
    batcher = DynamicBatcher(BigBox(), max_batch_size=4, max_wait_ms=0)
    batcher.start()
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(router)
    app.state.preannotate = AppState(
        settings=settings,
        auth=TokenAuth([TOKEN]),
        store=None,  # type: ignore[arg-type]  # /v1/predict never touches the job store
        fetcher=Fetcher(settings.fetch_policy()),
        models=ModelRegistry([LoadedModel(spec="fake:centre", batcher=batcher)], segmenter=EllipseSegmenter()),
    )
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield c
    finally:
        batcher.close()


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
