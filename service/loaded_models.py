"""The models a server process has loaded, each behind its own dynamic batcher."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from models.base import PromptableDetector, Segmenter
from models.errors import ModelError
from models.prompts import PromptSet
from models.registry import load_detector
from models.types import ModelInfo
from service.config import Settings
from service.errors import ErrorCode, PreannotateError, from_model_error
from service.pipeline.batching import DynamicBatcher
from service.pipeline.masking import SharedSegmenter, open_segmenter
from service.remote_models import (
    JobModel,
    JobSegmenter,
    prompts_refused_message,
    prompts_required_message,
    segmenter_for_job,
)
from service.spec.job import JobSpec

log = logging.getLogger(__name__)


DEFAULT_MAX_PROMPT_SETS = 16
"""``Settings.max_prompt_sets``' default, for registries built without settings (tests, tools)."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model behind its batcher. ``owns_detector``: closing it closes the detector too; False for a prompted
    view (``ModelRegistry.prompted``), whose detector shares the base model's weights."""

    spec: str
    batcher: DynamicBatcher
    owns_detector: bool = True

    @property
    def info(self) -> ModelInfo:
        return self.batcher.info

    @property
    def max_batch_size(self) -> int:
        return self.batcher.max_batch_size

    def close(self) -> None:
        self.batcher.close()
        if self.owns_detector:
            self.batcher.detector.close()


class ModelRegistry:
    """Looks models up by spec or short name; the first one is the default. ``segmenter``: the box-prompted
    segmenter (``PREANNOTATE_SEGMENTER``) the jobs that ask for masks share, one call at a time. An open-vocabulary
    model runs through a view per prompt set (``prompted``), at most ``max_prompt_sets`` of them kept."""

    def __init__(
        self,
        models: Sequence[LoadedModel],
        *,
        segmenter: Segmenter | None = None,
        max_prompt_sets: int = DEFAULT_MAX_PROMPT_SETS,
    ) -> None:
        if not models:
            raise ValueError("at least one model")
        if max_prompt_sets < 1:
            raise ValueError(f"max_prompt_sets must be >= 1, got {max_prompt_sets}")
        self._models = list(models)
        self.segmenter = None if segmenter is None else SharedSegmenter(segmenter)
        self._max_prompt_sets = max_prompt_sets
        self._views: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()  # (base spec, prompts key), LRU last
        self._views_lock = threading.Lock()

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
        return cls(loaded, segmenter=segmenter, max_prompt_sets=settings.max_prompt_sets)

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

    def prompted(self, name: str | None, prompts: PromptSet) -> LoadedModel:
        """The open-vocabulary model ``name`` (``get``) asked for ``prompts``: a view with its own batcher, so the
        requests and job frames of one prompt set batch together. Made on first use (no warm-up: the base model
        was warmed, and a view's first batch encodes its prompts anyway) and kept in a least-recently-used cache
        of ``max_prompt_sets``; an evicted view's batcher is closed (work queued on it fails NOT_READY, which jobs
        retry), the base detector never. Its metrics are the base model's.

        Raises:
            PreannotateError: ``get``'s; INVALID_PROMPTS (422) for a model with classes of its own.
        """
        base = self.get(name)
        detector = base.batcher.detector
        if not isinstance(detector, PromptableDetector):
            raise PreannotateError(ErrorCode.INVALID_PROMPTS, prompts_refused_message(base.spec, base.info.class_names))
        key = (base.spec, prompts.key)
        evicted: list[LoadedModel] = []
        with self._views_lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
                return view
            batcher = DynamicBatcher(
                detector.prompted(prompts),
                max_batch_size=base.max_batch_size,
                max_wait_ms=base.batcher.max_wait_ms,
                name=base.batcher.name,
            )
            batcher.start()
            view = self._views[key] = LoadedModel(spec=base.spec, batcher=batcher, owns_detector=False)
            while len(self._views) > self._max_prompt_sets:
                evicted.append(self._views.popitem(last=False)[1])
        for old in evicted:  # outside the lock: closing joins the batcher's thread
            old.close()
        return view

    def for_run(self, name: str | None, prompts: PromptSet | None) -> LoadedModel:
        """What a job or a request for ``name`` with ``prompts`` runs on: ``prompted``'s view, else the model.

        Raises:
            PreannotateError: ``prompted``'s; INVALID_PROMPTS (422) for an open-vocabulary model without prompts.
        """
        if prompts is not None:
            return self.prompted(name, prompts)
        model = self.get(name)
        if model.info.open_vocabulary:
            raise PreannotateError(ErrorCode.INVALID_PROMPTS, prompts_required_message(model.spec))
        return model

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
        with self._views_lock:
            views, self._views = list(self._views.values()), OrderedDict()
        for model in [*views, *self._models]:  # views first: they run on the base models' detectors
            model.close()
        if self.segmenter is not None:
            self.segmenter.close()
