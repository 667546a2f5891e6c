"""Job pushes (service.backends.*_push): Encord writes bundled across items, V7 registration by upload, the job's
tracker. Against the contract fakes, which check every payload and count the requests."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from service.backends.base import EncordPushRecord, PushRecord
from service.backends.encord import EncordPush, EncordPushResult
from service.backends.encord_bundler import EncordBundler
from service.backends.registry import Backends
from service.backends.retry import BackendError
from service.config import Settings
from service.convert.encord import EncordOntology, EncordRowStats
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.options import SamplingMode
from service.pipeline.predictions import ItemPredictions
from service.spec.job import JobSpec, PinnedTracks
from service.spec.requests import Destination, ItemIn, JobCreate, SlotIn, TracksIn
from tests.builders import (
    CAR_PERSON_MODEL,
    CAR_PERSON_ONTOLOGY_JSON,
    linked,
    make_detections,
    make_result,
    masked_item,
)
from tests.fakes.encord_server import FakeEncord
from tests.fakes.http import FakeApp, Request, Response, serving
from tests.fakes.v7_server import FakeV7, Item

TOKEN = "CANARY-encord-token-" + "p" * 24
V7_KEY = "CANARY-v7-key-" + "p" * 24
SVC = "svc-preannotate@example.com"
MODEL = CAR_PERSON_MODEL
ONTOLOGY_JSON = CAR_PERSON_ONTOLOGY_JSON
ENCORD = Destination(backend="encord")
V7 = Destination(backend="v7")
SLOW = 10_000.0  # ms: a bundle that waited this long would fail the timing asserts


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("PREANNOTATE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.fixture
def encord() -> Iterator[FakeEncord]:
    app = FakeEncord(ontology=ONTOLOGY_JSON, token=TOKEN)
    with serving(app):
        yield app
    assert app.errors == [], app.errors


@pytest.fixture
def v7() -> Iterator[FakeV7]:
    app = FakeV7(api_key=V7_KEY, team="acme", dataset_slug="faces", dataset_id=7)
    with serving(app):
        yield app
    assert app.errors == [], app.errors


def job_spec(tracks: dict[str, Any] | None = None) -> JobSpec:
    """A job of MODEL; ``tracks`` None: a job stored before trackers were pinned (the settings' tracker)."""
    return JobSpec(
        model=MODEL.spec,
        model_version=MODEL.version,
        class_names=MODEL.class_names,
        fps=0,
        sampling=SamplingMode.EXACT,
        threshold=0.5,
        tracks=None if tracks is None else PinnedTracks.model_validate(tracks),
    )


def push(backends: Backends, destination: Destination, item: ItemIn, predictions: ItemPredictions) -> PushRecord:
    return backends.for_destination(destination).push(destination, item, predictions, job_spec())


def encord_pushers(fake: FakeEncord, tmp_path: Path, *, concurrency: int | None = None, **settings: Any) -> Backends:
    ontology = tmp_path / "ontology.json"
    ontology.write_text(json.dumps(ONTOLOGY_JSON))
    config = Settings(
        encord_project_hash=fake.project_hash,
        encord_domain=fake.base_url,
        encord_bearer_token=TOKEN,
        encord_ontology_file=ontology,
        encord_created_by=SVC,
        **settings,
    )
    return Backends(config, concurrency=concurrency)


def image(name: str, data_hash: str | None) -> tuple[ItemIn, ItemPredictions]:
    external_ids = None if data_hash is None else {"encord": data_hash}
    item = ItemIn.model_validate(
        {"name": name, "slots": [{"name": "0", "url": f"file:///d/{name}"}], "external_ids": external_ids}
    )
    meta = SlotMeta(name, "0", MediaKind.IMAGE, (f"/d/{name}",), 1920, 1080, None, 1, 1)
    result = make_result(make_detections([[0, 0, 192, 108]], [0.9], [0]), item=name, width=1920, height=1080)
    return item, ItemPredictions(name, (meta,), (result,))


def video(name: str, data_hash: str) -> tuple[ItemIn, ItemPredictions]:
    """One car drifting right over 3 sampled frames: one track with the defaults."""
    item = ItemIn.model_validate(
        {"name": name, "slots": [{"name": "0", "url": f"file:///d/{name}"}], "external_ids": {"encord": data_hash}}
    )
    meta = SlotMeta(name, "0", MediaKind.VIDEO, (f"/d/{name}",), 1280, 720, 25.0, 100, 3, 4.0)
    frames = tuple(
        make_result(
            make_detections([[100 + 4 * f, 100, 228 + 4 * f, 172]], [0.8], [0]),
            item=name,
            media=MediaKind.VIDEO,
            frame_index=f,
            timestamp_s=f / 25,
            width=1280,
            height=720,
        )
        for f in (0, 10, 20)
    )
    return item, ItemPredictions(name, (meta,), frames)


def push_together(
    pushers: Backends,
    entries: Sequence[tuple[ItemIn, ItemPredictions]],
    destination: Destination = ENCORD,
) -> list[PushRecord | PreannotateError]:
    """What worker threads finishing at once do: each pushes its own item, all at the same time."""
    start = threading.Barrier(len(entries))

    def one(entry: tuple[ItemIn, ItemPredictions]) -> PushRecord | PreannotateError:
        start.wait()
        try:
            return push(pushers, destination, entry[0], entry[1])
        except PreannotateError as exc:
            return exc

    with ThreadPoolExecutor(len(entries)) as pool:
        return list(pool.map(one, entries))


def saves(fake: FakeEncord) -> list[int]:
    return [n for query, method, n in fake.calls if (query, method) == ("labelrow", "POST")]


# -- Encord: bundles across items -------------------------------------------------------------------------------


def test_items_finishing_together_share_one_bundle(encord: FakeEncord, tmp_path: Path) -> None:
    for i in range(3):
        encord.add_image(f"img-{i}")
    pushers = encord_pushers(encord, tmp_path, workers=3, encord_bundle_wait_ms=SLOW)
    started = time.monotonic()
    records = push_together(pushers, [image(f"{i}.jpg", f"img-{i}") for i in range(3)])
    pushers.close()
    # All 3 worker threads waiting: nobody else can join, so it is written at once, not after the wait.
    assert time.monotonic() - started < SLOW / 1000 / 2
    assert encord.calls == [("labelrowmetadata", "GET", 0), ("labelrow", "PUT", 3), ("labelrow", "POST", 3)]
    assert [r.data_hash for r in records if isinstance(r, EncordPushRecord)] == ["img-0", "img-1", "img-2"]
    for record in records:
        assert isinstance(record, EncordPushRecord)
        assert record.label_hash == encord.data[record.data_hash].label_hash  # each item its own answer
        assert (record.objects, record.bundle_items) == (1, 3)
    assert all(r.saves == 1 for r in encord.data.values())


def test_a_masked_job_on_a_worker_without_the_ontology_file_is_refused_not_pushed(
    encord: FakeEncord, tmp_path: Path
) -> None:
    """The API pod checked its own settings; a worker lacking the file must not push a made-up ontology (a polygon
    object per class) whose feature hashes the project does not have."""
    encord.add_image("img-0")
    worker = Settings(
        encord_project_hash=encord.project_hash,
        encord_domain=encord.base_url,
        encord_bearer_token=TOKEN,
        encord_created_by=SVC,
    )
    pushers = Backends(worker)
    spec = job_spec().model_copy(update={"segmenter": "hf:facebook/sam-vit-base", "segmenter_version": "s1"})
    item, predictions = image("0.jpg", "img-0")
    photo = masked_item().frames[0]  # a disk, a ring, a two-part shape and a box without a mask
    masked = replace(predictions, frames=(replace(predictions.frames[0], detections=photo.detections),))
    pusher = pushers.for_destination(ENCORD)
    with pytest.raises(PreannotateError) as one:
        pusher.push(ENCORD, item, masked, spec)
    with pytest.raises(PreannotateError) as many:
        pusher.push_many(ENCORD, [(item, masked)], spec)
    pushers.close()
    assert one.value.code is many.value.code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert encord.calls == []


def test_a_full_bundle_is_written_without_waiting(encord: FakeEncord, tmp_path: Path) -> None:
    for i in range(4):
        encord.add_image(f"img-{i}")
    pushers = encord_pushers(encord, tmp_path, workers=8, encord_bundle_size=2, encord_bundle_wait_ms=SLOW)
    started = time.monotonic()
    records = push_together(pushers, [image(f"{i}.jpg", f"img-{i}") for i in range(4)])
    pushers.close()
    assert time.monotonic() - started < SLOW / 1000 / 2
    assert saves(encord) == [2, 2]
    assert len(encord.calls) == 6  # 3 per bundle instead of 3 per item
    assert [r.bundle_items for r in records if isinstance(r, EncordPushRecord)] == [2, 2, 2, 2]


def test_a_lone_item_waits_for_company_then_goes_alone(encord: FakeEncord, tmp_path: Path) -> None:
    encord.add_image("img-0")
    encord.add_image("img-1")
    pushers = encord_pushers(encord, tmp_path, workers=8, encord_bundle_wait_ms=300)
    started = time.monotonic()
    (record,) = push_together(pushers, [image("0.jpg", "img-0")])
    assert time.monotonic() - started >= 0.3
    assert isinstance(record, EncordPushRecord)
    assert record.bundle_items == 1
    # Two items within the wait share a bundle even though the other 6 worker threads never come.
    encord.calls.clear()
    records = push_together(pushers, [image("0.jpg", "img-0"), image("1.jpg", "img-1")])
    pushers.close()
    assert saves(encord) == [2]
    assert [r.bundle_items for r in records if isinstance(r, EncordPushRecord)] == [2, 2]


def test_no_wait_and_one_worker_write_at_once(encord: FakeEncord, tmp_path: Path) -> None:
    encord.add_image("img-0")
    for settings in ({"workers": 1, "encord_bundle_wait_ms": SLOW}, {"workers": 4, "encord_bundle_wait_ms": 0}):
        pushers = encord_pushers(encord, tmp_path, **settings)
        started = time.monotonic()
        push(pushers, ENCORD, *image("0.jpg", "img-0"))
        pushers.close()
        assert time.monotonic() - started < 2.0


def test_an_item_at_fault_fails_alone_and_the_rest_of_its_bundle_is_saved(encord: FakeEncord, tmp_path: Path) -> None:
    encord.add_image("img-0")
    encord.add_video("vid-0")
    pushers = encord_pushers(encord, tmp_path, workers=3, encord_bundle_wait_ms=SLOW)
    good, missing, misfit = push_together(
        pushers,
        [image("0.jpg", "img-0"), image("1.jpg", "no-such-hash"), image("2.jpg", "vid-0")],  # an image into a video
    )
    pushers.close()
    assert isinstance(good, EncordPushRecord)
    assert good.bundle_items == 3
    assert isinstance(missing, PreannotateError)
    assert missing.code is ErrorCode.BACKEND_REJECTED
    assert "no-such-hash is not in the project" in missing.message
    assert isinstance(misfit, PreannotateError)
    assert misfit.code is ErrorCode.BACKEND_REJECTED
    assert "cannot take a image slot" in misfit.message
    assert saves(encord) == [1]
    assert encord.data["img-0"].saves == 1
    assert encord.data["vid-0"].saves == 0


def test_the_same_row_twice_goes_in_two_bundles(encord: FakeEncord, tmp_path: Path) -> None:
    encord.add_image("img-0")
    pushers = encord_pushers(encord, tmp_path, workers=2, encord_bundle_wait_ms=SLOW)
    records = push_together(pushers, [image("0.jpg", "img-0"), image("0-again.jpg", "img-0")])
    pushers.close()
    assert all(isinstance(r, EncordPushRecord) for r in records)
    assert saves(encord) == [1, 1]
    assert len(encord.objects("img-0")) == 1  # the second replaced the first's object


def _result(push: EncordPush) -> EncordPushResult:
    return EncordPushResult(push.data_hash, f"label-{push.data_hash}", EncordRowStats(objects=1))


def test_a_failed_request_fails_exactly_the_items_of_its_bundle_retryably() -> None:
    bundles: list[list[str]] = []

    def push_each(pushes: Sequence[EncordPush], model: ModelRef, ontology: EncordOntology) -> list[Any]:
        bundles.append([p.data_hash for p in pushes])
        if any(p.data_hash == "bad" for p in pushes):  # e.g. the save still 503 after the retries
            return [BackendError("encord", "saving label rows failed with HTTP 503", status=503, retryable=True)] * len(
                pushes
            )
        return [_result(p) for p in pushes]

    bundler = EncordBundler(push_each, bundle_size=2, wait_s=SLOW, concurrency=4)
    ontology = EncordOntology.from_json(ONTOLOGY_JSON)
    hashes = ["a", "bad", "c", "d"]
    start = threading.Barrier(4)

    def one(data_hash: str) -> EncordPushRecord | PreannotateError:
        start.wait()
        try:
            return bundler.push(EncordPush(data_hash, image("x.jpg", None)[1]), MODEL, ontology)
        except PreannotateError as exc:
            return exc

    with ThreadPoolExecutor(4) as pool:
        outcomes = dict(zip(hashes, pool.map(one, hashes), strict=True))
    assert sorted(len(b) for b in bundles) == [2, 2]
    failed_bundle = next(b for b in bundles if "bad" in b)
    for data_hash, outcome in outcomes.items():
        if data_hash in failed_bundle:
            assert isinstance(outcome, PreannotateError)
            assert outcome.code is ErrorCode.BACKEND_UNAVAILABLE
            assert outcome.code.retryable
        else:
            assert isinstance(outcome, EncordPushRecord)
            assert outcome.label_hash == f"label-{data_hash}"
    assert outcomes["a"] is not outcomes["bad"]  # one error object per item (each raised in its own thread)


def test_a_crash_in_the_writer_answers_every_waiting_item() -> None:
    def push_each(pushes: Sequence[EncordPush], model: ModelRef, ontology: EncordOntology) -> list[Any]:
        raise RuntimeError("boom")

    bundler = EncordBundler(push_each, bundle_size=10, wait_s=SLOW, concurrency=2)
    ontology = EncordOntology.from_json(ONTOLOGY_JSON)
    start = threading.Barrier(2)

    def one(data_hash: str) -> str:
        start.wait()
        with pytest.raises(PreannotateError) as info:
            bundler.push(EncordPush(data_hash, image("x.jpg", None)[1]), MODEL, ontology)
        return info.value.code.code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(one, ["a", "b"])) == ["internal", "internal"]


