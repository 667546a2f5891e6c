"""The /ls ML backend routes on a minimal app with a fake detector: auth, setup, predict order, media trust."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from models.base import Detector
from models.types import Detections, ModelInfo, RGBImage
from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes.ls_ml_backend import LsBackendState, router
from service.api.state import AppState
from service.backends.label_studio import LabelStudioClient, LabelStudioConfig
from service.config import Settings
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from tests.fakes.promptable import BASE_VERSION, GridPrompts
from tests.unit.service.backends.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio, MediaHost, serving

TOKEN = "ls-backend-test-token-" + "z" * 20
CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="Face"/></RectangleLabels></View>"""


class CentreBox(Detector):
    """One ``face`` in the middle half of every frame."""

    def __init__(self) -> None:
        self.info = ModelInfo(
            spec="fake:centre",
            name="centre",
            version="centre-00000001",
            class_names=("face",),
            runtime="numpy",
            device="cpu",
            batch_size=4,
            input_size_px=None,
        )

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        out = []
        for image in images:
            h, w = image.shape[:2]
            xyxy = np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], np.float32)
            out.append(Detections(xyxy, np.array([0.9], np.float32), np.array([0], np.int64)))
        return out


def basic(password: str, user: str = "label-studio") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    cv2.imwrite(str(root / "a.png"), np.full((40, 80, 3), 128, np.uint8))
    return root


def build(media: Path, tmp_path: Path, allowed_hosts: Sequence[str] = ()) -> tuple[FastAPI, DynamicBatcher]:
    settings = Settings(
        api_tokens=SecretStr(TOKEN),
        local_roots=[media],
        fetch_allowed_hosts=list(allowed_hosts),
        db_path=tmp_path / "jobs.db",
        work_dir=tmp_path,
    )
    batcher = DynamicBatcher(CentreBox(), max_batch_size=4, max_wait_ms=0)
    batcher.start()
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(router)
    app.state.preannotate = AppState(
        settings=settings,
        auth=TokenAuth([TOKEN]),
        store=None,  # type: ignore[arg-type]  # the /ls routes never touch the job store
        fetcher=Fetcher(settings.fetch_policy()),
        models=ModelRegistry([LoadedModel(spec="fake:centre", batcher=batcher)]),
    )
    return app, batcher


@pytest.fixture
def app(media: Path, tmp_path: Path) -> Iterator[FastAPI]:
    app, batcher = build(media, tmp_path)
    yield app
    batcher.close()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def setup_body(hostname: str = "http://localhost:8080") -> dict[str, Any]:
    return {
        "project": "7.1795398503",
        "schema": CONFIG,
        "hostname": hostname,
        "access_token": "creator-legacy-token",
        "extra_params": None,
    }


def predict_body(*images: str) -> dict[str, Any]:
    return {"tasks": [{"id": i + 1, "data": {"image": url}} for i, url in enumerate(images)], "project": "7.1795398503"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (basic(TOKEN), 200),
        (basic(TOKEN, user=""), 200),  # the user name is not checked
        ({"Authorization": f"Bearer {TOKEN}"}, 200),
        ({}, 401),
        (basic("wrong"), 401),
        ({"Authorization": "Basic !!!not-base64"}, 401),
        ({"Authorization": f"Token {TOKEN}"}, 401),
    ],
)
def test_auth(client: TestClient, headers: dict[str, str], status: int) -> None:
    answer = client.get("/ls/health", headers=headers)
    assert answer.status_code == status
    if status == 401:
        assert answer.json()["error"]["code"] == "unauthorized"
    else:
        assert answer.json()["status"] == "UP"


def test_webhook_takes_anything_and_does_nothing(client: TestClient) -> None:
    answer = client.post("/ls/webhook", json={"action": "TASKS_CREATED", "project": {"token": "x"}})
    assert answer.json() == {"status": "ok"}


def test_setup_and_versions_agree(client: TestClient) -> None:
    answer = client.post("/ls/setup", json=setup_body(), headers=basic(TOKEN))
    assert answer.json() == {"model_version": "centre-00000001"}
    assert client.get("/ls/versions", headers=basic(TOKEN)).json() == {"versions": ["centre-00000001"]}
    bad = client.post("/ls/setup", json={**setup_body(), "schema": "<View"}, headers=basic(TOKEN))
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_argument")


