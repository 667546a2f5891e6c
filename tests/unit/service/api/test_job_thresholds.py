"""A job body's ``thresholds``, on the real jobs router and SQLite store: ``{"CLASS": t}`` or a whole thresholds file,
pinned as the job's ``class_thresholds``; a class the model lacks is a 422 at submit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.intake.config import WebhookConfig
from service.spec.job import JobSpec
from service.spec.thresholds import ClassThreshold, ThresholdsFile
from tests.unit.service.intake.helpers import TOKEN, WebhookApp, webhook_app
from tests.unit.service.queue.store_contract import FakeClock

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ITEM = {"name": "a", "slots": [{"url": "https://media.example.com/a.jpg"}]}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebhookApp]:
    with webhook_app(tmp_path, WebhookConfig(), store_clock=FakeClock(time.time())) as a:
        yield a


def post(app: WebhookApp, body: dict[str, Any]) -> httpx.Response:
    return app.client.post("/v1/jobs", json={"items": [ITEM], **body}, headers=AUTH)


def leased_spec(app: WebhookApp, response: httpx.Response) -> JobSpec:
    assert response.status_code in (200, 201, 202), response.text
    (lease,) = app.store.lease("w", max_items=1, lease_s=60.0)
    return lease.spec


def test_a_class_map_is_pinned_as_the_jobs_class_thresholds(app: WebhookApp) -> None:
    spec = leased_spec(app, post(app, {"threshold": 0.5, "thresholds": {"face": 0.8}}))
    assert spec.class_thresholds == {"face": 0.8}
    assert spec.threshold == 0.5


def test_a_whole_thresholds_file_pins_its_calibrated_classes(app: WebhookApp) -> None:
    file = ThresholdsFile(
        model_version="centre-00000001",
        classes={"face": ClassThreshold(threshold=0.35, f1=0.9, support=40)},
    )
    spec = leased_spec(app, post(app, {"thresholds": file.model_dump(mode="json")}))
    assert spec.class_thresholds == {"face": 0.35}


def test_a_file_whose_classes_are_all_uncalibrated_pins_no_class_threshold(app: WebhookApp) -> None:
    file = ThresholdsFile(classes={"face": ClassThreshold(threshold=0.1, calibrated=False, reason="support 1")})
    spec = leased_spec(app, post(app, {"thresholds": file.model_dump(mode="json")}))
    assert spec.class_thresholds == {}


def test_a_job_without_thresholds_keeps_its_stored_form(app: WebhookApp) -> None:
    spec = leased_spec(app, post(app, {}))
    assert spec.class_thresholds is None
    assert "class_thresholds" not in spec.to_stored()


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ({"cat": 0.4}, "unknown class(es) in thresholds cat; the model has: face"),
        ({"face": 1.5}, "threshold of 'face' must be in [0, 1], got 1.5"),
        ({"face": True}, "threshold of 'face' must be a number, got True"),
        ({"face": "0.4"}, "threshold of 'face' must be a number"),
        ({" ": 0.4}, "a class threshold needs a class name"),
        ({"classes": {"face": {"threshold": 2}}}, "thresholds.classes.face.threshold"),
    ],
)
def test_bad_thresholds_are_a_422_and_store_nothing(app: WebhookApp, thresholds: dict[str, Any], message: str) -> None:
    response = post(app, {"thresholds": thresholds})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_argument"
    assert message in response.json()["error"]["message"]
    assert app.jobs() == 0


# -- thresholds saved for the pinned model version ---------------------------------------------------------------

VERSION = "centre-00000001"  # CentreBox's


def save(app: WebhookApp, version: str, face: float) -> None:
    app.store.save_thresholds(
        version, ThresholdsFile(model_version=version, classes={"face": ClassThreshold(threshold=face)})
    )


def test_a_job_without_thresholds_is_pinned_with_those_saved_for_its_model_version(app: WebhookApp) -> None:
    save(app, VERSION, 0.3)
    spec = leased_spec(app, post(app, {}))
    assert (spec.model_version, spec.class_thresholds) == (VERSION, {"face": 0.3})


def test_another_versions_saved_thresholds_are_never_applied(app: WebhookApp) -> None:
    save(app, "centre-00000002", 0.3)
    save(app, f"{VERSION}+0123456789ab", 0.2)
    assert leased_spec(app, post(app, {})).class_thresholds is None


@pytest.mark.parametrize(("body", "pinned"), [({"face": 0.8}, {"face": 0.8}), ({}, {})])
def test_a_bodys_thresholds_win_over_the_saved_ones(
    app: WebhookApp, body: dict[str, float], pinned: dict[str, float]
) -> None:
    save(app, VERSION, 0.3)
    assert leased_spec(app, post(app, {"thresholds": body})).class_thresholds == pinned
