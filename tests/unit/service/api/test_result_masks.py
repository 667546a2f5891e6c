"""``GET /v1/jobs/{id}/result``: ``coco_masks`` and ``darwin_masks`` choose how stored masks are written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.intake.config import WebhookConfig
from service.pipeline.predictions import item_predictions_to_json
from tests.builders import masked_item
from tests.unit.service.api.test_jobs import AUTH, error_code, item, post
from tests.unit.service.intake.helpers import WebhookApp, webhook_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebhookApp]:
    with webhook_app(tmp_path, WebhookConfig()) as a:
        yield a


def _finished_masked_job(app: WebhookApp) -> str:
    """A job whose one item is ``masked_item`` (a photo with masks, a tracked clip), stored as a worker stores it."""
    job_id = str(post(app, {"items": [item("case")]}).json()["job_id"])
    (lease,) = app.store.lease("w", max_items=1, lease_s=60)
    stored = json.loads(json.dumps(item_predictions_to_json(masked_item("case"))))
    app.store.complete("w", lease.item_id, stored)
    return job_id


def _result(app: WebhookApp, job_id: str, **params: str) -> Any:
    response = app.client.get(f"/v1/jobs/{job_id}/result", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def test_coco_masks_are_rle_by_default_and_polygons_on_request(app: WebhookApp) -> None:
    job_id = _finished_masked_job(app)
    default = _result(app, job_id, format="coco")
    polygon = _result(app, job_id, format="coco", coco_masks="polygon")
    kinds = [[type(a.get("segmentation")).__name__ for a in doc["annotations"]] for doc in (default, polygon)]
    assert kinds[0][:4] == ["dict", "dict", "dict", "list"]  # the row the segmenter left empty: its box polygon
    assert kinds[1][:4] == ["list", "dict", "list", "list"]  # the ring has a hole: RLE


def test_darwin_masks_are_polygons_by_default_and_raster_on_request(app: WebhookApp) -> None:
    job_id = _finished_masked_job(app)
    (default,) = _result(app, job_id, format="darwin")["items"]
    (raster,) = _result(app, job_id, format="darwin", darwin_masks="raster")["items"]
    assert sum("polygon" in a for a in default["annotations"]) == 3
    assert [a["slot_names"][0] for a in raster["annotations"] if a["name"] == "__raster_layer__"] == ["photo", "clip"]


@pytest.mark.parametrize(("param", "value"), [("coco_masks", "brush"), ("darwin_masks", "rle")])
def test_an_unknown_mask_style_is_a_422_naming_the_parameter(app: WebhookApp, param: str, value: str) -> None:
    job_id = _finished_masked_job(app)
    response = app.client.get(f"/v1/jobs/{job_id}/result", params={"format": "coco", param: value}, headers=AUTH)
    assert (response.status_code, error_code(response)) == (422, "invalid_argument")
    assert param in response.text
