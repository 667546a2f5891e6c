"""The Label Studio ML backend protocol under ``/ls`` (label_studio.md §6): connect this service in LS
with ``POST /api/ml/ {"url": "https://<this host>/ls", "auth_method": "BASIC_AUTH", ...}``.

LS can only send HTTP Basic, so Basic credentials carry an API token as the password (any user name);
Bearer works too. LS gives ``/health`` 1 s and ``/setup`` 3 s, also while ``/predict`` runs, so neither
touches a model, and ``/predict`` runs off the event loop.

Task media arrives unresolved (``/data/local-files/?d=...``). It is fetched with the configured Label Studio
backend's key from that backend's host only; relative to ``/setup``'s ``hostname`` only when that host is
in ``PREANNOTATE_FETCH_ALLOWED_HOSTS`` (and then without any token); and otherwise under the normal fetch
policy. A host is never trusted because ``/setup`` named it, and ``/setup``'s ``access_token`` (the project
creator's own key) is ignored.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urljoin

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from models.base import Segmenter
from models.prompts import PromptSet
from service.api.deps import LocalModelsDep, StateDep
from service.api.schemas import error_responses
from service.api.state import AppState
from service.backends.label_studio import LabelStudioClient, as_preannotate_error, config_from_settings
from service.backends.retry import BackendError
from service.convert.label_studio import LabelConfig, parse_label_config
from service.convert.ls_prompts import labels_only, ls_config_to_prompts, prompt_map_from_json
from service.convert.types import ModelRef
from service.errors import ErrorCode, PreannotateError
from service.intake.ls_tasks import Downloader, TaskFile, task_prediction  # sync's task path: one for both
from service.loaded_models import LoadedModel, ModelRegistry
from service.pipeline.fetch import redact_url
from service.pipeline.run import FrameDetector
from service.pipeline.tracks import needs_appearance
from service.spec.requests import PromptsIn, prompt_set

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ls", tags=["label-studio"])

MAX_PROJECTS = 1024
"""Projects whose ``/setup`` is remembered (least recently used ones are forgotten first)."""
PREDICT_PARALLELISM = 8
"""Tasks of one ``/predict`` fetched and decoded at once; their frames meet in the model's batcher."""

_basic = HTTPBasic(auto_error=False, description="any user name; an API token (PREANNOTATE_API_TOKENS) as password")
_bearer = HTTPBearer(auto_error=False, description="an API token from PREANNOTATE_API_TOKENS")


