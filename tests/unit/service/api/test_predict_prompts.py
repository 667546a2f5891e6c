"""``/v1/predict`` with ``prompts``: an open-vocabulary model runs its view for them (``ModelRegistry.prompted``)
and labels detections with the prompts' names; the form takes a string, JSON any ``PromptsIn`` form."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from models.errors import PromptsRequiredError
from models.prompts import PromptSet
from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes.health import router as health_router
from service.api.routes.predict import router
from service.api.state import AppState
from service.config import Settings
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from tests.fakes.promptable import BASE_VERSION, GatedPrompts, GridPrompts
from tests.unit.service.backends.test_ls_ml_backend import CentreBox

TOKEN = "predict-prompts-token-" + "p" * 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), np.full((60, 90, 3), 127, np.uint8))
    return path


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with _serve(tmp_path, GridPrompts()) as c:
        yield c


@contextmanager
def _serve(tmp_path: Path, grid: GridPrompts, **settings_fields: object) -> Iterator[TestClient]:
    settings = Settings(
        api_tokens=SecretStr(TOKEN),
        db_path=tmp_path / "jobs.db",
        work_dir=tmp_path,
        local_roots=[tmp_path],
        **settings_fields,  # type: ignore[arg-type]
    )
    models = []
    for spec, detector in (("fake:centre", CentreBox()), ("fake:gridprompts", grid)):
        batcher = DynamicBatcher(detector, max_batch_size=4, max_wait_ms=0)
        batcher.start()
        models.append(LoadedModel(spec, batcher))
    registry = ModelRegistry(models)
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(router)
    app.include_router(health_router)
    app.state.preannotate = AppState(
        settings=settings,
        auth=TokenAuth([TOKEN]),
        store=None,  # type: ignore[arg-type]  # /v1/predict never touches the job store
        fetcher=Fetcher(settings.fetch_policy()),
        models=registry,
    )
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            yield c
    finally:
        registry.close()


def test_an_uploads_prompts_string_labels_the_detections(client: TestClient, image: Path) -> None:
    prompts = "PED=pedestrian|person walking, car"
    response = client.post(
        "/v1/predict",
        files={"file": ("grey.png", image.read_bytes(), "image/png")},
        data={"model": "gridprompts", "prompts": prompts, "threshold": "0"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(d["label"], d["class_id"]) for d in body["detections"]] == [("PED", 0), ("car", 1)]
    assert body["model_version"] == f"{BASE_VERSION}+{PromptSet.parse(prompts).key}"


@pytest.mark.parametrize("prompts", [["PED", "car"], {"PED": "pedestrian", "car": ["car", "automobile"]}])
def test_a_urls_json_takes_a_list_or_an_object(client: TestClient, image: Path, prompts: object) -> None:
    body = {"url": image.as_uri(), "model": "gridprompts", "prompts": prompts, "threshold": 0.0}
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    assert [d["label"] for d in response.json()["detections"]] == ["PED", "car"]


@pytest.mark.parametrize(
    ("model", "prompts", "words"),
    [
        ("gridprompts", None, "open-vocabulary"),
        ("centre", "person", "classes of its own"),
        ("gridprompts", "a, A", "twice"),
    ],
)
def test_prompts_a_model_cannot_take_are_a_422(
    client: TestClient, image: Path, model: str, prompts: str | None, words: str
) -> None:
    fields = {"model": model} if prompts is None else {"model": model, "prompts": prompts}
    response = client.post("/v1/predict", files={"file": ("grey.png", image.read_bytes(), "image/png")}, data=fields)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_prompts"
    assert words in response.json()["error"]["message"]


def test_the_event_loop_answers_while_a_prompt_set_is_encoded(tmp_path: Path, image: Path) -> None:
    slow = "PED=pedestrian, car"
    gated = GatedPrompts(gated=PromptSet.parse(slow).key)
    answers: list[int] = []
    with _serve(tmp_path, gated) as client:
        upload = {"file": ("grey.png", image.read_bytes(), "image/png")}
        fields = {"model": "gridprompts", "prompts": slow, "threshold": "0"}
        predict = threading.Thread(
            target=lambda: answers.append(client.post("/v1/predict", files=upload, data=fields).status_code),
            daemon=True,
        )
        predict.start()
        try:
            assert gated.entered.wait(timeout=10)  # the request is encoding its prompts
            health = threading.Thread(target=lambda: answers.append(client.get("/healthz").status_code), daemon=True)
            health.start()
            health.join(timeout=5)
            assert not health.is_alive(), "/healthz did not answer while a prompt set was encoded"
            assert answers == [200]
        finally:
            gated.gate.set()
        predict.join(timeout=10)
    assert answers == [200, 200]


def test_prompts_over_max_prompt_classes_are_a_422(tmp_path: Path, image: Path) -> None:
    with _serve(tmp_path, GridPrompts(), max_prompt_classes=2) as client:
        upload = {"file": ("grey.png", image.read_bytes(), "image/png")}
        response = client.post("/v1/predict", files=upload, data={"model": "gridprompts", "prompts": "a, b, c"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_prompts"
    assert "PREANNOTATE_MAX_PROMPT_CLASSES" in response.json()["error"]["message"]


def test_prompts_the_model_refuses_while_encoding_are_a_422(tmp_path: Path, image: Path) -> None:
    refusing = GatedPrompts(error=PromptsRequiredError("prompt 'red car' is 18 tokens; the model reads 16"))
    with _serve(tmp_path, refusing) as client:
        upload = {"file": ("grey.png", image.read_bytes(), "image/png")}
        response = client.post("/v1/predict", files=upload, data={"model": "gridprompts", "prompts": "red car"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_prompts"
    assert "18 tokens" in response.json()["error"]["message"]
