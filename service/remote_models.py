"""Models as the API sees them in distributed mode: published to Redis by the workers that loaded them.

API pods never load a model when ``queue_url`` is set, yet ``POST /v1/jobs`` pins each job to its model's
version and class names (idempotency keys, class checks). Workers publish their ``ModelInfo`` into a
catalog that outlives them (jobs can queue while workers are scaled to zero and KEDA scales them back up
on the lag), plus a liveness entry with a TTL that says how many workers serve each model right now.

On a fresh install nothing is published yet, and with workers scaled to zero nothing ever would be unless
a job enters the queue: a job for a configured model no worker has published (or, while no worker is alive,
for any model spec) is accepted unpinned (``JobModel`` with no version), and the first worker that runs one
of its items pins it and checks its class names.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from models.errors import ModelSpecError
from models.prompts import PromptSet
from models.registry import parse_spec
from models.types import ModelInfo
from service.errors import ErrorCode, PreannotateError
from service.spec.requests import NO_SEGMENTER

_MISS_REREAD_S = 0.25  # a lookup that misses reads the catalog again, at most this often


class CatalogEntry(Protocol):
    """What the job routes read from a model, loaded here (``LoadedModel``) or elsewhere (``PublishedModel``)."""

    @property
    def spec(self) -> str: ...

    @property
    def info(self) -> ModelInfo: ...

    @property
    def max_batch_size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class JobModel:
    """The model a job is submitted for: its version and classes, both None while no worker has published it
    (distributed mode, cold start); the first worker to run one of the job's items pins them then. ``makes_masks``:
    the model makes masks itself (``ModelInfo.makes_masks``; False while unknown)."""

    spec: str
    version: str | None
    class_names: tuple[str, ...] | None
    makes_masks: bool = False
    open_vocabulary: bool = False
    """The model takes prompts (``ModelInfo.open_vocabulary``; False while unknown)."""

    @classmethod
    def of(cls, entry: CatalogEntry) -> JobModel:
        info = entry.info
        return cls(entry.spec, info.version, tuple(info.class_names), info.makes_masks, info.open_vocabulary)

    def prompted(self, prompts: PromptSet) -> JobModel:
        """The open-vocabulary model's view for ``prompts`` (``PromptableDetector.prompted``), as a job is pinned
        to it: the base version + ``+`` + the set's key, the set's names. Unpublished (no version): still None
        both, the first worker pins its view's."""
        if self.version is None:
            return self
        return JobModel(self.spec, f"{self.version}+{prompts.key}", prompts.class_names, self.makes_masks, True)


def prompts_required_message(spec: str) -> str:
    """INVALID_PROMPTS' words for an open-vocabulary model named without prompts."""
    return (
        f"model {spec!r} is open-vocabulary: it has no classes of its own; give prompts "
        '(e.g. "person, car, PED=pedestrian")'
    )


def prompts_refused_message(spec: str, class_names: Sequence[str]) -> str:
    """INVALID_PROMPTS' words for prompts given to a model with classes of its own."""
    shown = ", ".join(class_names[:5]) + (", ..." if len(class_names) > 5 else "")
    return (
        f"model {spec!r} has classes of its own ({shown or 'none'}) and takes no prompts; "
        "name an open-vocabulary model, or leave prompts out"
    )


@dataclass(frozen=True, slots=True)
class JobSegmenter:
    """The box-prompted segmenter a job is submitted for: its spec, and its weights' version where this process
    loaded it (None on a distributed API pod, which loads nothing: the worker's own then)."""

    spec: str
    version: str | None


def segmenter_for_job(name: str | None, served: str | None, version: str | None) -> JobSegmenter | None:
    """The segmenter a job asking for ``name`` (None: the server's) runs: the one this deployment serves
    (``PREANNOTATE_SEGMENTER`` = ``served``), or none when it serves none and the job names none, or when the
    job opts out (``NO_SEGMENTER``: boxes only).

    Raises:
        PreannotateError: MODEL_NOT_FOUND (404) for a segmenter this deployment does not serve.
    """
    spec = served if name is None else name.strip()
    if spec is None or spec == NO_SEGMENTER:
        return None
    if spec != served:
        serving = served or "none (PREANNOTATE_SEGMENTER is unset)"
        raise PreannotateError(ErrorCode.MODEL_NOT_FOUND, f"segmenter {spec!r} is not served; serving: {serving}")
    return JobSegmenter(spec, version)