def test_push_many_bundles_without_waiting_and_answers_per_item(encord: FakeEncord, tmp_path: Path) -> None:
    for i in range(5):
        encord.add_image(f"img-{i}")
    pushers = encord_pushers(encord, tmp_path, encord_bundle_size=2, encord_bundle_wait_ms=SLOW)
    entries = [image(f"{i}.jpg", f"img-{i}") for i in range(5)]
    entries.insert(2, image("no-id.jpg", None))
    started = time.monotonic()
    outcomes = pushers.get("encord").push_many(ENCORD, entries, job_spec())
    pushers.close()
    assert time.monotonic() - started < 5
    assert saves(encord) == [2, 2, 1]
    assert isinstance(outcomes[2], PreannotateError)
    assert outcomes[2].code is ErrorCode.INVALID_ARGUMENT
    records = [o for o in outcomes if isinstance(o, EncordPushRecord)]
    assert [r.data_hash for r in records] == [f"img-{i}" for i in range(5)]
    assert [r.bundle_items for r in records] == [2, 2, 2, 2, 1]


# -- the job's tracker ----------------------------------------------------------------------------------------------


PINNED = {
    "enabled": True,
    "max_gap_s": 2.0,
    "distance_gate": 0.5,
    "max_speed": 2.0,
    "offline": True,
    "join_gap_s": 10.0,
    "appearance": True,
    "min_length": 1,
}
"""A job's tracker as this release pins it."""


