"""The models a server process has loaded, each behind its own dynamic batcher."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from models.base import Segmenter
from models.errors import ModelError
from models.registry import load_detector
from models.types import ModelInfo
from service.config import Settings
from service.errors import ErrorCode, PreannotateError, from_model_error
from service.pipeline.batching import DynamicBatcher
from service.pipeline.masking import SharedSegmenter, open_segmenter
from service.remote_models import JobModel, JobSegmenter, segmenter_for_job
from service.spec.job import JobSpec

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
    """Looks models up by spec or short name; the first one is the default. ``segmenter``: the box-prompted
    segmenter (``PREANNOTATE_SEGMENTER``) the jobs that ask for masks share, one call at a time."""

    def __init__(self, models: Sequence[LoadedModel], *, segmenter: Segmenter | None = None) -> None:
        if not models:
            raise ValueError("at least one model")
        self._models = list(models)
        self.segmenter = None if segmenter is None else SharedSegmenter(segmenter)

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Load, warm up and start a batcher for the default model and every extra model; load the segmenter."""
        loaded: list[LoadedModel] = []
        segmenter: Segmenter | None = None
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
            if settings.segmenter is not None:
                segmenter = open_segmenter(settings.segmenter, settings.detector_options())
                log.info("segmenter %s ready on %s", settings.segmenter, segmenter.info.device)
        except BaseException:
            for model in loaded:
                model.close()
            raise
        return cls(loaded, segmenter=segmenter)

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

    def segmenter_for_job(self, name: str | None) -> JobSegmenter | None:
        """The loaded segmenter a job asking for ``name`` (None: the server's) is pinned to (``segmenter_for_job``)."""
        loaded = self.segmenter
        if loaded is None:
            return segmenter_for_job(name, None, None)
        return segmenter_for_job(name, loaded.info.spec, loaded.info.version)

    def segmenter_for_run(self, spec: JobSpec) -> Segmenter | None:
        """The segmenter a job's items run with: None for a job without one; else this process's, when it is the
        spec and version the job was pinned to (at submit, or by the first worker that ran one of its items:
        ``WorkerPool``; a job still unpinned here runs nowhere).

        Raises:
            PreannotateError: NOT_READY (retryable) when this process does not run the job's segmenter (a
                rolling update): left to a worker that does, rather than stored without masks or other ones.
        """
        if spec.segmenter is None:
            return None
        loaded = self.segmenter
        mine = None if loaded is None else (loaded.info.spec, loaded.info.version)
        if mine is None or mine != (spec.segmenter, spec.segmenter_version):
            raise PreannotateError(
                ErrorCode.NOT_READY,
                f"the job is pinned to segmenter {spec.segmenter!r} version {spec.segmenter_version!r}; this worker "
                f"runs {'none' if mine is None else f'{mine[0]!r} version {mine[1]!r}'}: left to a worker that runs it",
            )
        return loaded

    def pending(self) -> list[str]:
        """Nothing: every model here is loaded."""
        return []

    def close(self) -> None:
        for model in self._models:
            model.close()
        if self.segmenter is not None:
            self.segmenter.close()
