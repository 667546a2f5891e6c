"""Item previews from a real `preannotate serve` (uvicorn, workers, the built-in face model): a job of a photo and
a short video by HTTP URL, then its previews, contact sheet and frames listing, and their errors."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import skimage.data
import supervision as sv
from numpy.typing import NDArray

from service.pipeline.media import SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from tests.integration.servers import OTHER_TOKEN, MediaServer, Server, running, wait_for_job
from tests.media import write_astronaut_media


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_astronaut_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def media_server(media: Path) -> Iterator[MediaServer]:
    with MediaServer(media) as server:
        yield server


@pytest.fixture(scope="module")
def server(media_server: MediaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(
        tmp_path_factory.mktemp("db") / "jobs.db",
        PREANNOTATE_FETCH_ALLOWED_HOSTS=f"127.0.0.1:{media_server.port}",
        PREANNOTATE_PREVIEW_CACHE_MB="0",  # nothing kept: media deleted upstream are gone for previews too
        PREANNOTATE_PREVIEW_SHEET_TILES="4",
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def job_id(client: httpx.Client, media_server: MediaServer) -> str:
    body = {
        "items": [
            {"name": "photo", "slots": [{"url": f"{media_server.url}/astronaut.png?sig=s3cr3t"}]},
            {"name": "pan", "slots": [{"name": "cam", "url": f"{media_server.url}/pan.mp4"}]},
        ],
        "fps": 5,
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = response.json()["job_id"]
    assert wait_for_job(client, job)["status"] == "succeeded"
    return str(job)


def jpeg(response: httpx.Response) -> NDArray[np.uint8]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image[:, :, ::-1], np.uint8)


def coco_boxes(client: httpx.Client, job_id: str, position: int) -> list[tuple[int, list[float]]]:
    """(COCO image id, xywh) of an item's stored detections, as the job's result gives them."""
    page = client.get(f"/v1/jobs/{job_id}/items", params={"format": "coco", "limit": 5}).json()
    result = page["items"][position]["result"]
    return [(a["image_id"], a["bbox"]) for a in result["annotations"]]


def test_the_photos_preview_has_the_face_box_drawn(client: httpx.Client, job_id: str) -> None:
    ((_, (x, y, _, h)),) = coco_boxes(client, job_id, 0)  # the astronaut's one face

    image = jpeg(client.get(f"/v1/jobs/{job_id}/items/0/preview")).astype(int)
    original = skimage.data.astronaut().astype(int)

    assert image.shape == original.shape
    colour = np.array(sv.ColorPalette.DEFAULT.by_idx(0).as_rgb())  # the face class, index 0
    x1, y2 = round(x), round(y + h)
    left_edge = image[round(y) + 30 : y2 - 5, x1 - 1 : x1 + 2].reshape(-1, 3)
    assert np.abs(left_edge - colour).max(axis=1).min() < 30  # the line is there, in the class colour
    away = (slice(0, 60), slice(400, 512))  # far from the face: the photo itself
    assert np.abs(image[away] - original[away]).mean() < 4.0


def test_a_video_frames_preview_is_that_frame(client: httpx.Client, job_id: str, media: Path) -> None:
    listing = client.get(f"/v1/jobs/{job_id}/items/1/frames").json()
    (slot,) = listing["slots"]
    indices = [f["frame_index"] for f in slot["frames"]]
    assert (slot["name"], slot["media"], indices) == ("cam", "video", [0, 5, 10, 15, 20, 25, 30, 35, 40, 45])
    reader = open_slot(
        "pan", SlotSpec("cam", (media / "pan.mp4",)), SamplingOptions(frame_indices=(20, 45)), MediaLimits()
    )
    try:
        direct = {f.info.frame_index: f.image.astype(int) for f in reader}
    finally:
        reader.close()

    shown = jpeg(client.get(f"/v1/jobs/{job_id}/items/1/preview", params={"slot": "cam", "frame": 20})).astype(int)

    # pixels away from any drawn box: the frame's own, and not another frame's
    mask = np.ones(shown.shape[:2], bool)
    for _, (x, y, w, h) in coco_boxes(client, job_id, 1):
        mask[max(0, round(y) - 40) : round(y + h) + 8, max(0, round(x) - 8) : round(x + w) + 8] = False
    assert mask.mean() > 0.3
    assert np.abs(shown - direct[20])[mask].mean() < 5.0
    assert np.abs(shown - direct[45])[mask].mean() > 15.0


def test_the_contact_sheet_is_a_grid_of_the_slots_frames(client: httpx.Client, job_id: str) -> None:
    sheet = jpeg(client.get(f"/v1/jobs/{job_id}/items/1/sheet"))

    # 4 tiles (PREANNOTATE_PREVIEW_SHEET_TILES) of 320 x 240: 2 x 2, 18 px captions, 4 px gaps
    assert sheet.shape == (4 + 2 * (240 + 18 + 4), 4 + 2 * (320 + 4), 3)


def test_unknown_parts_foreign_tenants_and_no_token(server: Server, client: httpx.Client, job_id: str) -> None:
    base = f"/v1/jobs/{job_id}/items"
    cases = {
        f"{base}/2/preview": (404, "item_not_found"),
        f"{base}/1/preview?slot=left": (404, "slot_not_found"),
        f"{base}/1/preview?frame=3": (404, "frame_not_found"),
    }
    for path, expected in cases.items():
        response = client.get(path)
        assert (response.status_code, response.json()["error"]["code"]) == expected, path
    with server.client(token=OTHER_TOKEN) as other:
        assert other.get(f"{base}/0/preview").json()["error"]["code"] == "job_not_found"
    with server.client(token=None) as anonymous:
        assert anonymous.get(f"{base}/0/sheet").status_code == 401


def test_media_deleted_after_the_job_is_a_clear_502(
    client: httpx.Client, media_server: MediaServer, media: Path, tmp_path: Path
) -> None:
    body = {"items": [{"name": "copy", "slots": [{"url": f"{media_server.url}/copy.png"}]}]}
    shutil.copy(media / "astronaut.png", media / "copy.png")
    job = client.post("/v1/jobs", json=body).json()["job_id"]
    assert wait_for_job(client, job)["status"] == "succeeded"
    (media / "copy.png").unlink()

    response = client.get(f"/v1/jobs/{job}/items/0/preview")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "media_unreachable"
    assert "copy.png" in response.json()["error"]["message"]