@pytest.mark.parametrize(
    ("tracks", "objects"),
    [
        (None, 1),  # the settings' default: one track on its 3 frames
        ({**PINNED, "enabled": False}, 3),  # one object per detection
        ({**PINNED, "min_length": 4}, 0),  # a 3-box track is too short
        # the boxes move too far for the gate and speed, and no offline pass joins the pieces
        ({**PINNED, "distance_gate": 0.01, "max_speed": 0.1, "offline": False}, 3),
        # as a job pinned by an older release stored it: the tracker's defaults, its min_length
        ({"enabled": True, "iou": 0.99, "max_gap": 0, "min_length": 4}, 0),
    ],
)
def test_pushes_link_tracks_as_the_job_says(
    encord: FakeEncord, tmp_path: Path, tracks: dict[str, Any] | None, objects: int
) -> None:
    encord.add_video("vid-0")
    pushers = encord_pushers(encord, tmp_path, workers=1)
    item, predictions = video("v.mp4", "vid-0")
    spec = job_spec(tracks)
    # Tracked once, where the predictions are made (the worker, with the job's tracker); the push only reads them
    tracked = linked(predictions, spec.tracker(pushers.settings))
    (record,) = pushers.get("encord").push_many(ENCORD, [(item, tracked)], spec)
    pushers.close()
    assert isinstance(record, EncordPushRecord)
    assert record.objects == objects
    assert len({entry["objectHash"] for _, entry in encord.objects("vid-0")}) == objects


