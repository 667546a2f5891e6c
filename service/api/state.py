"""What a running server holds: settings, auth, the job store, the fetcher, and (once loaded) the models."""

from __future__ import annotations

from dataclasses import dataclass

from service.api.auth import TokenAuth
from service.backends.registry import Backends
from service.config import Settings
from service.jobs.calibrated import SavedThresholds
from service.jobs.previews import PreviewService
from service.jobs.worker import WorkerPool
from service.loaded_models import ModelRegistry
from service.pipeline.fetch import Fetcher
from service.queue.store import JobStore
from service.remote_models import RemoteModels


@dataclass(slots=True)
class AppState:
    settings: Settings
    auth: TokenAuth
    store: JobStore
    fetcher: Fetcher
    models: ModelRegistry | RemoteModels | None = None  # RemoteModels in distributed mode
    workers: WorkerPool | None = None
    backends: Backends | None = None
    load_error: str | None = None
    draining: bool = False
    saved: SavedThresholds | None = None
    previews: PreviewService | None = None  # made on the first preview request (routes/previews.py)

    def saved_thresholds(self) -> SavedThresholds:
        """The store's calibrated thresholds by model version, cached ``PREANNOTATE_THRESHOLDS_CACHE_S``."""
        if self.saved is None:
            self.saved = SavedThresholds(self.store, ttl_s=self.settings.thresholds_cache_s)
        return self.saved

    @property
    def ready(self) -> bool:
        """Models loaded and warmed (or, distributed, the published catalog attached), and not shutting down."""
        return self.models is not None and not self.draining
