"""A minimal app around the webhook routes: real SQLite job store, a fake model, webhook config injected."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from models.base import Detector
from models.types import Detections, ModelInfo, RGBImage
from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.routes import jobs as jobs_routes
from service.api.routes import webhooks
from service.api.state import AppState
from service.config import Settings
from service.intake.config import WebhookConfig
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.batching import DynamicBatcher
from service.pipeline.fetch import Fetcher
from service.queue.sqlite_store import SqliteJobStore

TOKEN = "webhook-test-api-token-" + "t" * 20
MODEL_VERSION = "centre-00000001"


class CentreBox(Detector):
    """One ``face`` in the middle of every frame (never called by these tests: no workers run)."""

    def __init__(self, *, makes_masks: bool = False) -> None:
        self.info = ModelInfo(
            spec="fake:centre",
            name="centre",
            version=MODEL_VERSION,
            class_names=("face",),
            runtime="numpy",
            device="cpu",
            batch_size=4,
            input_size_px=None,
            makes_masks=makes_masks,
        )

    def _detect_batch(self, images: Sequence[RGBImage], threshold: float) -> list[Detections]:
        box = np.array([[1, 1, 2, 2]], np.float32)
        return [Detections(box, np.array([0.9], np.float32), np.array([0], np.int64)) for _ in images]


@dataclass
class WebhookApp:
    client: TestClient
    store: SqliteJobStore
    state: AppState

    def jobs(self) -> int:
        """Jobs in the store, all tenants (a count the store API does not offer)."""
        with closing(sqlite3.connect(self.state.settings.db_path)) as db:
            return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


def make_models(*, makes_masks: bool = False) -> tuple[ModelRegistry, DynamicBatcher]:
    batcher = DynamicBatcher(CentreBox(makes_masks=makes_masks), max_batch_size=4, max_wait_ms=0)
    batcher.start()
    return ModelRegistry([LoadedModel(spec="fake:centre", batcher=batcher)]), batcher


@contextmanager
def webhook_app(
    tmp_path: Path,
    config: WebhookConfig,
    *,
    tokens: Sequence[str] = (TOKEN,),
    store_clock: Callable[[], float] = time.time,
    makes_masks: bool = False,
    **settings: Any,
) -> Iterator[WebhookApp]:
    """The webhooks and jobs routers with ``config`` as the webhook settings; the store reads ``store_clock``;
    ``makes_masks``: the model makes masks itself (an instance-segmentation model)."""
    full = Settings(api_tokens=SecretStr(",".join(tokens)), db_path=tmp_path / "jobs.db", **settings)
    registry, batcher = make_models(makes_masks=makes_masks)
    store = SqliteJobStore(full.db_path, max_attempts=full.max_attempts, clock=store_clock)
    app = FastAPI()
    register_exception_handlers(app)
    app.include_router(jobs_routes.router)
    app.include_router(webhooks.router)
    app.dependency_overrides[webhooks.dep_webhook_config] = lambda: config
    state = AppState(
        settings=full, auth=TokenAuth(tokens), store=store, fetcher=Fetcher(full.fetch_policy()), models=registry
    )
    app.state.preannotate = state
    try:
        with TestClient(app) as client:
            yield WebhookApp(client, store, state)
    finally:
        store.close()
        batcher.close()
