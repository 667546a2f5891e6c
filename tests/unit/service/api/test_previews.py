"""The preview routes on the real FastAPI routers, a real SQLite store and media served over HTTP on 127.0.0.1:
stored predictions drawn on the very frame they were made on, contact sheets, the frames listing, every error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import supervision as sv
from fastapi import FastAPI
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from pydantic import SecretStr

from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes import jobs as jobs_routes
from service.api.routes import previews as preview_routes
from service.api.state import AppState
from service.config import Settings
from service.jobs.previews import PreviewService
from service.jobs.runner import display_source
from service.pipeline.fetch import FetchedFile, Fetcher
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.media import SlotSpec, open_slot
from service.pipeline.options import MediaLimits, SamplingOptions
from service.pipeline.predictions import ItemPredictions, item_predictions_to_json
from service.queue.sqlite_store import SqliteJobStore
from service.samples import write_video
from service.spec.requests import ItemIn, SlotIn
from tests.builders import make_detections, make_result
from tests.integration.servers import MediaServer
from tests.unit.service.queue.store_contract import spec

TOKEN = "preview-test-token-" + "p" * 24
OTHER_TOKEN = "preview-other-token-" + "o" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLASSES = ("person", "car")
GREY = 128
BOX = (40.0, 30.0, 150.0, 110.0)  # on the 200 x 160 image
VIDEO_FRAMES = (0, 15, 30, 45)  # stored (sampled) frames of the 2 s, 30 fps clip


@dataclass
class PreviewApp:
    client: TestClient
    store: SqliteJobStore
    media: MediaServer
    state: AppState

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params, headers=AUTH)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    cv2.imwrite(str(root / "grey.png"), np.full((160, 200, 3), GREY, np.uint8))
    write_video(root / "clip.mp4", duration_s=2.0, fps=30, gop=10, threads=1)
    return root


def make_app(tmp_path: Path, media_dir: Path, **settings: Any) -> Iterator[PreviewApp]:
    with MediaServer(media_dir) as media:
        full = Settings(
            api_tokens=SecretStr(f"{TOKEN},{OTHER_TOKEN}"),
            db_path=tmp_path / "jobs.db",
            work_dir=tmp_path,
            fetch_allowed_hosts=[f"127.0.0.1:{media.port}"],
            **settings,
        )
        store = SqliteJobStore(full.db_path, max_attempts=full.max_attempts)
        app = FastAPI()
        register_exception_handlers(app)
        app.include_router(jobs_routes.router)
        app.include_router(preview_routes.router)
        state = AppState(
            settings=full, auth=TokenAuth((TOKEN, OTHER_TOKEN)), store=store, fetcher=Fetcher(full.fetch_policy())
        )
        app.state.preannotate = state
        try:
            with TestClient(app) as client:
                yield PreviewApp(client, store, media, state)
        finally:
            if state.previews is not None:
                state.previews.close()
            store.close()


@pytest.fixture
def app(tmp_path: Path, media_dir: Path) -> Iterator[PreviewApp]:
    yield from make_app(tmp_path, media_dir)


def image_item(app: PreviewApp, name: str = "grey") -> tuple[ItemIn, ItemPredictions]:
    url = f"{app.media.url}/grey.png?X-Signature=secret"  # the query string is fetched, never stored in results
    frame = make_result(
        make_detections([BOX], [0.87], [1]),
        item=name,
        source=display_source(url),
        width=200,
        height=160,
    )
    meta = SlotMeta(name, "0", MediaKind.IMAGE, (display_source(url),), 200, 160, None, 1, 1, None)
    return ItemIn.model_validate({"name": name, "slots": [{"url": url}]}), ItemPredictions(name, (meta,), (frame,))


def video_item(app: PreviewApp, name: str = "clip", slot: str = "cam") -> tuple[ItemIn, ItemPredictions]:
    url = f"{app.media.url}/clip.mp4"
    frames = tuple(
        make_result(
            make_detections(),
            item=name,
            slot=slot,
            source=display_source(url),
            media=MediaKind.VIDEO,
            frame_index=i,
            timestamp_s=i / 30,
            width=320,
            height=240,
        )
        for i in VIDEO_FRAMES
    )
    meta = SlotMeta(name, slot, MediaKind.VIDEO, (url,), 320, 240, 30.0, 60, len(frames), 2.0)
    item = ItemIn.model_validate({"name": name, "slots": [{"name": slot, "url": url}]})
    return item, ItemPredictions(name, (meta,), frames)


def submit(app: PreviewApp, *items: tuple[ItemIn, ItemPredictions], finish: int | None = None) -> str:
    """A job of these items, the first ``finish`` (default: all) completed with their predictions."""
    job, _ = app.store.create_job(
        tenant=TokenAuth([TOKEN]).tenant_for(TOKEN),
        idem_key=f"k-{len(items)}-{finish}",
        spec=spec().pinned("v1", CLASSES),
        items=[item for item, _ in items],
    )
    leases = app.store.lease("w", max_items=100, lease_s=60)
    for lease, (_, predictions) in list(zip(leases, items, strict=True))[: len(items) if finish is None else finish]:
        assert app.store.complete("w", lease.item_id, item_predictions_to_json(predictions))
    return job.id


def jpeg(response: httpx.Response) -> NDArray[np.uint8]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image[:, :, ::-1], np.uint8)  # RGB


def decoded_frame(path: Path, index: int) -> NDArray[np.uint8]:
    reader = open_slot("clip", SlotSpec("0", (path,)), SamplingOptions(frame_indices=(index,)), MediaLimits())
    try:
        (frame,) = list(reader)
    finally:
        reader.close()
    return np.asarray(frame.image, np.uint8)


def class_colour_of(offset: NDArray[np.floating[Any]]) -> int:
    """The class whose palette colour (as an offset from the grey picture) points the way ``offset`` does."""
    palette = [np.array(sv.ColorPalette.DEFAULT.by_idx(i).as_rgb(), float) - GREY for i in range(len(CLASSES))]
    cosines = [float(offset @ c / (np.linalg.norm(offset) * np.linalg.norm(c))) for c in palette]
    return int(np.argmax(cosines))


def error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(response.json()["error"]["code"])


# -- pictures ------------------------------------------------------------------------------------------------------


def test_an_images_preview_has_the_stored_box_drawn_in_its_class_colour(app: PreviewApp) -> None:
    job_id = submit(app, image_item(app))

    response = app.get(f"/v1/jobs/{job_id}/items/0/preview")

    image = jpeg(response).astype(int)
    assert image.shape == (160, 200, 3)
    x1, y1, x2, y2 = (round(v) for v in BOX)
    rows = slice(y1 + 25, y2 - 5)  # below the label
    for column in (x1, x2):
        edge = image[rows, column - 3 : column + 4] - GREY  # a thin line, smeared by JPEG: its strongest column
        strongest = edge[:, int(np.abs(edge).sum(axis=(0, 2)).argmax())].mean(axis=0)
        assert np.abs(strongest).max() > 50, strongest
        assert class_colour_of(strongest) == 1  # "car", drawn in its class colour
    assert np.abs(image[y1 + 30 : y2 - 10, x1 + 10 : x2 - 10] - GREY).max() < 12  # inside: the picture
    assert np.abs(image[:, x2 + 10 :] - GREY).max() < 12  # outside: the picture
    assert response.headers["cache-control"].startswith("private, max-age=")
    assert app.get(f"/v1/jobs/{job_id}/items/0/preview", frame=0).content == response.content
    unchanged = app.client.get(
        f"/v1/jobs/{job_id}/items/0/preview", headers={**AUTH, "If-None-Match": response.headers["etag"]}
    )
    assert (unchanged.status_code, unchanged.content) == (304, b"")


def test_a_videos_preview_is_the_stored_frame_decoded_again(app: PreviewApp, media_dir: Path) -> None:
    job_id = submit(app, video_item(app))

    shown = jpeg(app.get(f"/v1/jobs/{job_id}/items/0/preview", slot="cam", frame=30)).astype(int)

    def difference(index: int) -> float:
        return float(np.abs(shown - decoded_frame(media_dir / "clip.mp4", index).astype(int)).mean())

    assert shown.shape == (240, 320, 3)
    assert difference(30) < 6.0  # JPEG's loss on a noisy frame only
    assert difference(30) * 3 < min(difference(15), difference(45))
    first = jpeg(app.get(f"/v1/jobs/{job_id}/items/0/preview")).astype(int)  # default: the first slot's first frame
    assert float(np.abs(first - decoded_frame(media_dir / "clip.mp4", 0).astype(int)).mean()) < 6.0


def test_paging_through_a_videos_frames_fetches_it_once(app: PreviewApp) -> None:
    job_id = submit(app, video_item(app))
    app.media.hits.clear()

    for index in VIDEO_FRAMES:
        jpeg(app.get(f"/v1/jobs/{job_id}/items/0/preview", frame=index))

    assert app.media.hits == ["/clip.mp4"]


def test_a_contact_sheet_shows_the_slots_frames_in_a_grid(tmp_path: Path, media_dir: Path) -> None:
    for app in make_app(tmp_path, media_dir, preview_sheet_tiles=2):
        job_id = submit(app, video_item(app))

        sheet = jpeg(app.get(f"/v1/jobs/{job_id}/items/0/sheet"))

    # 2 tiles (first and last of 4): one row of two 320 x 240 tiles, 18 px captions, 4 px gaps
    assert sheet.shape == (4 + 240 + 18 + 4, 4 + 2 * (320 + 4), 3)
    first, last = sheet[4 : 4 + 240, 4 : 4 + 320].astype(int), sheet[4 : 4 + 240, 328 : 328 + 320].astype(int)
    frame_0, frame_45 = (decoded_frame(media_dir / "clip.mp4", i).astype(int) for i in (0, 45))
    assert float(np.abs(first - frame_0).mean()) < 6.0 < float(np.abs(first - frame_45).mean())
    assert float(np.abs(last - frame_45).mean()) < 6.0 < float(np.abs(last - frame_0).mean())


def test_the_frames_listing_names_what_can_be_previewed(app: PreviewApp) -> None:
    job_id = submit(app, image_item(app), video_item(app))

    listing = app.get(f"/v1/jobs/{job_id}/items/1/frames")

    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert (body["job_id"], body["position"], body["name"]) == (job_id, 1, "clip")
    (slot,) = body["slots"]
    assert (slot["name"], slot["media"]) == ("cam", "video")
    assert [(f["frame_index"], f["timestamp_s"], f["detections"]) for f in slot["frames"]] == [
        (i, pytest.approx(i / 30), 0) for i in VIDEO_FRAMES
    ]
    image = app.get(f"/v1/jobs/{job_id}/items/0/frames").json()["slots"][0]["frames"]
    assert image == [{"frame_index": 0, "timestamp_s": None, "width": 200, "height": 160, "detections": 1}]


def test_the_frames_listing_carries_the_warnings_the_run_stored(app: PreviewApp) -> None:
    # an item that succeeded with what decoded: its stored result says what did not
    item, predictions = video_item(app)
    job, _ = app.store.create_job(
        tenant=TokenAuth([TOKEN]).tenant_for(TOKEN),
        idem_key="k-warned",
        spec=spec().pinned("v1", CLASSES),
        items=[item],
    )
    (lease,) = app.store.lease("w", max_items=1, lease_s=60)
    warning = {"code": "corrupt_media", "message": "clip.mp4: 3 of 10 sampled frames could not be decoded"}
    assert app.store.complete("w", lease.item_id, {**item_predictions_to_json(predictions), "warnings": [warning]})

    body = app.get(f"/v1/jobs/{job.id}/items/0/frames").json()

    assert body["warnings"] == [warning]
    # and an item without any lists none
    other = submit(app, image_item(app))
    assert app.get(f"/v1/jobs/{other}/items/0/frames").json()["warnings"] == []


# -- errors --------------------------------------------------------------------------------------------------------


def test_unknown_jobs_items_slots_and_frames_are_distinct_404s(app: PreviewApp) -> None:
    job_id = submit(app, video_item(app))
    base = f"/v1/jobs/{job_id}/items"

    assert error(app.get("/v1/jobs/nope/items/0/preview")) == (404, "job_not_found")
    assert error(app.get(f"{base}/1/preview")) == (404, "item_not_found")
    assert error(app.get(f"{base}/1/frames")) == (404, "item_not_found")
    assert error(app.get(f"{base}/0/preview", slot="left")) == (404, "slot_not_found")
    assert error(app.get(f"{base}/0/sheet", slot="left")) == (404, "slot_not_found")
    assert error(app.get(f"{base}/0/preview", frame=16)) == (404, "frame_not_found")
    assert error(app.get(f"{base}/clip/preview")) == (422, "invalid_argument")  # a position, not a name
    assert error(app.get(f"{base}/-1/preview")) == (422, "invalid_argument")


def test_another_tenant_sees_no_job_and_no_token_is_401(app: PreviewApp) -> None:
    job_id = submit(app, image_item(app))
    other = {"Authorization": f"Bearer {OTHER_TOKEN}"}

    for route in ("preview", "sheet", "frames"):
        assert error(app.client.get(f"/v1/jobs/{job_id}/items/0/{route}", headers=other)) == (404, "job_not_found")
        assert error(app.client.get(f"/v1/jobs/{job_id}/items/0/{route}")) == (401, "unauthorized")


def test_an_item_without_predictions_is_a_409(app: PreviewApp) -> None:
    job_id = submit(app, image_item(app), video_item(app), finish=0)
    lease_ids = [1, 2]  # SQLite item ids, in job order
    app.store.fail("w", lease_ids[0], code="corrupt_media", message="bad", retryable=False, retry_in_s=0)
    app.store.release("w", [lease_ids[1]])

    failed = app.get(f"/v1/jobs/{job_id}/items/0/preview")
    queued = app.get(f"/v1/jobs/{job_id}/items/1/sheet")

    assert error(failed) == (409, "preview_unavailable")
    assert error(queued) == (409, "item_not_finished")
    assert queued.json()["error"]["retryable"] is True


def test_media_gone_since_the_job_is_a_clear_502(tmp_path: Path, media_dir: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    cv2.imwrite(str(gone / "grey.png"), np.full((160, 200, 3), GREY, np.uint8))
    (tmp_path / "app").mkdir()
    for app in make_app(tmp_path / "app", gone):
        job_id = submit(app, image_item(app))
        jpeg(app.get(f"/v1/jobs/{job_id}/items/0/preview"))
        (gone / "grey.png").unlink()
        assert app.state.previews is not None
        app.state.previews.cache.clear()
        app.state.previews.jpegs.clear()

        response = app.get(f"/v1/jobs/{job_id}/items/0/sheet")

    assert error(response) == (502, "media_unreachable")
    message = response.json()["error"]["message"]
    assert "/grey.png" in message
    assert "secret" not in message  # the query string stays out of messages
    assert str(tmp_path) not in message  # so does the cache's directory


def test_the_preview_size_and_deadline_are_settings(tmp_path: Path, media_dir: Path) -> None:
    (tmp_path / "small").mkdir()
    for app in make_app(tmp_path / "small", media_dir, preview_px=100):
        job_id = submit(app, image_item(app))
        assert jpeg(app.get(f"/v1/jobs/{job_id}/items/0/preview")).shape == (80, 100, 3)  # 200 x 160 fit in 100
    (tmp_path / "slow").mkdir()
    for app in make_app(tmp_path / "slow", media_dir, preview_timeout_s=0.001):
        job_id = submit(app, video_item(app))
        late = app.get(f"/v1/jobs/{job_id}/items/0/sheet")
    assert error(late) == (504, "deadline_exceeded")
    assert "PREANNOTATE_PREVIEW_TIMEOUT_S" in late.json()["error"]["message"]


class CountingFetcher(Fetcher):
    """The real fetcher, counting the fetches under way at once (what the concurrency limit bounds)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.fetch_policy())
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def fetch(self, url: str, dest_dir: Path, *, deadline_s: float | None = None) -> FetchedFile:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super().fetch(url, dest_dir, deadline_s=deadline_s)
        finally:
            with self.lock:
                self.running -= 1


