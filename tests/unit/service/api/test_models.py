"""``GET /v1/models``: the loaded models, then the segmenter (``kind: segmenter``) when one is set."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from models.prompts import PromptSet
from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes import models as models_routes
from service.api.state import AppState
from service.config import Settings
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.remote_models import ModelCatalog, RemoteModels
from tests.fakes.promptable import BASE_VERSION, GridPrompts
from tests.fakes.segmenter import EllipseSegmenter
from tests.unit.service.api.test_jobs_segmenter import BigBox
from tests.unit.service.intake.helpers import MODEL_VERSION

TOKEN = "models-test-token-" + "m" * 20


@contextmanager
def listed(tmp_path: Path, catalog: ModelCatalog, segmenter: str | None) -> Iterator[list[dict[str, Any]]]:
    settings = Settings(api_tokens=SecretStr(TOKEN), db_path=tmp_path / "jobs.db", model="fake:centre")
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(models_routes.router)
    app.state.preannotate = AppState(
        settings=settings.model_copy(update={"segmenter": segmenter}),
        auth=TokenAuth([TOKEN]),
        store=None,  # type: ignore[arg-type]  # the models route never touches the job store
        fetcher=None,  # type: ignore[arg-type]
        models=catalog,
    )
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.get("/v1/models")
        assert response.status_code == 200, response.text
        yield response.json()


@contextmanager
def registry(segmenter: EllipseSegmenter | None) -> Iterator[ModelRegistry]:
    batcher = DynamicBatcher(BigBox(), max_batch_size=4, max_wait_ms=0)
    try:
        yield ModelRegistry([LoadedModel(spec="fake:centre", batcher=batcher)], segmenter=segmenter)
    finally:
        batcher.close()


def test_the_loaded_segmenter_is_listed_after_the_models(tmp_path: Path) -> None:
    with registry(EllipseSegmenter(batch_size=8)) as models, listed(tmp_path, models, "fake:ellipse") as body:
        model, segmenter = body
    assert (model["spec"], model["kind"], model["default"]) == ("fake:centre", "detector", True)
    assert segmenter == {
        "spec": "fake:ellipse",
        "kind": "segmenter",
        "known": True,
        "name": "ellipse",
        "version": "e1",
        "classes": None,
        "runtime": "numpy",
        "device": "cpu",
        "max_batch_size": 8,
        "default": False,
        "open_vocabulary": False,
        "thresholds": None,
    }


def test_an_open_vocabulary_model_says_so_and_has_no_classes(tmp_path: Path) -> None:
    batchers = [DynamicBatcher(d, max_batch_size=4, max_wait_ms=0) for d in (BigBox(), GridPrompts())]
    models = ModelRegistry([LoadedModel("fake:centre", batchers[0]), LoadedModel("fake:gridprompts", batchers[1])])
    try:
        models.prompted("gridprompts", PromptSet.parse("person"))  # a view is no model of its own to list
        with listed(tmp_path, models, None) as body:
            listing = {m["spec"]: (m["open_vocabulary"], m["classes"], m["version"]) for m in body}
    finally:
        models.close()
    assert listing == {"fake:centre": (False, ["face"], MODEL_VERSION), "fake:gridprompts": (True, [], BASE_VERSION)}


def test_without_a_segmenter_only_the_models_are_listed(tmp_path: Path) -> None:
    with registry(None) as models, listed(tmp_path, models, None) as body:
        assert [(m["spec"], m["kind"]) for m in body] == [("fake:centre", "detector")]


def test_in_distributed_mode_the_segmenter_is_listed_by_its_spec(tmp_path: Path) -> None:
    remote = RemoteModels(list, "fake:centre", segmenter_spec="hf:/models/sam")
    with listed(tmp_path, remote, "hf:/models/sam") as body:
        pending, segmenter = body
    assert (pending["spec"], pending["known"]) == ("fake:centre", False)
    assert (segmenter["spec"], segmenter["kind"], segmenter["known"], segmenter["version"]) == (
        "hf:/models/sam",
        "segmenter",
        False,
        None,
    )