class ModelCatalog(Protocol):
    """``ModelRegistry``'s lookup surface, minus the batchers."""

    def get(self, name: str | None) -> CatalogEntry: ...

    def all(self) -> Sequence[CatalogEntry]: ...

    def for_job(self, name: str | None) -> JobModel: ...

    def segmenter_for_job(self, name: str | None) -> JobSegmenter | None: ...

    def pending(self) -> list[str]:
        """Configured specs whose version and classes are not known yet (no worker published them)."""
        ...


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
        extra_specs: ``settings.extra_models``: what the workers load besides the default (same settings).
        segmenter_spec: ``settings.segmenter``: the segmenter the workers load (same settings), if any.
        cache_s: How long one read serves lookups.
        clock: Monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        source: Callable[[], list[PublishedModel]],
        default_spec: str,
        *,
        extra_specs: Sequence[str] = (),
        segmenter_spec: str | None = None,
        cache_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source, self._default_spec, self._cache_s, self._clock = source, default_spec, cache_s, clock
        self._configured = list(dict.fromkeys([default_spec, *extra_specs]))
        self._segmenter_spec = segmenter_spec
        self._lock = threading.Lock()
        self._cached: list[PublishedModel] = []
        self._read_at = float("-inf")

    def all(self) -> list[PublishedModel]:
        """Every published model, the default first; empty until a worker has published (NOT_READY only while
        Redis is down)."""
        models = self._read(max_age_s=self._cache_s)
        if not models:  # a worker may have just published: a miss is worth a fresh read
            models = self._read(max_age_s=_MISS_REREAD_S)
        return models

    def pending(self) -> list[str]:
        """The configured specs (default first) that no worker has published yet."""
        published = {m.spec for m in self.all()}
        return [spec for spec in self._configured if spec not in published]

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
        """The default for None; else a published model whose spec or name matches; else MODEL_NOT_FOUND (404)."""
        if name is None:
            return self.default
        found = self._find(name)
        if found is None:
            available = ", ".join(m.spec for m in self.all()) or "nothing yet"
            raise PreannotateError(ErrorCode.MODEL_NOT_FOUND, f"model {name!r} is not served; published: {available}")
        return found

    def for_job(self, name: str | None) -> JobModel:
        """What a job for ``name`` (None = the default) is pinned to: the published model, else the spec alone.

        An unpublished model is accepted when it is a configured spec (workers are scaled to zero, or still
        loading it), or a well-formed model spec while no worker is alive (the job is what starts one). With a
        worker alive, another spec is one nobody serves (a typo): refused now, not failed item by item later.
        A short name is only known once published.

        Raises:
            PreannotateError: MODEL_NOT_FOUND (404) for a name that is neither published nor configured nor,
                with no worker alive, a model spec; NOT_READY (503) while Redis is down.
        """
        spec = self._default_spec if name is None else name
        found = self._find(spec)
        if found is not None:
            return JobModel.of(found)
        if spec not in self._configured:
            self._check_unserved_spec(spec)
        return JobModel(spec, None, None)

    def segmenter_for_job(self, name: str | None) -> JobSegmenter | None:
        """The configured segmenter (``segmenter_for_job``), unpinned: the worker that runs the job's items
        pins its version in their results."""
        return segmenter_for_job(name, self._segmenter_spec, None)

    def _check_unserved_spec(self, spec: str) -> None:
        """Raises MODEL_NOT_FOUND unless ``spec`` is a model spec and no worker is alive to say it is not served."""
        published = self.all()
        known = ", ".join(dict.fromkeys([*self._configured, *(m.spec for m in published)]))
        try:
            parse_spec(spec)
        except ModelSpecError as exc:
            raise PreannotateError(
                ErrorCode.MODEL_NOT_FOUND,
                f"model {spec!r} is not published by any worker and is not a model spec ({exc}); "
                f"configured or published: {known}",
            ) from None
        live = sorted(m.spec for m in published if m.live_workers > 0)
        if live:
            raise PreannotateError(
                ErrorCode.MODEL_NOT_FOUND,
                f"model {spec!r} is not served: the live workers serve {', '.join(live)}; "
                f"configured or published: {known}",
            )

    def close(self) -> None:
        """Nothing to release (the store owns the connection); here so callers treat both registries alike."""