def test_previews_past_their_deadline_stop_and_the_concurrency_limit_holds(tmp_path: Path, media_dir: Path) -> None:
    for app in make_app(tmp_path, media_dir, preview_concurrency=1, preview_timeout_s=0.3):
        fetcher = CountingFetcher(app.state.settings)
        app.state.previews = PreviewService(app.state.settings, fetcher=fetcher)
        items = [image_item(app, name=f"grey{n}") for n in range(4)]
        items = [
            (item.model_copy(update={"slots": [SlotIn(url=f"{app.media.url}/grey.png?n={n}")]}), p)
            for n, (item, p) in enumerate(items)
        ]  # four URLs: four fetches, none waiting on another
        job_id = submit(app, *items)
        app.media.delay_s = 2.0  # the media answer long after the deadline

        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            paths = [f"/v1/jobs/{job_id}/items/{n}/preview" for n in range(4)]
            answers = list(pool.map(app.get, paths))
        took_s = time.monotonic() - started

        assert [error(a) for a in answers] == [(504, "deadline_exceeded")] * 4
        assert took_s < 1.5  # each within its deadline (and a little), never the media's 2 s
        assert fetcher.most == 1  # PREANNOTATE_PREVIEW_CONCURRENCY held, timeouts or not
        assert fetcher.running == 0  # no abandoned fetch still downloading
        app.media.delay_s = 0.0


def test_paging_through_frames_reads_the_stored_result_once_and_a_deleted_job_is_gone(
    app: PreviewApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(app, video_item(app))
    reads: list[int] = []
    real_results = app.store.results

    def results(**kwargs: Any) -> Any:
        reads.append(1)
        return real_results(**kwargs)

    monkeypatch.setattr(app.store, "results", results)
    base = f"/v1/jobs/{job_id}/items/0"

    etag = ""
    for index in VIDEO_FRAMES:
        etag = app.get(f"{base}/preview", frame=index).headers["etag"]
    assert (
        app.client.get(f"{base}/preview", params={"frame": 45}, headers={**AUTH, "If-None-Match": etag}).status_code
        == 304
    )
    assert app.get(f"{base}/frames").status_code == 200
    jpeg(app.get(f"{base}/sheet"))
    assert len(reads) == 1  # the item's whole result parsed once, not per frame

    assert app.store.delete_job(tenant=TokenAuth([TOKEN]).tenant_for(TOKEN), job_id=job_id)
    assert error(app.get(f"{base}/preview", frame=15)) == (404, "job_not_found")  # the parsed copy is no licence