def dep_ls_tenant(
    state: StateDep,
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    token = basic.password if basic is not None else (bearer.credentials if bearer is not None else None)
    return state.auth.tenant_for(token)


LsTenantDep = Annotated[str, Depends(dep_ls_tenant)]


@dataclass(frozen=True, slots=True)
class ProjectSetup:
    """What ``/setup`` told us about a project."""

    config: LabelConfig
    hostname: str | None
    threshold: float | None
    aliases: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    prompts: PromptSet | None = None


def project_prompts(
    model: LoadedModel, xml: str, extra: Mapping[str, Any], aliases: Mapping[str, str], *, masks: bool
) -> PromptSet | None:
    """The prompts of a project for ``model`` (predictions then convert by label name, without aliases or
    ``predicted_values``): None for a fixed-class model; ``extra_params.prompts`` when given,
    else the config's receiving labels (``ls_config_to_prompts``, with ``extra_params.prompt_map``).

    Raises:
        PreannotateError: ``INVALID_PROMPTS`` (422) for prompts that cannot be used, ``INVALID_ARGUMENT`` for a
            malformed ``prompt_map``.
    """
    if not model.info.open_vocabulary:
        return None
    given = extra.get("prompts")
    if given is not None:  # any form a job body takes (``PromptsIn``), read the same way
        try:
            checked = _PROMPTS_IN.validate_python(given, strict=True)
        except ValidationError:
            raise PreannotateError(
                ErrorCode.INVALID_PROMPTS,
                'extra_params.prompts: give "person, PED=pedestrian", ["person", "car"] or {"PED": "pedestrian"}',
            ) from None
        prompts = prompt_set(checked, field="extra_params.prompts")
        assert prompts is not None  # given is not None
        return prompts
    raw_map = extra.get("prompt_map")
    overrides = None if raw_map is None else prompt_map_from_json(raw_map, where="extra_params.prompt_map")
    return ls_config_to_prompts(xml, aliases=aliases, overrides=overrides, masks=masks)


_PROMPTS_IN: TypeAdapter[PromptsIn] = TypeAdapter(PromptsIn)


def _run_tasks(
    run: _TaskRunner, models: ModelRegistry, prompted: PromptSet | None, tasks: Sequence[Mapping[str, object]]
) -> list[TaskOutcome]:
    """``run.all`` (off the event loop), on the model's view for ``prompted`` when given, held until the tasks end."""
    with ExitStack() as held:
        if prompted is not None:
            view = held.enter_context(models.leased(run.model_spec, prompted))
            run.prompt(view.batcher)
        # the calibration saved for exactly the version that runs (a prompted view's is its own), if any
        runs = run.detector.info
        run.class_thresholds = run.saved_thresholds(runs.version, runs.class_names)
        return run.all(tasks)


class LsBackendState:
    """Per-process memory of the protocol: project setups (per tenant) and the Label Studio client."""

    def __init__(self, state: AppState) -> None:
        settings = state.settings
        self._setups: OrderedDict[tuple[str, str], ProjectSetup] = OrderedDict()
        self._lock = threading.Lock()
        config = config_from_settings(settings)
        self.client = LabelStudioClient(config, fetch_policy=settings.fetch_policy()) if config else None
        self.allowed_hosts = frozenset(h.lower() for h in settings.fetch_allowed_hosts)

    def remember(self, tenant: str, project: str, setup: ProjectSetup) -> None:
        with self._lock:
            self._setups[(tenant, project)] = setup
            self._setups.move_to_end((tenant, project))
            while len(self._setups) > MAX_PROJECTS:
                self._setups.popitem(last=False)

    def setup_of(self, tenant: str, project: str) -> ProjectSetup | None:
        with self._lock:
            return self._setups.get((tenant, project))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


_STATE_LOCK = threading.Lock()


def dep_ls_state(request: Request, state: StateDep) -> LsBackendState:
    """Created on first use (the app factory need not know about it); lives as long as the app."""
    with _STATE_LOCK:
        ls: LsBackendState | None = getattr(request.app.state, "ls_ml_backend", None)
        if ls is None:
            ls = LsBackendState(state)
            request.app.state.ls_ml_backend = ls
        return ls


LsStateDep = Annotated[LsBackendState, Depends(dep_ls_state)]


class SetupRequest(BaseModel):
    project: str | int = Field(description='"<project id>.<created_at unix time>"')
    label_config: str = Field(alias="schema", max_length=1_000_000, description="the project's labeling config XML")
    hostname: str | None = Field(None, max_length=2048, description="Label Studio's public URL")
    access_token: SecretStr | None = Field(None, description="ignored: the service uses its own Label Studio key")
    extra_params: dict[str, Any] | None = Field(
        None,
        description='optional {"threshold": 0.4, "aliases": {...}}; for an open-vocabulary model "prompts" '
        '(as a job body: "person, PED=pedestrian", ["person", "car"] or {"PED": "pedestrian"}) '
        'or "prompt_map" ({"LABEL": "prompt" | [...]}) over the labels\' own',
    )

    model_config = ConfigDict(populate_by_name=True, extra="allow")


class SetupResponse(BaseModel):
    model_version: str


class PredictRequest(BaseModel):
    tasks: list[dict[str, Any]]  # Label Studio's task JSON, read as objects past this edge
    project: str | int | None = None
    label_config: str | None = Field(None, max_length=1_000_000)
    params: dict[str, Any] | None = None

    model_config = ConfigDict(extra="allow")


class LsPredictionPublic(BaseModel):
    result: Sequence[Mapping[str, object]]  # the converter's regions, as it built them
    score: float
    model_version: str


class PredictResponse(BaseModel):
    results: list[LsPredictionPublic | list[LsPredictionPublic]] = Field(
        description="one entry per task, in order; [] for a task that failed while others did not (LS then asks "
        "again later). When every task fails the answer is the first failure's error status instead."
    )


TaskOutcome = LsPredictionPublic | PreannotateError
"""A task's prediction, or why it has none."""

_FAILURES_SHOWN = 3
"""Failed tasks an all-failed answer names; the log names every one."""


def _every_task_failed(tasks: Sequence[Mapping[str, object]], failures: list[PreannotateError]) -> PreannotateError:
    """The error status for a ``/predict`` that produced nothing: LS's error path (``ml/models.py``) logs it and
    saves nothing, where a 200 full of empty entries would read as success. The first failure's code gives the
    status, so a missing file stays ``input_not_found`` and a refused host ``url_not_allowed``."""
    shown = "; ".join(
        f"task {task.get('id')}: {exc.message}" for task, exc in zip(tasks, failures[:_FAILURES_SHOWN], strict=False)
    )
    more = f"; and {len(failures) - _FAILURES_SHOWN} more" if len(failures) > _FAILURES_SHOWN else ""
    noun = "the task" if len(failures) == 1 else f"all {len(failures)} tasks"
    return PreannotateError(failures[0].code, f"no prediction for {noun}: {shown}{more}")


def _project_id(project: str | int | None) -> str:
    # LS sends "<id>.<created_at>"; the id alone keys the project.
    return str(project).split(".", 1)[0] if project is not None else ""


@router.get("/health", responses=error_responses(401, 503))
def health(tenant: LsTenantDep, models: LocalModelsDep) -> dict[str, str]:
    """Up once the models are loaded (LS waits 1 s; nothing heavy happens here)."""
    return {"status": "UP", "model_class": "preannotate"}


@router.post("/setup", responses=error_responses(401, 413, 422, 503))
def setup(body: SetupRequest, tenant: LsTenantDep, models: LocalModelsDep, ls: LsStateDep) -> SetupResponse:
    """Remember the project's labeling config; answer the model version its predictions will carry."""
    config = parse_label_config(body.label_config)
    extra = body.extra_params or {}
    threshold = extra.get("threshold")
    aliases = extra.get("aliases")
    known = ProjectSetup(
        config=config,
        hostname=body.hostname,
        threshold=float(threshold) if isinstance(threshold, int | float) and 0 <= threshold <= 1 else None,
        aliases={str(k): str(v) for k, v in aliases.items()} if isinstance(aliases, dict) else {},
        extra=extra,
    )
    masks = models.segmenter is not None or models.default.info.makes_masks
    prompted = project_prompts(models.default, body.label_config, extra, known.aliases, masks=masks)
    ls.remember(tenant, _project_id(body.project), replace(known, prompts=prompted))
    # Stable across calls: if /predict's version differed, LS's "already predicted" check would never match.
    version = models.default.info.version
    return SetupResponse(model_version=version if prompted is None else f"{version}+{prompted.key}")


@router.post("/predict", responses=error_responses(401, 413, 422, 503))
async def predict(
    body: PredictRequest, tenant: LsTenantDep, models: LocalModelsDep, ls: LsStateDep, state: StateDep
) -> PredictResponse:
    """Preannotate the tasks with the default model: one entry per task, in request order."""
    project = _project_id(body.project)
    known = ls.setup_of(tenant, project)
    if body.label_config:
        config = parse_label_config(body.label_config)
    elif known is not None:
        config = known.config
    else:
        raise PreannotateError(ErrorCode.INVALID_ARGUMENT, "no label_config, and no /setup for this project")
    model = models.default
    threshold = known.threshold if known and known.threshold is not None else state.settings.threshold
    run = _TaskRunner(state, ls, model, config, threshold, known, models.segmenter)
    prompted = known.prompts if known is not None else None
    if body.label_config:  # this config's labels, not /setup's
        extra, aliases = (known.extra, known.aliases) if known is not None else ({}, {})
        masks = models.segmenter is not None or model.info.makes_masks
        prompted = project_prompts(model, body.label_config, extra, aliases, masks=masks)
    outcomes = await run_in_threadpool(_run_tasks, run, models, prompted, body.tasks)
    failures = [o for o in outcomes if isinstance(o, PreannotateError)]
    if failures and len(failures) == len(outcomes):
        raise _every_task_failed(body.tasks, failures)
    # A mixed batch keeps its good predictions: LS wants one entry per task, and [] stores nothing for that task.
    return PredictResponse(results=[[] if isinstance(o, PreannotateError) else o for o in outcomes])


@router.post("/webhook")
def webhook() -> dict[str, str]:
    """Accepted and ignored. LS's auto-created project webhook carries no credentials, so this takes none."""
    return {"status": "ok"}


@router.get("/versions", responses=error_responses(401, 503))
def versions(tenant: LsTenantDep, models: LocalModelsDep) -> dict[str, list[str]]:
    """The model version this backend predicts with."""
    return {"versions": [models.default.info.version]}


class _TaskRunner:
    """One ``/predict``: tasks in parallel, each fetched, decoded and detected through the model's batcher."""

    def __init__(
        self,
        state: AppState,
        ls: LsBackendState,
        model: LoadedModel,
        config: LabelConfig,
        threshold: float,
        known: ProjectSetup | None,
        segmenter: Segmenter | None = None,
    ) -> None:
        self._state = state
        self.class_thresholds: Mapping[str, float] | None = None
        """Per-class least scores over ``threshold`` (those saved for the detector's version)."""
        self._ls = ls
        self._model = model
        self._config = config
        self._threshold = threshold
        self._known = known
        self._segmenter = segmenter
        self._detector: FrameDetector = model.batcher
        self._aliases = known.aliases if known else None

    @property
    def detector(self) -> FrameDetector:
        """What the tasks run on: the model's batcher, or a prompted view's."""
        return self._detector

    @property
    def model_spec(self) -> str:
        return self._model.spec

    def saved_thresholds(self, version: str, class_names: tuple[str, ...]) -> Mapping[str, float] | None:
        """The calibration saved for ``version`` (``calibrate --save``), if any."""
        return self._state.saved_thresholds().class_thresholds(version, class_names)

    def prompt(self, detector: FrameDetector) -> None:
        """Run an open-vocabulary model's prompted view and convert by label name alone, whether the prompts are
        the labels or ``extra_params.prompts``: a prompted class name is a label already (or no label: dropped), so
        neither aliases nor ``predicted_values`` may send it to another label."""
        self._detector = detector
        self._config, self._aliases = labels_only(self._config), None

    def all(self, tasks: Sequence[Mapping[str, object]]) -> list[TaskOutcome]:
        if not tasks:
            return []
        with ThreadPoolExecutor(max_workers=min(PREDICT_PARALLELISM, len(tasks)), thread_name_prefix="ls") as pool:
            return list(pool.map(self.one, tasks))

    def one(self, task: Mapping[str, object]) -> TaskOutcome:
        info = self._detector.info
        settings = self._state.settings
        fetched: list[str] = []  # absolute media URLs, for the log line of a failure
        try:
            found = task_prediction(
                task,
                self._config,
                model=ModelRef(spec=self._model.spec, version=info.version, class_names=info.class_names),
                download=self._downloader(fetched),
                detector=self._detector,
                sampling=settings.sampling_options(),
                limits=settings.media_limits(),
                options=settings.flow_options(
                    threshold=self._threshold,
                    class_thresholds=self.class_thresholds,
                    describe_boxes=needs_appearance(settings.tracker_options()),
                ),
                tracker=settings.tracker_options(),
                aliases=self._aliases,
                work_dir=settings.work_dir,
                segmenter=self._segmenter,
            )
        except (PreannotateError, BackendError) as exc:
            # No prediction: an empty one would tell LS "done" and it would never ask again.
            error = as_preannotate_error(exc) if isinstance(exc, BackendError) else exc
            if error.code is ErrorCode.INTERNAL:  # a decoder's surprise: its detail is for our log only
                log.exception(
                    "ls predict: task %s (%s) failed unexpectedly: %s", task.get("id"), _shown(fetched), error
                )
                return _failed_unexpectedly(task)
            log.warning("ls predict: task %s (%s) failed: %s", task.get("id"), _shown(fetched), error)
            return error
        except Exception:  # one broken task must not cost the other tasks of the batch their predictions
            log.exception("ls predict: task %s (%s) failed unexpectedly", task.get("id"), _shown(fetched))
            return _failed_unexpectedly(task)
        for warning in found.warnings:  # predicted with what decoded; the rest goes to the log, not stderr
            log.warning("ls predict: task %s: %s", task.get("id"), warning)
        return LsPredictionPublic(**found.prediction.to_json())

    def _downloader(self, fetched: list[str]) -> Downloader:
        """Fetches a task's media, appending each absolute URL it tries to ``fetched``."""
        client, fetcher = self._ls.client, self._state.fetcher
        hostname = self._known.hostname if self._known else None

        def download(value: str, scratch: Path) -> TaskFile:
            absolute = "://" in value.split("?", 1)[0]
            if client is not None and (not absolute or client.is_label_studio_url(value)):
                fetched.append(client.media_url(value))
                return TaskFile(client.download(value, scratch).path, fetched[-1])  # the only place our LS key is sent
            if not absolute:
                base = hostname if hostname and _is_allowed(hostname, self._ls.allowed_hosts) else None
                if base is None:
                    raise PreannotateError(
                        ErrorCode.URL_NOT_ALLOWED,
                        f"{redact_url(value)}: task media is relative to Label Studio, but no Label Studio backend "
                        "is configured and its host is not in PREANNOTATE_FETCH_ALLOWED_HOSTS",
                    )
                value = urljoin(base.rstrip("/") + "/", value)
            fetched.append(value)
            return TaskFile(fetcher.fetch(value, scratch).path, value)

        return download


def _failed_unexpectedly(task: Mapping[str, object]) -> PreannotateError:
    """What LS hears of a task that failed in a way no check foresaw: no path, no exception text (the log has it)."""
    return PreannotateError(ErrorCode.INTERNAL, f"task {task.get('id')} failed unexpectedly")


def _shown(urls: list[str]) -> str:
    """Media URLs for a log line: redacted (no credentials, query or fragment)."""
    return ", ".join(redact_url(u) for u in urls) or "no media fetched"


def _is_allowed(url: str, allowed_hosts: frozenset[str]) -> bool:
    """Whether a URL's host is in PREANNOTATE_FETCH_ALLOWED_HOSTS, as ``host`` or ``host:port``."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return False
    host = parsed.host.lower().rstrip(".")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    bracketed = f"[{host}]" if ":" in host else host
    return host in allowed_hosts or f"{bracketed}:{port}" in allowed_hosts
