"""POST /v1/evaluate: JSON bodies and multipart uploads in, the summary out; auth, limits and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.middleware import BodySizeLimit
from service.api.routes import evaluate as evaluate_route
from tests.unit.service.evaluate.fixtures import coco, coco_results, ls_track_24, thirty_fps_benchmark

AUTH = {"Authorization": "Bearer tok"}
GT = coco({"a.jpg": [("car", (0, 0, 100, 100)), ("person", (200, 0, 300, 100))]})
PREDS = coco_results(GT, {"a.jpg": [("car", (0, 0, 100, 100), 0.9), ("car", (0, 0, 100, 95), 0.5)]})


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # The route needs only the auth from the app state; the real app adds it with the other routers.
    app = FastAPI()
    register_exception_handlers(app)
    app.add_middleware(BodySizeLimit, max_json_bytes=64 * 1024, max_upload_bytes=128 * 1024)
    app.include_router(evaluate_route.router)
    app.state.preannotate = SimpleNamespace(auth=TokenAuth(["tok"]))
    with TestClient(app) as test_client:
        yield test_client


def body(**overrides: Any) -> dict[str, Any]:
    return {"benchmark": GT, "candidates": [{"name": "yolo", "data": PREDS}], "iou": 0.5} | overrides


def test_json_body(client: TestClient) -> None:
    response = client.post("/v1/evaluate", json=body(thresholds={"min_precision": 0.9}), headers=AUTH)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["candidate"], summary["tp"], summary["fp"], summary["fn"]) == ("yolo", 1, 1, 1)
    assert summary["precision"] == 0.5
    assert summary["map50"] is not None
    assert summary["passed"] is False
    assert summary["failed_checks"] == ["precision 0.5000 < 0.9000"]


def test_multipart_uploads(client: TestClient) -> None:
    files = [
        ("benchmark", ("gt.json", json.dumps(GT), "application/json")),
        ("candidate", ("v1.json", json.dumps(PREDS), "application/json")),
        ("candidate", ("v2.json", json.dumps(PREDS[:1]), "application/json")),
    ]
    response = client.post("/v1/evaluate", files=files, data={"iou": "0.5", "min_f1": "0.6"}, headers=AUTH)
    assert response.status_code == 200, response.text
    by_name = {c["candidate"]: c for c in response.json()["candidates"]}
    assert (by_name["v1"]["passed"], by_name["v2"]["passed"]) == (False, True)  # F1 0.5 vs 2/3


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": body()}, 401, "unauthorized"),  # no token
        ({"json": body(iou=0), "headers": AUTH}, 422, "invalid_argument"),
        ({"json": body(thresholds={"min_f1": False}), "headers": AUTH}, 422, "invalid_argument"),  # not 0.0
        ({"json": body(candidates=[]), "headers": AUTH}, 422, "invalid_argument"),
        ({"json": body(benchmark={"hello": 1}), "headers": AUTH}, 415, "unsupported_media"),
        ({"json": body(benchmark=PREDS), "headers": AUTH}, 422, "invalid_argument"),  # results need a COCO benchmark
        ({"content": b"x", "headers": AUTH | {"content-type": "text/plain"}}, 415, "unsupported_media"),
        ({"files": [("benchmark", ("gt.json", b"{", "application/json"))], "headers": AUTH}, 422, "invalid_argument"),
        (
            {"json": body(benchmark={"images": [], "annotations": [], "pad": "x" * 70_000}), "headers": AUTH},
            413,
            "request_too_large",
        ),
    ],
)
def test_errors(client: TestClient, kwargs: dict[str, Any], status: int, code: str) -> None:
    response = client.post("/v1/evaluate", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_a_label_studio_candidate_takes_its_labeling_config(client: TestClient) -> None:
    config = '<View><Video name="video" value="$video" framerate="24"/><VideoRectangle name="box" toName="video"/>'
    config += "</View>"
    cand = {"name": "ls", "data": [ls_track_24({})], "label_config": config}
    response = client.post("/v1/evaluate", json=body(benchmark=thirty_fps_benchmark(), candidates=[cand]), headers=AUTH)
    assert response.status_code == 200, response.text
    assert (response.json()["tp"], response.json()["fn"]) == (32, 0)  # 24 fps LS frames matched by time
    cand["label_config"] = "<View"
    response = client.post("/v1/evaluate", json=body(benchmark=thirty_fps_benchmark(), candidates=[cand]), headers=AUTH)
    assert response.status_code == 422
    assert "labeling config" in response.json()["error"]["message"]


def test_form_numbers_are_checked(client: TestClient) -> None:
    files = [
        ("benchmark", ("gt.json", json.dumps(GT), "application/json")),
        ("candidate", ("v1.json", json.dumps(PREDS), "application/json")),
    ]
    for data, fragment in (({"min_f1": "high"}, "must be numbers"), ({"iou": "1.5"}, "iou")):
        response = client.post("/v1/evaluate", files=files, data=data, headers=AUTH)
        assert response.status_code == 422
        assert fragment in response.json()["error"]["message"]


def test_bad_upload_names_the_file(client: TestClient) -> None:
    files = [
        ("benchmark", ("gt.json", json.dumps(GT), "application/json")),
        ("candidate", ("broken.json", b"{not json", "application/json")),
    ]
    response = client.post("/v1/evaluate", files=files, headers=AUTH)
    assert response.status_code == 422
    assert "broken.json" in response.json()["error"]["message"]


def test_openapi_documents_both_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/v1/evaluate"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert "$ref" not in json.dumps(content)  # self-contained: no component to register
