"""The models a server process has loaded, each behind its own dynamic batcher."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from models.errors import ModelError
from models.registry import load_detector
from models.types import ModelInfo
from service.config import Settings
from service.errors import ErrorCode, PreannotateError, from_model_error
from service.pipeline.batching import DynamicBatcher
from service.remote_models import JobModel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    spec: str
    batcher: DynamicBatcher

    @property
    def info(self) -> ModelInfo:
        return self.batcher.info

    @property
    def max_batch_size(self) -> int:
        return self.batcher.max_batch_size

    def close(self) -> None:
        self.batcher.close()
        self.batcher.detector.close()


class ModelRegistry:
    """Looks models up by spec or short name; the first one is the default."""

    def __init__(self, models: Sequence[LoadedModel]) -> None:
        if not models:
            raise ValueError("at least one model")
        self._models = list(models)

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Load, warm up and start a batcher for the default model and every extra model."""
        loaded: list[LoadedModel] = []
        try:
            for spec in dict.fromkeys([settings.model, *settings.extra_models]):
                try:
                    detector = load_detector(spec, settings.detector_options())
                    detector.warmup()
                except ModelError as exc:
                    raise from_model_error(exc) from None
                max_batch, max_wait_ms = settings.batching_for(detector.info.device)
                # Metric label: the short name, unless two loaded models share it.
                label = detector.info.name if all(m.info.name != detector.info.name for m in loaded) else spec
                batcher = DynamicBatcher(detector, max_batch_size=max_batch, max_wait_ms=max_wait_ms, name=label)
                batcher.start()
                loaded.append(LoadedModel(spec=spec, batcher=batcher))
                log.info(
                    "model %s ready on %s (max batch %d, wait %g ms)",
                    spec,
                    detector.info.device,
                    max_batch,
                    max_wait_ms,
                )
        except BaseException:
            for model in loaded:
                model.close()
            raise
        return cls(loaded)

    @property
    def default(self) -> LoadedModel:
        return self._models[0]

    def all(self) -> list[LoadedModel]:
        return list(self._models)

    def get(self, name: str | None) -> LoadedModel:
        """The default for None; else a model whose spec or name matches; else MODEL_NOT_FOUND (404)."""
        if name is None:
            return self.default
        for model in self._models:
            if name in (model.spec, model.info.name):
                return model
        available = ", ".join(m.spec for m in self._models)
        raise PreannotateError(ErrorCode.MODEL_NOT_FOUND, f"model {name!r} is not loaded; loaded: {available}")

    def for_job(self, name: str | None) -> JobModel:
        """The loaded model a job for ``name`` is pinned to (``get``'s errors)."""
        return JobModel.of(self.get(name))

    def pending(self) -> list[str]:
        """Nothing: every model here is loaded."""
        return []

    def close(self) -> None:
        for model in self._models:
            model.close()