def test_pushes_without_a_job_follow_the_settings(encord: FakeEncord, tmp_path: Path) -> None:
    encord.add_video("vid-0")
    pushers = encord_pushers(encord, tmp_path, workers=1, tracks=False)
    item, predictions = video("v.mp4", "vid-0")
    record = push(pushers, ENCORD, item, linked(predictions, pushers.settings.tracker_options()))
    pushers.close()
    assert isinstance(record, EncordPushRecord)
    assert record.objects == 3


@pytest.mark.parametrize(
    "tracks",
    [
        {"iou": 0.3},
        {"max_gap": 2},
        {"max_gap_s": -1},
        {"join_gap_s": 3601},
        {"distance_gate": 0},
        {"max_speed": 101},
        {"min_length": 0},
        {"enabled": "no"},
        {"offline": "no"},
        {"min_length": 1.5},
        {"gap": 2},
    ],
)
def test_bad_job_tracks_are_refused(tracks: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        JobCreate.model_validate({"items": [{"name": "a", "slots": [{"url": "file:///a.mp4"}]}], "tracks": tracks})


def test_job_tracks_take_integers_for_seconds_and_box_sizes() -> None:
    tracks = TracksIn.model_validate({"max_gap_s": 3, "join_gap_s": 0, "distance_gate": 1, "max_speed": 2})
    assert (tracks.max_gap_s, tracks.join_gap_s, tracks.distance_gate, tracks.max_speed) == (3.0, 0.0, 1.0, 2.0)


# -- V7: items not in the dataset are registered ---------------------------------------------------------------------


def v7_pushers(fake: FakeV7, tmp_path: Path, **settings: Any) -> Backends:
    config = Settings(
        v7_api_key=V7_KEY,
        v7_team_slug=fake.team,
        v7_dataset_slug=fake.dataset_slug,
        v7_dataset_id=fake.dataset_id,
        v7_base_url=f"{fake.base_url}/api",
        local_roots=[tmp_path],
        **settings,
    )
    return Backends(config)


def two_images(tmp_path: Path, urls: Sequence[str] | None = None) -> tuple[ItemIn, ItemPredictions]:
    for n, color in enumerate(("red", "blue")):
        Image.new("RGB", (64, 48), color).save(tmp_path / f"view-{n}.png")
    urls = list(urls or [(tmp_path / f"view-{n}.png").as_uri() for n in range(2)])
    item = ItemIn.model_validate(
        {"name": "case-7", "slots": [{"name": "left", "url": urls[0]}, {"name": "right", "url": urls[1]}]}
    )
    slots = tuple(
        SlotMeta("case-7", slot, MediaKind.IMAGE, (urls[n],), 64, 48, None, 1, 1)
        for n, slot in enumerate(("left", "right"))
    )
    frames = tuple(
        make_result(make_detections([[4, 4, 20, 20]], [0.9], [1]), item="case-7", slot=slot, width=64, height=48)
        for slot in ("left", "right")
    )
    return item, ItemPredictions("case-7", slots, frames)


def test_an_item_v7_lacks_is_uploaded_with_its_layout_then_imported(v7: FakeV7, tmp_path: Path) -> None:
    pushers = v7_pushers(v7, tmp_path)
    item, predictions = two_images(tmp_path)
    record = push(pushers, V7, item, predictions)
    again = push(pushers, V7, item, predictions)  # a retry or re-run: found by name, not uploaded twice
    pushers.close()

    registered = v7.item("case-7")
    assert record.to_json() == {
        "backend": "v7",
        "item": registered.id,
        "imported": 2,
        "skipped_reason": None,
        "registered": "upload",
    }
    assert again.to_json() == {"backend": "v7", "item": registered.id, "imported": 2, "skipped_reason": None}
    [(_path, body)] = [(p, b) for p, b in v7.bodies if p.endswith("/register_upload")]
    [entry] = body["items"]
    assert entry["layout"] == {"version": 1, "type": "horizontal", "slots": ["left", "right"]}
    assert [(s["slot_name"], s["file_name"]) for s in entry["slots"]] == [
        ("left", "view-0.png"),
        ("right", "view-1.png"),
    ]
    by_slot = {s["slot_name"]: v7.uploads[s["upload_id"]] for s in registered.slots}
    assert by_slot == {"left": (tmp_path / "view-0.png").read_bytes(), "right": (tmp_path / "view-1.png").read_bytes()}
    assert registered.imports == ["true", "true"]
    assert sorted(a["context_keys"]["slot_names"][0] for a in registered.annotations) == ["left", "right"]


class MediaHost(FakeApp):
    """Serves files over HTTP like any media store."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__()
        self.files = files

    def route(self, request: Request) -> Response:
        body = self.files.get(request.path)
        return Response(200, body) if body is not None else Response(404, {"error": "no such file"})


def test_http_slots_are_fetched_again_for_the_upload(v7: FakeV7, tmp_path: Path) -> None:
    two_images(tmp_path)
    files = {f"/media/view-{n}.png": (tmp_path / f"view-{n}.png").read_bytes() for n in range(2)}
    host = MediaHost(files)
    with serving(host) as base:
        pushers = v7_pushers(v7, tmp_path, fetch_allowed_hosts=[base.removeprefix("http://")])
        item, predictions = two_images(tmp_path, [f"{base}/media/view-{n}.png?sig=SECRET" for n in range(2)])
        record = push(pushers, V7, item, predictions)
        pushers.close()
    assert record.to_json()["registered"] == "upload"
    registered = v7.item("case-7")
    assert sorted(v7.uploads.values()) == sorted(files.values())
    assert [s["file_name"] for s in registered.slots] == ["view-0.png", "view-1.png"]  # no query string
    assert not list(tmp_path.glob("preannotate-v7-*"))  # scratch copies removed


def test_storage_slots_are_registered_where_they_are(v7: FakeV7, tmp_path: Path) -> None:
    pushers = v7_pushers(v7, tmp_path, v7_storage_slug=v7.storage_slug)
    item, predictions = two_images(tmp_path, ["s3://bucket/cases/7/l.png", "s3://bucket/cases/7/r.png"])
    record = push(pushers, V7, item, predictions)
    pushers.close()
    assert record.to_json()["registered"] == "existing"
    [(_, body)] = [(p, b) for p, b in v7.bodies if p.endswith("/register_existing")]
    assert [s["storage_key"] for s in body["items"][0]["slots"]] == ["cases/7/l.png", "cases/7/r.png"]
    assert v7.uploads == {}


def test_known_items_are_not_registered(v7: FakeV7, tmp_path: Path) -> None:
    v7.items["known"] = Item(
        id="known",
        name="case-7",
        path="/",
        slots=[{"slot_name": s, "file_name": f"{s}.png", "type": "image"} for s in ("left", "right")],
        layout={"version": 1, "type": "horizontal", "slots": ["left", "right"]},
        status="new",
    )
    pushers = v7_pushers(v7, tmp_path)
    record = push(pushers, V7, *two_images(tmp_path))
    pushers.close()
    assert "registered" not in record.to_json()
    assert record.to_json()["item"] == "known"
    assert not [p for p, _ in v7.bodies if "register" in p]


def test_series_slots_cannot_be_uploaded(v7: FakeV7, tmp_path: Path) -> None:
    item, predictions = two_images(tmp_path)
    item.slots[1] = SlotIn(name="right", urls=[(tmp_path / "view-1.png").as_uri()] * 2)
    pushers = v7_pushers(v7, tmp_path)
    with pytest.raises(PreannotateError) as info:
        push(pushers, V7, item, predictions)
    pushers.close()
    assert info.value.code is ErrorCode.BACKEND_REJECTED
    assert "one file per slot" in info.value.message
    assert v7.uploads == {}


def test_a_slot_the_fetcher_refuses_fails_the_push(v7: FakeV7, tmp_path: Path) -> None:
    item, predictions = two_images(tmp_path, ["file:///etc/hostname", (tmp_path / "view-1.png").as_uri()])
    pushers = v7_pushers(v7, tmp_path)
    with pytest.raises(PreannotateError) as info:
        push(pushers, V7, item, predictions)
    pushers.close()
    assert info.value.code is ErrorCode.URL_NOT_ALLOWED
    assert not [p for p, _ in v7.bodies if "register" in p]
