"""V7Backend against a fake Darwin API that checks every request (darwin_v2.md §7, §9) and keeps state; and the
V7 BYOM routes (``/v7/infer``, ``/v7/classes``) against V7's own response schema."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from PIL import Image
from pycocotools import mask as mask_utils  # type: ignore[import-untyped, unused-ignore]  # no stubs

from models.base import Detector, Segmenter
from models.masks import Masks
from models.types import Detections, ModelInfo, RGBImage
from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes import v7_byom
from service.api.state import AppState
from service.backends.retry import BackendError, RetryPolicy
from service.backends.v7 import V7Backend, V7Config, V7Item, V7Slot, darwin_to_import
from service.config import Settings
from service.convert.types import ModelRef
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, TrackBox
from tests.builders import make_detections, make_result, with_tracks
from tests.fakes.http import FakeApp, Request, Response, serving
from tests.fakes.segmenter import BrokenSegmenter, EllipseSegmenter, GatedSegmenter, a_job_holding, ellipse_in
from tests.fakes.v7_server import FakeV7

EXAMPLES = Path(__file__).resolve().parents[3] / "data" / "examples"  # copies of ../shared/reference/examples
API_KEY = "CANARY-v7-key-" + "q" * 24
MODEL = ModelRef(spec="onnx:/m/yolo.onnx", version="v1", class_names=("mass", "calcification"))


def example(name: str) -> dict[str, Any]:
    path = EXAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} is not available")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture
def fake() -> Iterator[FakeV7]:
    app = FakeV7(api_key=API_KEY, team="acme", dataset_slug="mammo-preannotation", dataset_id=7)
    with serving(app):
        yield app
    assert app.errors == [], app.errors


def backend(fake: FakeV7, sleeps: list[float] | None = None, **config: Any) -> V7Backend:
    cfg = V7Config(
        team_slug=fake.team,
        dataset_slug=fake.dataset_slug,
        dataset_id=fake.dataset_id,
        base_url=fake.base_url + "/api",
        storage_slug=fake.storage_slug,
        **config,
    )
    retry = RetryPolicy(sleep=(sleeps if sleeps is not None else []).append, random=lambda: 0.5)
    return V7Backend(cfg, API_KEY, retry=retry)


def two_slot_item(tmp_path: Path) -> V7Item:
    for name in ("L_CC.png", "R_CC.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    return V7Item(
        name="patient_0001_mammo",
        path="/screening/2024",
        tags=("preannotated",),
        slots=(
            V7Slot("0", "L_CC.png", local_path=tmp_path / "L_CC.png", as_frames=False),
            V7Slot("1", "R_CC.png", local_path=tmp_path / "R_CC.png", as_frames=False),
        ),
    )


def predictions() -> ItemPredictions:
    slots = tuple(
        SlotMeta("patient_0001_mammo", s, MediaKind.IMAGE, (f"/d/{s}.png",), 3328, 4096, None, 1, 1) for s in "01"
    )
    frames = (
        make_result(
            make_detections([[1210.5, 1822, 1450.75, 2020.75]], [0.91], [0]), item="patient_0001_mammo", slot="0"
        ),
        make_result(make_detections([[980, 2100.5, 1290, 2376.5]], [0.84], [0]), item="patient_0001_mammo", slot="1"),
    )
    return ItemPredictions("patient_0001_mammo", slots, frames)


# -- registration --------------------------------------------------------------------------------------------------


def test_register_upload_sends_the_documented_body_and_uploads_every_slot(fake: FakeV7, tmp_path: Path) -> None:
    item = two_slot_item(tmp_path)
    with backend(fake) as be:
        ids = be.register_upload([item])
    path, body = fake.bodies[0]
    assert path == "/api/v2/teams/acme/items/register_upload"
    assert body == example("register_upload_two_slots.request.json")
    stored = fake.item("patient_0001_mammo")
    assert ids == {"/screening/2024/patient_0001_mammo": stored.id}
    assert sorted(fake.uploads.values()) == sorted((tmp_path / n).read_bytes() for n in ("L_CC.png", "R_CC.png"))
    assert all(s["confirmed"] for s in stored.slots)
    assert stored.status == "processing"


def test_register_existing_sends_the_documented_body(fake: FakeV7) -> None:
    fake.dataset_slug = "site-walkthroughs"
    video = V7Item(
        name="site_walkthrough.mp4",
        path="/",
        layout={"version": 1, "type": "horizontal", "slots": ["0", "floorplan", "spec"]},
        slots=(
            V7Slot(
                "0",
                "site_walkthrough.mp4",
                "walkthroughs/2024-05/site_walkthrough.mp4",
                type="video",
                fps=2,
                as_frames=False,
            ),
            V7Slot("floorplan", "floorplan_level2.png", "plans/floorplan_level2.png", type="image"),
            V7Slot("spec", "spec_sheet.pdf", "plans/spec_sheet.pdf", type="pdf"),
        ),
    )
    ct = V7Item(
        name="ct_series_001",
        path="/ct",
        slots=(V7Slot("0", "series_001.dcm", "ct/series_001.dcm", type="dicom", extract_views=True),),
    )
    cfg = V7Config("acme", "site-walkthroughs", 7, base_url=fake.base_url + "/api", storage_slug="my-s3-storage")
    with V7Backend(cfg, API_KEY) as be:
        ids = be.register_existing([video, ct])
    assert fake.bodies[0] == (
        "/api/v2/teams/acme/items/register_existing",
        example("register_existing_video_plus_floorplan.request.json"),
    )
    assert set(ids) == {"/site_walkthrough.mp4", "/ct/ct_series_001"}


def test_registering_twice_adopts_the_existing_items(fake: FakeV7, tmp_path: Path) -> None:
    item = two_slot_item(tmp_path)
    with backend(fake) as be:
        first = be.register_upload([item])
        again = be.register_upload([item])
        existing = V7Item("scan.png", (V7Slot("0", "scan.png", "bucket/scan.png"),))
        assert be.register_existing([existing]) == be.register_existing([existing])
    assert first == again
    assert len(fake.items) == 2
    assert len(fake.uploads) == 2  # nothing uploaded the second time


def test_registration_chunks_and_default_layouts(fake: FakeV7) -> None:
    items = [
        V7Item(f"item{i}", tuple(V7Slot(str(s), f"f{s}.png", f"k/{i}/{s}.png") for s in range(i % 3 + 1)))
        for i in range(5)
    ]
    with backend(fake, register_chunk=2) as be:
        ids = be.register_existing(items)
    assert len(ids) == 5
    assert [len(b["items"]) for _, b in fake.bodies] == [2, 2, 1]
    layouts = [i.get("layout") for _, b in fake.bodies for i in b["items"]]
    assert layouts[:3] == [
        None,
        {"version": 1, "type": "horizontal", "slots": ["0", "1"]},
        {"version": 1, "type": "grid", "slots": ["0", "1", "2"]},
    ]


def test_blocked_items_fail_with_the_reason(fake: FakeV7) -> None:
    fake.block["b.png"] = "ITEM_COUNT_LIMIT_EXCEEDED"
    items = [V7Item(n, (V7Slot("0", n, f"k/{n}"),)) for n in ("a.png", "b.png")]
    with backend(fake) as be, pytest.raises(BackendError, match="ITEM_COUNT_LIMIT_EXCEEDED") as info:
        be.register_existing(items)
    assert info.value.retryable is False
    assert "/b.png" in str(info.value)


def test_the_fake_refuses_unknown_storage(fake: FakeV7) -> None:
    with backend(fake) as be:
        fake.storage_slug = "other"
        with pytest.raises(BackendError) as info:
            be.register_existing([V7Item("a.png", (V7Slot("0", "a.png", "k/a.png"),))])
    assert (info.value.status, info.value.retryable) == (400, False)
    assert fake.errors == ["POST /api/v2/teams/acme/items/register_existing: unknown storage_slug"]
    fake.errors.clear()


def test_slots_are_checked_before_sending() -> None:
    with pytest.raises(ValueError, match="unique"):
        V7Item("x", (V7Slot("0", "a.png"), V7Slot("0", "b.png")))
    cfg = V7Config("t", "d", 1, base_url="http://127.0.0.1:9/api")
    with V7Backend(cfg, API_KEY) as be, pytest.raises(BackendError, match="storage_slug"):
        be.register_existing([V7Item("x", (V7Slot("0", "a.png", "k"),))])


# -- classes and import --------------------------------------------------------------------------------------------


def test_push_creates_classes_and_imports_with_overwrite(fake: FakeV7, tmp_path: Path) -> None:
    team_class = fake.add_class("mass", ["bounding_box", "inference"], datasets=[99])  # in the team, not the dataset
    with backend(fake) as be:
        item_id = be.register_upload([two_slot_item(tmp_path)])["/screening/2024/patient_0001_mammo"]
        result = be.push_item(item_id, predictions(), MODEL, path="/screening/2024")
        again = be.push_item(item_id, predictions(), MODEL, path="/screening/2024")
    stored = fake.item("patient_0001_mammo")
    assert (result.imported, again.imported, result.skipped_classes) == (2, 2, {})
    assert stored.imports == ["true", "true"]
    assert len(stored.annotations) == 2  # replaced, not appended
    assert {a["annotation_class_id"] for a in stored.annotations} == {team_class}
    assert fake.classes[0]["datasets"] == [{"id": 99}, {"id": 7}]
    first = stored.annotations[0]
    assert first["context_keys"] == {"slot_names": ["0"]}
    assert first["data"]["bounding_box"] == {"x": 1210.5, "y": 1822.0, "w": 240.25, "h": 198.75}
    assert first["data"]["inference"]["confidence"] == 0.91
    assert len(fake.classes) == 1  # nothing created: the team class was reused
    assert sum(r.path.endswith("/annotation_classes") for r in fake.requests) == 1  # listed once, then cached


def test_missing_classes_are_created_with_their_type(fake: FakeV7) -> None:
    fake.add_class("mass", ["polygon"], datasets=[7])  # same name, other type: a different class
    with backend(fake) as be:
        ids = be.ensure_classes([("bounding_box", "mass"), ("tag", "needs_review")])
        assert be.ensure_classes([("bounding_box", "mass")]) == {
            ("bounding_box", "mass"): ids[("bounding_box", "mass")]
        }
    created = {(c["name"], tuple(c["annotation_types"])) for c in fake.classes[1:]}
    assert created == {("mass", ("bounding_box", "inference")), ("needs_review", ("tag", "inference"))}


def test_video_tracks_import_as_keyframes(fake: FakeV7) -> None:
    item = V7Item("walk.mp4", (V7Slot("0", "walk.mp4", "k/walk.mp4", type="video"),))
    meta = SlotMeta("walk.mp4", "0", MediaKind.VIDEO, ("/d/walk.mp4",), 1920, 1080, 2.0, 6, 6, 3.0)
    boxes = tuple(TrackBox(f, f / 2, (100.0 + 40 * f, 400.0, 320.0 + 40 * f, 580.0), 0.9) for f in (0, 1, 2, 4))
    with backend(fake) as be:
        item_id = be.register_existing([item])["/walk.mp4"]
        tracked = with_tracks(ItemPredictions("walk.mp4", (meta,), ()), [Track(1, "0", 0, boxes)])
        result = be.push_item(item_id, tracked, MODEL)
    assert result.imported == 1
    (annotation,) = fake.item("walk.mp4").annotations
    data = annotation["data"]
    assert list(data["frames"]) == ["0", "1", "2", "4"]
    assert data["segments"] == [[0, 5]]
    assert data["interpolated"] is True
    assert data["frames"]["4"]["bounding_box"] == {"x": 260.0, "y": 400.0, "w": 220.0, "h": 180.0}


def test_import_waits_for_processing_and_spares_reviewed_items(fake: FakeV7) -> None:
    fake.processing_polls = 1
    with backend(fake) as be:
        item_id = be.register_existing([V7Item("a.png", (V7Slot("0", "a.png", "k/a.png"),))])["/a.png"]
        with pytest.raises(BackendError, match="processing") as info:
            be.push(item_id, {"annotations": []})
        assert info.value.retryable is True
        assert be.push(item_id, {"annotations": []}).imported == 0
        fake.items[item_id].status = "review"
        skipped = be.push(item_id, {"annotations": []})
    assert skipped.skipped_reason == "item status review"
    assert fake.items[item_id].imports == ["true"]


def test_large_imports_are_split_after_413(fake: FakeV7) -> None:
    fake.add_class("mass", ["bounding_box"], datasets=[7])
    annotations = [
        {
            "id": f"00000000-0000-0000-0000-{i:012d}",
            "name": "mass",
            "slot_names": ["0"],
            "bounding_box": {"x": i, "y": 0, "w": 1, "h": 1},
        }
        for i in range(10)
    ]
    with backend(fake, import_max_bytes=600) as be:
        item_id = be.register_existing([V7Item("a.png", (V7Slot("0", "a.png", "k/a.png"),))])["/a.png"]
        be.push(item_id, {"annotations": annotations[:2]})
        fake.max_import_bytes = 700
        result = be.push(item_id, {"annotations": annotations})
    stored = fake.items[item_id]
    assert result.requests > 2
    assert stored.imports[0] == "true"
    assert stored.imports[1] == "true"
    assert set(stored.imports[2:]) == {"false"}
    assert sorted(a["data"]["bounding_box"]["x"] for a in stored.annotations) == list(range(10))


def test_unknown_annotation_types_are_counted_not_sent() -> None:
    annotations = [
        {"id": "a", "name": "mass", "slot_names": ["0"], "bounding_box": {"x": 0, "y": 0, "w": 1, "h": 1}},
        {"id": "b", "name": "pt", "slot_names": ["0"], "keypoint": {"x": 0, "y": 0}},
        {
            "id": "c",
            "name": "lesion",
            "slot_names": ["1"],
            "polygon": {"paths": [[{"x": 0, "y": 0}], [{"x": 1, "y": 1}]]},
        },
    ]
    payload, skipped = darwin_to_import(annotations, {("bounding_box", "mass"): 1, ("polygon", "lesion"): 2})
    assert [p["id"] for p in payload] == ["a", "c"]
    assert payload[1]["data"] == {"polygon": {"path": [{"x": 0, "y": 0}], "additional_paths": [[{"x": 1, "y": 1}]]}}
    assert skipped == {"None:pt": 1}


def test_rate_limits_are_retried_and_keys_never_logged(fake: FakeV7, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.add_class("mass", ["bounding_box"], datasets=[7])
    sleeps: list[float] = []
    with backend(fake, sleeps) as be:
        item_id = be.register_existing([V7Item("a.png", (V7Slot("0", "a.png", "k/a.png"),))])["/a.png"]
        fake.fail_next(429, headers={"Retry-After": "2"})
        fake.fail_next(502)
        be.push(item_id, {"annotations": []})
    assert sleeps == [2.0, 1.0]
    assert "retry 1/4" in caplog.text
    assert API_KEY not in caplog.text


def test_uploads_never_carry_the_key_or_log_the_signature(
    fake: FakeV7, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next(503)  # the first register call: a retry is logged
    with backend(fake) as be:
        be.register_upload([two_slot_item(tmp_path)])
    puts = [r for r in fake.requests if r.method == "PUT"]
    assert len(puts) == 2
    assert all("authorization" not in r.headers for r in puts)
    assert "SIGNED-SECRET" not in caplog.text
    assert API_KEY not in caplog.text


def test_a_retried_upload_streams_the_whole_file_again(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(range(256)) * 12_289)  # a few MB: streamed in chunks, never read whole
    puts: list[tuple[str | None, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/register_upload"):
            slot = {"slot_name": "0", "file_name": "clip.mp4", "upload_id": "u1"}
            return httpx.Response(200, json={"items": [{"id": "i1", "name": "clip", "path": "/", "slots": [slot]}]})
        if path.endswith("/sign"):
            return httpx.Response(200, json={"upload_url": "https://storage.example.com/u1?X-Amz-Signature=s"})
        if request.method == "PUT":
            puts.append((request.headers.get("content-length"), request.read()))
            return httpx.Response(503 if len(puts) == 1 else 200)
        return httpx.Response(200, json={})  # confirm

    cfg = V7Config("acme", "clips", 7, base_url="https://v7.example.com/api")
    retry = RetryPolicy(sleep=lambda s: None)
    item = V7Item(name="clip", slots=(V7Slot("0", "clip.mp4", local_path=video),))
    with V7Backend(cfg, API_KEY, retry=retry, transport=httpx.MockTransport(handler)) as be:
        assert be.register_upload([item]) == {"/clip": "i1"}
    size = str(video.stat().st_size)
    assert puts == [(size, video.read_bytes()), (size, video.read_bytes())]


def test_errors_carry_status_and_no_key(fake: FakeV7) -> None:
    cfg = V7Config("acme", fake.dataset_slug, 7, base_url=fake.base_url + "/api", storage_slug=fake.storage_slug)
    with V7Backend(cfg, "wrong-key") as be, pytest.raises(BackendError) as info:
        be.find_items(item_names=["a.png"])
    assert info.value.status == 400
    assert "wrong-key" not in str(info.value)
    fake.errors.clear()


def test_pages_are_followed(fake: FakeV7) -> None:
    fake.page_size_cap = 2
    with backend(fake) as be:
        be.register_existing([V7Item(f"{i}.png", (V7Slot("0", f"{i}.png", f"k/{i}.png"),)) for i in range(5)])
        found = be.find_items(item_names=[f"{i}.png" for i in range(5)])
    assert sorted(i.name for i in found) == [f"{i}.png" for i in range(5)]


# -- BYOM ----------------------------------------------------------------------------------------------------------

TOKEN = "byom-token-" + "t" * 32


class BoxDetector(Detector):
    """One 'mass' box in the middle of every frame, and one 'calcification' box hanging over the right edge."""

    def __init__(self) -> None:
        self.info = ModelInfo("fake:boxes", "boxes", "1", ("mass", "calcification"), "fake", "cpu", 8, None)

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            xyxy = [[w / 4, h / 4, w * 3 / 4, h * 3 / 4], [w - 2, 0, w + 10, 4]]
            out.append(Detections.from_arrays(np.array(xyxy), np.array([0.91, 0.6]), np.array([0, 1])))
        return out


class ImageHost(FakeApp):
    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def route(self, request: Request) -> Response:
        return Response(200, self.body, {"Content-Type": "image/png"})


def png(width: int = 40, height: int = 20) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_host() -> Iterator[ImageHost]:
    host = ImageHost(png())
    with serving(host):
        yield host


@pytest.fixture
def byom(tmp_path: Path, image_host: ImageHost) -> Iterator[TestClient]:
    host = image_host.base_url.removeprefix("http://")
    settings = Settings(
        api_tokens=TOKEN, db_path=tmp_path / "db", fetch_allowed_hosts=[host], max_upload_bytes=4096, threshold=0.3
    )
    batcher = DynamicBatcher(BoxDetector(), max_batch_size=1, max_wait_ms=0)
    batcher.start()
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(v7_byom.router)
    app.state.preannotate = AppState(
        settings=settings,
        auth=TokenAuth([TOKEN]),
        store=None,  # type: ignore[arg-type]
        fetcher=Fetcher(settings.fetch_policy()),
        models=ModelRegistry([LoadedModel("fake:boxes", batcher)]),
    )
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client
    batcher.close()


def v7_schema_errors(body: Any) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    schema = example("v7_byom_inference_response.schema.json")
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(body)]


def test_the_vendored_example_passes_the_schema() -> None:
    assert v7_schema_errors(example("byom_infer_response.example.json")) == []


def test_infer_by_url(byom: TestClient, image_host: ImageHost) -> None:
    response = byom.post("/v7/infer", json={"image": {"url": f"{image_host.base_url}/L_CC.png?X-Amz-Signature=abc"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert v7_schema_errors(body) == []
    assert body == {
        "status": "succeeded",
        "results": [
            {
                "name": "mass",
                "label": "mass",
                "confidence": 0.91,
                "bounding_box": {"x": 10.0, "y": 5.0, "w": 20.0, "h": 10.0},
            },
            # clipped to the image: x2 was 50 on a 40-pixel-wide image
            {
                "name": "calcification",
                "label": "calcification",
                "confidence": 0.6,
                "bounding_box": {"x": 38.0, "y": 0.0, "w": 2.0, "h": 4.0},
            },
        ],
    }


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
def test_infer_by_base64(byom: TestClient, prefix: str) -> None:
    response = byom.post("/v7/infer", json={"image": {"base64": prefix + base64.b64encode(png()).decode()}})
    assert response.status_code == 200, response.text
    assert v7_schema_errors(response.json()) == []
    assert len(response.json()["results"]) == 2


@pytest.mark.parametrize(
    ("image", "status", "code"),
    [
        ({"base64": "not base64!!"}, 422, "invalid_argument"),
        ({"base64": base64.b64encode(b"\0" * 5000).decode()}, 413, "file_too_large"),
        ({"base64": base64.b64encode(b"hello, not an image").decode()}, 415, "unsupported_media"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, 422, "url_not_allowed"),
    ],
)
def test_infer_failures_answer_in_v7_schema(byom: TestClient, image: dict[str, str], status: int, code: str) -> None:
    response = byom.post("/v7/infer", json={"image": image})
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["status"], body["results"], body["error"]["code"]) == ("failed", [], code)
    assert v7_schema_errors(body) == []


@pytest.mark.parametrize(
    "body",
    [{}, {"image": {}}, {"image": {"url": "https://x/a.png", "base64": "AAAA"}}, {"image": "https://x/a.png"}],
)
def test_infer_rejects_malformed_requests(byom: TestClient, body: dict[str, Any]) -> None:
    response = byom.post("/v7/infer", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_argument"


def test_infer_ignores_fields_v7_may_add(byom: TestClient) -> None:
    body = {"image": {"base64": base64.b64encode(png()).decode(), "width": 40}, "model_id": "x"}
    assert byom.post("/v7/infer", json=body).status_code == 200


def test_classes(byom: TestClient) -> None:
    response = byom.get("/v7/classes")
    assert response.status_code == 200
    assert response.json() == [
        {"name": "mass", "type": "bounding_box"},
        {"name": "calcification", "type": "bounding_box"},
    ]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"ApiKey {TOKEN}"}])
def test_byom_needs_one_of_our_tokens(byom: TestClient, headers: dict[str, str]) -> None:
    byom.headers.pop("Authorization")
    for response in (byom.get("/v7/classes", headers=headers), byom.post("/v7/infer", json={}, headers=headers)):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_mask_polygons_are_imported_as_polygons_not_as_their_derived_boxes() -> None:
    """A mask's polygon carries the derived ``bounding_box`` V7 exports have: its class and data are the polygon's."""
    from service.backends.v7 import main_type
    from service.convert.darwin import item_to_darwin
    from service.convert.types import ModelRef
    from tests.builders import masked_item

    model = ModelRef(spec="builtin:centerface", version="1", class_names=("face", "person"))
    annotations = item_to_darwin(masked_item(), model)["annotations"]
    kinds = [main_type(a) for a in annotations]  # type: ignore[arg-type]
    assert kinds == ["polygon", "polygon", "polygon", "bounding_box", "polygon", "polygon"]
    pairs = {(str(k), a["name"]) for k, a in zip(kinds, annotations, strict=True)}
    class_ids = {pair: i for i, pair in enumerate(sorted(pairs))}
    payload, skipped = darwin_to_import(annotations, class_ids)  # type: ignore[arg-type]
    assert not skipped
    ring = payload[1]["data"]["polygon"]
    assert isinstance(ring, dict)
    assert len(ring["additional_paths"]) == 1  # the hole
    track = payload[4]["data"]["frames"]
    assert isinstance(track, dict)
    assert all(set(frame) >= {"polygon", "keyframe"} and "path" in frame["polygon"] for frame in track.values())


class MassOnlySegmenter(EllipseSegmenter):
    """The ellipse in every 'mass' box (the first row); the other rows get an empty mask."""

    def _segment_batch(self, images: Sequence[RGBImage], boxes_xyxy: Sequence[NDArray[np.float32]]) -> list[Masks]:
        out = []
        for image, boxes in zip(images, boxes_xyxy, strict=True):
            h, w = image.shape[:2]
            out.append(Masks.from_full(np.stack([ellipse_in(b, h, w) & (i == 0) for i, b in enumerate(boxes)])))
        return out


@contextmanager
def byom_with(tmp_path: Path, segmenter: Segmenter, **settings: Any) -> Iterator[tuple[TestClient, ModelRegistry]]:
    """The BYOM routes with ``segmenter`` loaded (``PREANNOTATE_SEGMENTER``), and the registry sharing it."""
    config = Settings(api_tokens=TOKEN, db_path=tmp_path / "db", max_upload_bytes=4096, threshold=0.3)
    batcher = DynamicBatcher(BoxDetector(), max_batch_size=1, max_wait_ms=0)
    batcher.start()
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(v7_byom.router)
    registry = ModelRegistry([LoadedModel("fake:boxes", batcher)], segmenter=segmenter)
    app.state.preannotate = AppState(
        settings=config.model_copy(update=settings),
        auth=TokenAuth([TOKEN]),
        store=None,  # type: ignore[arg-type]
        fetcher=Fetcher(config.fetch_policy()),
        models=registry,
    )
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client, registry
    batcher.close()


@pytest.fixture
def byom_masks(tmp_path: Path, image_host: ImageHost) -> Iterator[TestClient]:
    """``byom`` with a segmenter loaded."""
    with byom_with(tmp_path, MassOnlySegmenter()) as (client, _):
        yield client


def test_classes_are_boxes_without_masks_and_polygons_with_them(byom: TestClient, byom_masks: TestClient) -> None:
    assert byom.get("/v7/classes").json() == [
        {"name": "mass", "type": "bounding_box"},
        {"name": "calcification", "type": "bounding_box"},
    ]
    assert byom_masks.get("/v7/classes").json() == [
        {"name": "mass", "type": "polygon"},
        {"name": "calcification", "type": "polygon"},
    ]


def test_infer_with_masks_answers_one_path_polygons_in_v7_schema(byom_masks: TestClient) -> None:
    """The mask's outer ring, which pycocotools rasterises back into the mask; a row without a mask is its box's
    corners (its class is a polygon class)."""
    response = byom_masks.post("/v7/infer", json={"image": {"base64": base64.b64encode(png()).decode()}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert v7_schema_errors(body) == []
    mass, calcification = body["results"]
    assert set(mass) == set(calcification) == {"name", "label", "confidence", "polygon"}
    ring = [v for p in mass["polygon"]["path"] for v in (p["x"], p["y"])]
    drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([ring], 20, 40))).astype(bool)
    np.testing.assert_array_equal(drawn, ellipse_in((10, 5, 30, 15), 20, 40))
    assert calcification["polygon"]["path"] == [  # clipped to the image, as its box would be
        {"x": 38.0, "y": 0.0},
        {"x": 40.0, "y": 0.0},
        {"x": 40.0, "y": 4.0},
        {"x": 38.0, "y": 4.0},
    ]


def test_a_segmenter_failure_answers_failed_in_v7_schema(tmp_path: Path) -> None:
    """torch's RuntimeError is no error of ours: V7 still gets ``status: failed`` with our code, not a bare 500."""
    with byom_with(tmp_path, BrokenSegmenter()) as (client, _):
        response = client.post("/v7/infer", json={"image": {"base64": base64.b64encode(png()).decode()}})

    assert response.status_code == 500, response.text
    body = response.json()
    assert (body["status"], body["results"], body["error"]["code"]) == ("failed", [], "internal")
    assert "tensor" not in body["error"]["message"]
    assert v7_schema_errors(body) == []


def test_a_segmenter_busy_past_the_deadline_answers_failed_in_v7_schema(tmp_path: Path) -> None:
    gated = GatedSegmenter()
    with (
        byom_with(tmp_path, gated, predict_timeout_s=0.5) as (client, registry),
        a_job_holding(gated, registry.segmenter),
    ):
        response = client.post("/v7/infer", json={"image": {"base64": base64.b64encode(png()).decode()}})

    assert response.status_code == 504, response.text
    body = response.json()
    assert (body["status"], body["results"], body["error"]["code"]) == ("failed", [], "deadline_exceeded")
    assert v7_schema_errors(body) == []
