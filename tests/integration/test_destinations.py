"""Jobs that push to V7 and Encord: a real `preannotate serve`, the tools' contract fakes on loopback.

The fakes check every request against the documented payloads and keep state, so the tests see what a
re-run does there: no duplicate annotations, human work kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
import skimage.data

from tests.fakes.encord_server import FakeEncord
from tests.fakes.http import serving
from tests.fakes.v7_server import FakeV7, Item
from tests.integration.servers import Server, running, wait_for_job

V7_KEY = "CANARY-v7-key-" + "v" * 20
ENCORD_TOKEN = "CANARY-encord-token-" + "e" * 20
DATA_HASH = "0f7e2b6a-6f0c-4c33-9d65-3f9d8a1b2c3d"
ONTOLOGY = {
    "objects": [
        {"id": "1", "name": "Face", "color": "#D33115", "shape": "bounding_box", "featureNodeHash": "faceBBx1"}
    ],
    "classifications": [],
}


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


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
def encord() -> Iterator[FakeEncord]:
    app = FakeEncord(token=ENCORD_TOKEN, ontology=ONTOLOGY)
    app.add_image(DATA_HASH, title="astronaut.png", width=512, height=512)
    with serving(app):
        yield app
    assert app.errors == [], app.errors


@pytest.fixture(scope="module")
def server(photo: Path, v7: FakeV7, encord: FakeEncord, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("db")
    ontology = root / "ontology.json"
    ontology.write_text(json.dumps(ONTOLOGY))
    with running(
        root / "jobs.db",
        PREANNOTATE_ENCORD_ONTOLOGY_FILE=str(ontology),
        PREANNOTATE_LOCAL_ROOTS=str(photo.parent),
        PREANNOTATE_V7_API_KEY=V7_KEY,
        PREANNOTATE_V7_TEAM_SLUG="acme",
        PREANNOTATE_V7_DATASET_SLUG="faces",
        PREANNOTATE_V7_DATASET_ID="7",
        PREANNOTATE_V7_BASE_URL=f"{v7.base_url}/api",
        PREANNOTATE_ENCORD_PROJECT_HASH=encord.project_hash,
        PREANNOTATE_ENCORD_DOMAIN=encord.base_url,
        PREANNOTATE_ENCORD_BEARER_TOKEN=ENCORD_TOKEN,
        PREANNOTATE_ENCORD_CREATED_BY="svc@example.com",
        PREANNOTATE_WORKERS="2",
        # Long enough that two items of a job always meet in one bundle; a lone item waits this long.
        PREANNOTATE_ENCORD_BUNDLE_WAIT_MS="1000",
    ) as srv:
        yield srv


def _job(photo: Path, destinations: list[dict[str, object]]) -> dict[str, object]:
    return {
        "items": [{"name": "astronaut.png", "slots": [{"url": photo.as_uri()}], "external_ids": {"encord": DATA_HASH}}],
        "destinations": destinations,
    }


def test_a_job_pushes_to_v7_and_encord_and_a_rerun_adds_nothing(
    server: Server, photo: Path, v7: FakeV7, encord: FakeEncord
) -> None:
    body = _job(photo, [{"backend": "v7"}, {"backend": "encord"}])
    with server.client() as client:
        for key in ("first", "second"):  # a new key: a second job, the same pushes
            job_id = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key}).json()["job_id"]
            job = wait_for_job(client, job_id)
            assert job["status"] == "succeeded", job

    item = v7.item("astronaut.png")
    assert item.imports == ["true", "true"]  # overwrite: a re-run replaces, never appends
    [face] = item.annotations
    assert face["data"]["bounding_box"]["x"] == pytest.approx(181.53, abs=0.5)
    objects = encord.objects(DATA_HASH)
    assert len(objects) == 1  # ours replaced, not duplicated
    assert objects[0][1]["manualAnnotation"] is False
    assert objects[0][1]["featureHash"] == "faceBBx1"  # "face" matched the ontology's "Face" by name
    assert V7_KEY not in server.log()
    assert ENCORD_TOKEN not in server.log()


def test_items_of_a_job_share_encord_bundles(server: Server, photo: Path, encord: FakeEncord) -> None:
    hashes = [f"bundle-{n}" for n in range(3)]
    for data_hash in hashes:
        encord.add_image(data_hash, title="astronaut.png", width=512, height=512)
    body = {
        "items": [
            {"name": f"astronaut-{n}.png", "slots": [{"url": photo.as_uri()}], "external_ids": {"encord": h}}
            for n, h in enumerate(hashes)
        ],
        "destinations": [{"backend": "encord"}],
    }
    before = len(encord.calls)
    with server.client() as client:
        job = wait_for_job(client, client.post("/v1/jobs", json=body).json()["job_id"])
    assert job["status"] == "succeeded", job
    assert all(encord.data[h].saves == 1 and len(encord.objects(h)) == 1 for h in hashes)
    saves = [n for query, method, n in encord.calls[before:] if (query, method) == ("labelrow", "POST")]
    assert sum(saves) == 3
    assert 2 in saves  # the two workers' items went in one bundle: 3 requests for both, not 6
    assert len(encord.calls) - before == 3 * len(saves)


def test_an_item_v7_lacks_is_uploaded_with_its_slots_and_layout(server: Server, photo: Path, v7: FakeV7) -> None:
    body = {
        "items": [
            {
                "name": "astronaut-pair",
                "slots": [{"name": "a", "url": photo.as_uri()}, {"name": "b", "url": photo.as_uri()}],
            }
        ],
        "destinations": [{"backend": "v7"}],
    }
    with server.client() as client:
        job = wait_for_job(client, client.post("/v1/jobs", json=body).json()["job_id"])
    assert job["status"] == "succeeded", job
    item = v7.item("astronaut-pair")
    assert item.layout == {"version": 1, "type": "horizontal", "slots": ["a", "b"]}
    assert [(s["slot_name"], s["file_name"]) for s in item.slots] == [("a", "astronaut.png"), ("b", "astronaut.png")]
    assert [v7.uploads[s["upload_id"]] for s in item.slots] == [photo.read_bytes()] * 2
    assert sorted(a["context_keys"]["slot_names"][0] for a in item.annotations) == ["a", "b"]  # a face per slot
    assert item.imports == ["true"]


def test_bad_tracks_in_a_job_are_refused(server: Server) -> None:
    body = {"items": [{"name": "a", "slots": [{"url": "file:///nowhere.mp4"}]}], "tracks": {"enabled": False, "iou": 2}}
    with server.client() as client:
        response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert "tracks.iou was removed" in response.text
    assert "use tracks.distance_gate" in response.text  # an older client is told what to send instead


@pytest.mark.parametrize(
    ("destinations", "items_ids", "code"),
    [
        ([{"backend": "label_studio", "project": 1}], {"encord": DATA_HASH}, "backend_not_configured"),
        ([{"backend": "encord"}], {}, "invalid_argument"),
        ([{"backend": "s3"}], {}, "invalid_argument"),
    ],
)
def test_bad_destinations_are_refused_before_anything_runs(
    server: Server, photo: Path, destinations: list[dict[str, object]], items_ids: dict[str, str], code: str
) -> None:
    body = {
        "items": [{"name": "a", "slots": [{"url": photo.as_uri()}], "external_ids": items_ids}],
        "destinations": destinations,
    }
    with server.client() as client:
        response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code


def test_a_rejected_push_fails_the_item_with_a_backend_code(server: Server, photo: Path) -> None:
    body = {
        "items": [{"name": "a", "slots": [{"url": photo.as_uri()}], "external_ids": {"encord": "no-such-hash"}}],
        "destinations": [{"backend": "encord"}],
    }
    with server.client() as client:
        job = wait_for_job(client, client.post("/v1/jobs", json=body).json()["job_id"])
    assert job["status"] == "failed"
    assert job["errors"][0]["code"] in ("backend_rejected", "backend_unavailable")  # type: ignore[index]


@pytest.mark.parametrize("fmt", ["darwin", "labelstudio", "encord"])
def test_results_in_each_format(server: Server, photo: Path, fmt: str) -> None:
    body = {"items": [{"name": "astronaut.png", "slots": [{"url": photo.as_uri()}]}], "threshold": 0.45}
    with server.client() as client:
        job_id = client.post("/v1/jobs", json=body).json()["job_id"]
        assert wait_for_job(client, job_id)["status"] == "succeeded"
        result = client.get(f"/v1/jobs/{job_id}/result", params={"format": fmt}).json()
    assert result["job_id"] == job_id
    if fmt == "darwin":
        [doc] = result["items"]
        assert doc["version"] == "2.0"
        assert doc["annotations"][0]["bounding_box"]["w"] > 50
    elif fmt == "labelstudio":
        [task] = result["tasks"]
        region = task["predictions"][0]["result"][0]
        assert region["type"] == "rectanglelabels"
        assert region["value"]["rectanglelabels"] == ["face"]
        assert 0 < region["value"]["width"] < 100
        assert "<RectangleLabels" in result["label_configs"]["image"]
    else:
        [row] = result["label_rows"]
        [unit] = row["data_units"].values()
        box = unit["labels"]["objects"][0]["boundingBox"]
        assert 0 < box["w"] < 1
