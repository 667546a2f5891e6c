"""The models a server process has loaded, each behind its own dynamic batcher."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from models.base import DEFAULT_MAX_PROMPT_SETS, PromptableDetector, Segmenter
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
from service.spec.requests import check_prompt_classes

log = logging.getLogger(__name__)

DEFAULT_MAX_PROMPT_CLASSES = 200
"""``Settings.max_prompt_classes``' default, likewise."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model behind its batcher. ``owns_detector``: closing it closes the detector too; False for a prompted
    view (``ModelRegistry.prompted``), whose detector shares the base model's weights. ``prompts_key``: a view's
    prompt set (``PromptSet.key``); None for a loaded model."""

    spec: str
    batcher: DynamicBatcher
    owns_detector: bool = True
    prompts_key: str | None = None

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


@dataclass(slots=True)
class _View:
    """A cached prompted view and how many runs hold it (``ModelRegistry.acquire``): only an idle one is evicted."""

    model: LoadedModel
    users: int = 0


class ModelRegistry:
    """Looks models up by spec or short name; the first one is the default. ``segmenter``: the box-prompted
    segmenter (``PREANNOTATE_SEGMENTER``) the jobs that ask for masks share, one call at a time. An open-vocabulary
    model runs through a view per prompt set (``acquire``), at most ``max_prompt_sets`` idle ones kept."""

    def __init__(
        self,
        models: Sequence[LoadedModel],
        *,
        segmenter: Segmenter | None = None,
        max_prompt_sets: int = DEFAULT_MAX_PROMPT_SETS,
        max_prompt_classes: int = DEFAULT_MAX_PROMPT_CLASSES,
    ) -> None:
        if not models:
            raise ValueError("at least one model")
        if max_prompt_sets < 1:
            raise ValueError(f"max_prompt_sets must be >= 1, got {max_prompt_sets}")
        self._models = list(models)
        self.segmenter = None if segmenter is None else SharedSegmenter(segmenter)
        self._max_prompt_sets = max_prompt_sets
        self._max_prompt_classes = max_prompt_classes
        self._views: OrderedDict[tuple[str, str], _View] = OrderedDict()  # (base spec, prompts key), LRU first
        self._building: dict[tuple[str, str], threading.Event] = {}  # views being made, outside the lock
        self._views_lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Load, warm up and start a batcher for the default model and every extra model; load the segmenter."""
        loaded: list[LoadedModel] = []
        segmenter: Segmenter | None = None
        if "model" not in settings.model_fields_set:
            # Chosen by what the model dir holds: a fetch there changes it at the next start. Deployments pin it.
            log.info(
                "default model %s, chosen because %s %s builtin:nanodet; set PREANNOTATE_MODEL to pin it",
                settings.model,
                settings.model_dir,
                "holds" if settings.model == "builtin:nanodet" else "does not hold",
            )
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
        return cls(
            loaded,
            segmenter=segmenter,
            max_prompt_sets=settings.max_prompt_sets,
            max_prompt_classes=settings.max_prompt_classes,
        )

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
        """``acquire``'s view for a caller that holds no lease: it may be closed once evicted (work queued on it
        then fails NOT_READY). Runs use ``acquire``/``release`` or ``leased``."""
        view = self.acquire(name, prompts)
        self.release(view)
        return view

    def for_run(self, name: str | None, prompts: PromptSet | None) -> LoadedModel:
        """What a job or a request for ``name`` with ``prompts`` runs on, unleased (``prompted``), else the model.

        Raises:
            PreannotateError: ``acquire``'s.
        """
        if prompts is not None:
            return self.prompted(name, prompts)
        return self.acquire(name, None)

    @contextmanager
    def leased(self, name: str | None, prompts: PromptSet | None) -> Iterator[LoadedModel]:
        """``acquire`` for the block, ``release`` after it."""
        model = self.acquire(name, prompts)
        try:
            yield model
        finally:
            self.release(model)

    def acquire(self, name: str | None, prompts: PromptSet | None) -> LoadedModel:
        """What a run for ``name`` with ``prompts`` uses, held until ``release``: the model itself without prompts;
        for an open-vocabulary model, its view for ``prompts`` with its own batcher, so the requests and job frames
        of one prompt set batch together. A view is made on first use (no warm-up: the base model was warmed, and
        a view's first batch encodes its prompts anyway), outside the registry's lock (encoding waits for the
        model), and kept in a least-recently-used cache of ``max_prompt_sets``: a view nobody holds is evicted and
        its batcher closed (the base detector never); one still held stays, over the bound, until released.
        Its metrics are the base model's. Blocks: call it off the event loop.

        Raises:
            PreannotateError: ``get``'s; INVALID_PROMPTS (422) for prompts given to a model with classes of its own,
                none for an open-vocabulary model, over ``max_prompt_classes`` classes, or refused by the model;
                the model's errors while encoding (``from_model_error``).
        """
        base = self.get(name)
        detector = base.batcher.detector
        if prompts is None:
            if base.info.open_vocabulary:
                raise PreannotateError(ErrorCode.INVALID_PROMPTS, prompts_required_message(base.spec))
            return base
        if not isinstance(detector, PromptableDetector):
            raise PreannotateError(ErrorCode.INVALID_PROMPTS, prompts_refused_message(base.spec, base.info.class_names))
        check_prompt_classes(prompts, self._max_prompt_classes)
        key = (base.spec, prompts.key)
        while True:
            with self._views_lock:
                cached = self._views.get(key)
                if cached is not None:
                    cached.users += 1
                    self._views.move_to_end(key)
                    return cached.model
                building = self._building.get(key)
                if building is None:
                    building = self._building[key] = threading.Event()
                    break
            building.wait()  # another caller makes this view; then take it (or make it, if that failed)
        try:
            view = self._make_view(base, detector, prompts)
        except BaseException:
            with self._views_lock:
                del self._building[key]
            building.set()
            raise
        with self._views_lock:
            self._views[key] = _View(view, users=1)
            del self._building[key]
            evicted = self._evict_idle()
        building.set()
        self._close(evicted)
        return view

    def release(self, model: LoadedModel) -> None:
        """Let go of what ``acquire`` gave; a view nobody holds any more may be evicted now."""
        if model.prompts_key is None:
            return
        with self._views_lock:
            cached = self._views.get((model.spec, model.prompts_key))
            if cached is None or cached.model is not model:
                return  # the registry was closed meanwhile
            cached.users -= 1
            evicted = self._evict_idle()
        self._close(evicted)

    def _make_view(self, base: LoadedModel, detector: PromptableDetector, prompts: PromptSet) -> LoadedModel:
        try:
            prompted = detector.prompted(prompts)  # encodes the prompts (a real model: under its own lock)
        except ModelError as exc:
            raise from_model_error(exc) from None
        batcher = DynamicBatcher(
            prompted, max_batch_size=base.max_batch_size, max_wait_ms=base.batcher.max_wait_ms, name=base.batcher.name
        )
        batcher.start()
        return LoadedModel(spec=base.spec, batcher=batcher, owns_detector=False, prompts_key=prompts.key)

    def _evict_idle(self) -> list[LoadedModel]:
        """Under the lock: take the least recently used idle views out until the cache is within its bound."""
        evicted: list[LoadedModel] = []
        for key in [k for k, v in self._views.items() if v.users == 0]:
            if len(self._views) <= self._max_prompt_sets:
                break
            evicted.append(self._views.pop(key).model)
        return evicted

    @staticmethod
    def _close(views: list[LoadedModel]) -> None:
        for view in views:  # outside the lock: closing joins the batcher's thread
            view.close()

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
            views, self._views = [v.model for v in self._views.values()], OrderedDict()
        for model in [*views, *self._models]:  # views first: they run on the base models' detectors
            model.close()
        if self.segmenter is not None:
            self.segmenter.close()