def test_predict_answers_one_entry_per_task_in_order(client: TestClient, media: Path) -> None:
    good = (media / "a.png").as_uri()
    client.post("/ls/setup", json=setup_body(), headers=basic(TOKEN))
    body = predict_body(good, (media / "missing.png").as_uri(), good)
    results = client.post("/ls/predict", json=body, headers=basic(TOKEN)).json()["results"]

    assert len(results) == 3
    assert results[1] == []  # failed: no prediction, so LS asks again next time
    for entry in (results[0], results[2]):
        assert entry["model_version"] == "centre-00000001"
        (region,) = entry["result"]
        assert region["value"]["rectanglelabels"] == ["Face"]
        assert region["value"] | {"rectanglelabels": None} == {
            "x": 25.0,
            "y": 25.0,
            "width": 50.0,
            "height": 50.0,
            "rotation": 0,
            "rectanglelabels": None,
        }


def test_a_failed_task_among_good_ones_is_an_empty_entry_and_a_warning(
    client: TestClient, app: FastAPI, media: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeLabelStudio()
    fake.media["/data/upload/1/a.png"] = (media / "a.png").read_bytes()
    with serving(fake) as url, caplog.at_level(logging.WARNING, logger="service.api.routes.ls_ml_backend"):
        ls = LsBackendState(app.state.preannotate)
        ls.client = LabelStudioClient(LabelStudioConfig(url=url, api_key=SecretStr(LEGACY_TOKEN)))
        app.state.ls_ml_backend = ls
        client.post("/ls/setup", json=setup_body(), headers=basic(TOKEN))
        body = predict_body("/data/upload/1/a.png", "/data/upload/1/gone.png?sig=canary-sig")
        answer = client.post("/ls/predict", json=body, headers=basic(TOKEN))
        ls.close()

    assert answer.status_code == 200, answer.text
    good, failed = answer.json()["results"]
    assert len(good["result"]) == 1
    assert failed == []  # LS wants one entry per task; this one stores nothing, and LS asks again later
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith(f"ls predict: task 2 ({url}/data/upload/1/gone.png#")  # the task and its redacted URL
    assert "input_not_found" in line
    assert LEGACY_TOKEN not in caplog.text
    assert "canary-sig" not in caplog.text


def test_a_predict_where_every_task_fails_is_an_error_status(
    client: TestClient, media: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client.post("/ls/setup", json=setup_body(), headers=basic(TOKEN))
    missing = [(media / f"missing-{i}.png").as_uri() for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="service.api.routes.ls_ml_backend"):
        answer = client.post("/ls/predict", json=predict_body(*missing), headers=basic(TOKEN))

    # LS's error path: a non-2xx is logged by LS and saves nothing, where 200 with [] entries read as success.
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error["code"] == "input_not_found"
    assert error["message"].startswith("no prediction for all 5 tasks: task 1: ")
    assert "missing-0.png" in error["message"]
    assert error["message"].endswith("; and 2 more")
    assert [r.levelname for r in caplog.records].count("WARNING") == 5  # every task named in the log


def test_predict_without_a_config_is_refused(client: TestClient, media: Path) -> None:
    body = {"tasks": [{"id": 1, "data": {}}], "project": "99.1"}
    answer = client.post("/ls/predict", json=body, headers=basic(TOKEN))
    assert answer.status_code == 422


def test_predict_uses_the_label_config_it_is_sent(client: TestClient, media: Path) -> None:
    body = {**predict_body((media / "a.png").as_uri()), "project": "8.1", "label_config": CONFIG}
    (entry,) = client.post("/ls/predict", json=body, headers=basic(TOKEN)).json()["results"]
    assert len(entry["result"]) == 1


def test_a_host_named_by_setup_is_not_trusted(client: TestClient) -> None:
    host = MediaHost(b"\x89PNG")
    with serving(host) as url:
        client.post("/ls/setup", json=setup_body(hostname=url), headers=basic(TOKEN))
        answer = client.post("/ls/predict", json=predict_body("/data/upload/1/a.png"), headers=basic(TOKEN))
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "url_not_allowed")
    assert host.authorizations == []  # never even asked


def test_an_allowed_setup_host_is_fetched_without_any_token(media: Path, tmp_path: Path) -> None:
    host = MediaHost((media / "a.png").read_bytes())
    with serving(host) as url:
        app, batcher = build(media, tmp_path, allowed_hosts=[url.removeprefix("http://")])
        with TestClient(app) as client:
            client.post("/ls/setup", json=setup_body(hostname=url), headers=basic(TOKEN))
            answer = client.post("/ls/predict", json=predict_body("/data/upload/1/a.png"), headers=basic(TOKEN))
        batcher.close()
    (entry,) = answer.json()["results"]
    assert len(entry["result"]) == 1
    assert host.authorizations == [None]  # not ours, and not /setup's access_token


def test_the_configured_label_studio_gets_its_key(client: TestClient, app: FastAPI, media: Path) -> None:
    fake = FakeLabelStudio()
    fake.media["/data/upload/1/a.png"] = (media / "a.png").read_bytes()
    with serving(fake) as url:
        ls = LsBackendState(app.state.preannotate)
        ls.client = LabelStudioClient(LabelStudioConfig(url=url, api_key=SecretStr(LEGACY_TOKEN)))
        app.state.ls_ml_backend = ls
        client.post("/ls/setup", json=setup_body(hostname="http://elsewhere.example"), headers=basic(TOKEN))
        body = predict_body("/data/upload/1/a.png", f"{url}/data/upload/1/a.png")
        results = client.post("/ls/predict", json=body, headers=basic(TOKEN)).json()["results"]
        ls.close()
    assert [len(r["result"]) for r in results] == [1, 1]
    assert [r.authorization for r in fake.requests] == [f"Token {LEGACY_TOKEN}"] * 2


def decoder_surprise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Image decoding raises what no check foresaw, naming the file it read (a scratch file)."""

    def boom(path: Path, limits: object) -> None:
        raise ValueError(f"cannot decode {path}")

    monkeypatch.setattr("service.pipeline.images.load_rgb", boom)


def test_a_decoder_surprise_names_no_scratch_path_and_logs_the_stack(
    client: TestClient,
    app: FastAPI,
    media: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeLabelStudio()
    fake.media["/data/upload/1/a.png"] = (media / "a.png").read_bytes()
    decoder_surprise(monkeypatch)
    with serving(fake) as url, caplog.at_level(logging.WARNING, logger="service"):
        ls = LsBackendState(app.state.preannotate)
        ls.client = LabelStudioClient(LabelStudioConfig(url=url, api_key=SecretStr(LEGACY_TOKEN)))
        app.state.ls_ml_backend = ls
        client.post("/ls/setup", json=setup_body(), headers=basic(TOKEN))
        answer = client.post("/ls/predict", json=predict_body("/data/upload/1/a.png"), headers=basic(TOKEN))
        ls.close()

    assert answer.status_code == 500, answer.text
    error = answer.json()["error"]
    assert error == {
        **error,
        "code": "internal",
        "message": "no prediction for the task: task 1: task 1 failed unexpectedly",
    }
    assert str(tmp_path) not in answer.text
    assert "ValueError" not in answer.text
    (record,) = [r for r in caplog.records if r.name == "service.api.routes.ls_ml_backend"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.getMessage().startswith(f"ls predict: task 1 ({url}/data/upload/1/a.png#")
    assert "preannotate-ls-" not in record.getMessage()  # the log line names the URL, not the scratch file


def test_a_decoder_surprise_among_good_tasks_is_an_empty_entry(
    client: TestClient, media: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client.post("/ls/setup", json=setup_body(), headers=basic(TOKEN))
    real = __import__("service.pipeline.images", fromlist=["load_rgb"]).load_rgb

    def boom_on_b(path: Path, limits: Any) -> Any:
        if path.name == "b.png":
            raise ValueError(f"cannot decode {path}")
        return real(path, limits)

    cv2.imwrite(str(media / "b.png"), np.full((40, 80, 3), 128, np.uint8))
    monkeypatch.setattr("service.pipeline.images.load_rgb", boom_on_b)
    with caplog.at_level(logging.WARNING, logger="service.api.routes.ls_ml_backend"):
        body = predict_body((media / "a.png").as_uri(), (media / "b.png").as_uri())
        answer = client.post("/ls/predict", json=body, headers=basic(TOKEN))
    good, failed = answer.json()["results"]
    assert len(good["result"]) == 1
    assert failed == []
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.getMessage().startswith("ls predict: task 2 (file://")


PROMPT_CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image"><Label value="hard hat"/><Label value="PED" prompt="pedestrian"/>
<Label value="vehicle" predicted_values="car"/><Label value="car"/></RectangleLabels></View>"""


@pytest.fixture
def open_vocabulary(media: Path, tmp_path: Path) -> Iterator[tuple[TestClient, GridPrompts]]:
    app, batcher = build(media, tmp_path)
    batcher.close()
    model = GridPrompts()
    grid = DynamicBatcher(model, max_batch_size=4, max_wait_ms=0)
    grid.start()
    app.state.preannotate.models = ModelRegistry([LoadedModel(spec="fake:gridprompts", batcher=grid)])
    with TestClient(app) as c:
        yield c, model
    grid.close()


def labels_of(entry: dict[str, Any]) -> list[list[str]]:
    regions = sorted(entry["result"], key=lambda r: r["value"]["x"])
    return [r["value"]["rectanglelabels"] for r in regions]


def test_an_open_vocabulary_model_predicts_under_the_projects_labels(
    open_vocabulary: tuple[TestClient, GridPrompts], media: Path
) -> None:
    client, model = open_vocabulary
    extra = {"threshold": 0.0, "aliases": {"helmet": "hard hat"}, "prompt_map": {"vehicle": ["truck", "bus"]}}
    setup = client.post(
        "/ls/setup", json={**setup_body(), "schema": PROMPT_CONFIG, "extra_params": extra}, headers=basic(TOKEN)
    )
    assert setup.status_code == 200, setup.text
    version = setup.json()["model_version"]
    assert version.startswith(BASE_VERSION + "+")
    (entry,) = client.post("/ls/predict", json=predict_body((media / "a.png").as_uri()), headers=basic(TOKEN)).json()[
        "results"
    ]
    assert labels_of(entry) == [["hard hat"], ["PED"], ["vehicle"], ["car"]]
    assert entry["model_version"] == version  # what /setup answered: LS's "already predicted" check matches
    (key,) = model.encoded
    assert version == f"{BASE_VERSION}+{key}"
    assert [(v.prompts.class_names, v.prompts.texts) for v in model._views.values()] == [
        (("hard hat", "PED", "vehicle", "car"), ("helmet", "pedestrian", "truck", "bus", "car"))
    ]


@pytest.mark.parametrize(
    "prompts", ["PED=person, car, bus", ["PED", "car", "bus"], {"PED": "person", "car": ["car"], "bus": "bus"}]
)
def test_explicit_prompts_in_extra_params_win(
    open_vocabulary: tuple[TestClient, GridPrompts], media: Path, prompts: object
) -> None:
    """Every form a job body takes; the class names convert by label name alone: ``car`` is the label car, not
    where ``predicted_values`` sends a model's car (vehicle), and ``bus`` (no label, no alias) is dropped."""
    client, _ = open_vocabulary
    extra = {"threshold": 0.0, "prompts": prompts, "aliases": {"bus": "vehicle"}}
    setup = client.post(
        "/ls/setup", json={**setup_body(), "schema": PROMPT_CONFIG, "extra_params": extra}, headers=basic(TOKEN)
    )
    assert setup.status_code == 200, setup.text
    body = predict_body((media / "a.png").as_uri())
    (entry,) = client.post("/ls/predict", json=body, headers=basic(TOKEN)).json()["results"]
    assert labels_of(entry) == [["PED"], ["car"]]


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"prompts": ""}, "invalid_prompts"),
        ({"prompts": 3}, "invalid_prompts"),
        ({"prompts": ["car", 3]}, "invalid_prompts"),
        ({"prompts": {"car": 3}}, "invalid_prompts"),
        ({"prompts": "vehicle=car, car"}, "invalid_prompts"),
        ({"prompt_map": {"bus": "bus"}}, "invalid_prompts"),
        ({"prompt_map": ["PED"]}, "invalid_argument"),
    ],
)
def test_unusable_prompts_are_refused_at_setup(
    open_vocabulary: tuple[TestClient, GridPrompts], extra: dict[str, Any], code: str
) -> None:
    client, _ = open_vocabulary
    answer = client.post(
        "/ls/setup", json={**setup_body(), "schema": PROMPT_CONFIG, "extra_params": extra}, headers=basic(TOKEN)
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, code)
