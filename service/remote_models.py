"""Models as the API sees them in distributed mode: published to Redis by the workers that loaded them.

API pods never load a model when ``queue_url`` is set, yet ``POST /v1/jobs`` needs each model's spec,
version and class names (idempotency keys, class checks). Workers publish their ``ModelInfo`` into a
catalog that outlives them (jobs can queue while workers are scaled to zero and KEDA scales them back up
on the lag), plus a liveness entry with a TTL that says how many workers serve each model right now.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from models.types import ModelInfo
from service.errors import ErrorCode, PreannotateError

_MISS_REREAD_S = 0.25  # a lookup that misses reads the catalog again, at most this often


class CatalogEntry(Protocol):
    """What the job routes read from a model, loaded here (``LoadedModel``) or elsewhere (``PublishedModel``)."""

    @property
    def spec(self) -> str: ...

    @property
    def info(self) -> ModelInfo: ...

    @property
    def max_batch_size(self) -> int: ...


class ModelCatalog(Protocol):
    """``ModelRegistry``'s lookup surface, minus the batchers."""

    def get(self, name: str | None) -> CatalogEntry: ...

    def all(self) -> Sequence[CatalogEntry]: ...


@dataclass(frozen=True, slots=True)
class PublishedModel:
    """A model some worker loaded: ``live_workers`` serve it now (0 = none at the moment)."""

    spec: str
    info: ModelInfo
    max_batch_size: int
    published_at: float = 0.0
    live_workers: int = 0


class RemoteModels:
    """The published catalog behind ``get(name)``/``all()``, cached briefly (each job submission reads it).

    Args:
        source: Reads the catalog (``RedisJobStore.published_models``); raises NOT_READY while Redis is down.
        default_spec: ``settings.model``, the model used when a job names none; listed first.
        cache_s: How long one read serves lookups.
        clock: Monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        source: Callable[[], list[PublishedModel]],
        default_spec: str,
        *,
        cache_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source, self._default_spec, self._cache_s, self._clock = source, default_spec, cache_s, clock
        self._lock = threading.Lock()
        self._cached: list[PublishedModel] = []
        self._read_at = float("-inf")

    def all(self) -> list[PublishedModel]:
        """Every published model, the default first; NOT_READY (503) if none has been published yet."""
        models = self._read(max_age_s=self._cache_s)
        if not models:  # a worker may have just published: a miss is worth a fresh read
            models = self._read(max_age_s=_MISS_REREAD_S)
        if not models:
            raise PreannotateError(
                ErrorCode.NOT_READY, "no worker has published its models yet; start `preannotate worker`"
            )
        return models

    def _read(self, *, max_age_s: float) -> list[PublishedModel]:
        with self._lock:
            if self._clock() - self._read_at >= max_age_s:
                models = self._source()
                self._cached = sorted(models, key=lambda m: (m.spec != self._default_spec, m.spec))
                self._read_at = self._clock()
            return list(self._cached)

    def _find(self, name: str) -> PublishedModel | None:
        """The model with this spec or name, reading the catalog again (rate-limited) before giving up."""
        for max_age_s in (self._cache_s, _MISS_REREAD_S):
            found = next((m for m in self._read(max_age_s=max_age_s) if name in (m.spec, m.info.name)), None)
            if found is not None:
                return found
        self.all()  # NOT_READY when nothing at all is published
        return None

    @property
    def default(self) -> PublishedModel:
        found = self._find(self._default_spec)
        if found is None:
            raise PreannotateError(
                ErrorCode.NOT_READY, f"the default model {self._default_spec!r} has not been published by any worker"
            )
        return found

    def get(self, name: str | None) -> PublishedModel:
        """The default for None; else a model whose spec or name matches; else MODEL_NOT_FOUND (404)."""
        if name is None:
            return self.default
        found = self._find(name)
        if found is None:
            available = ", ".join(m.spec for m in self.all())
            raise PreannotateError(ErrorCode.MODEL_NOT_FOUND, f"model {name!r} is not served; published: {available}")
        return found

    def close(self) -> None:
        """Nothing to release (the store owns the connection); here so callers treat both registries alike."""
