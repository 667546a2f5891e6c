"""The FastAPI app factory. The lifespan opens the job store, then loads and warms the models on a
background thread (``/readyz`` is 503 until they are ready), then starts the workers."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api.auth import TokenAuth
from service.api.errors import register_exception_handlers
from service.api.middleware import BodySizeLimit
from service.api.openapi import add_component_schemas
from service.api.routes import evaluate, health, jobs, ls_ml_backend, models, predict, previews, ui, v7_byom, webhooks
from service.api.schemas import PredictUrlRequest
from service.api.state import AppState
from service.backends.media import BackendMediaFetcher
from service.backends.registry import Backends
from service.config import Settings, get_settings
from service.errors import PreannotateError
from service.intake.sweep import start_label_studio_sweep
from service.jobs.worker import WorkerConfig, WorkerPool
from service.loaded_models import ModelRegistry
from service.metrics import HTTP_REQUESTS, HTTP_SECONDS
from service.pipeline.fetch import Fetcher
from service.queue.housekeeping import Housekeeper
from service.queue.store import JobStore
from service.queue.stores import open_redis_store, open_sqlite_store
from service.remote_models import RemoteModels
from service.spec.requests import JobCreate

log = logging.getLogger(__name__)
# What an operator needs to see by default (models loading, ready); `preannotate serve` shows it at INFO.
startup_log = logging.getLogger("service.startup")

_SHUTDOWN_GRACE_S = 20.0
UPLOAD_PATHS = ("/v1/predict", "/v1/evaluate")  # multipart uploads; every other body is JSON


def _load_models(state: AppState) -> None:
    started = time.monotonic()
    try:
        state.models = ModelRegistry.load(state.settings)
    except PreannotateError as exc:
        state.load_error = str(exc)
        log.error("model loading failed: %s", exc)
        return
    except Exception as exc:  # keep serving /healthz and a readable /readyz
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.exception("model loading failed")
        return
    settings = state.settings
    if settings.workers > 0:
        state.backends = Backends(settings)
        state.workers = WorkerPool(
            state.store,
            state.models,
            # Workers also fetch label-studio+/v7+ slot URLs (webhook jobs) with those tools' keys; the
            # client-facing state.fetcher (/v1/predict) never does.
            BackendMediaFetcher(settings),
            WorkerConfig(
                concurrency=settings.workers,
                lease_s=settings.lease_s,
                heartbeat_s=settings.heartbeat_s,
                limits=settings.media_limits(),
                work_dir=settings.work_dir,
                decoder=settings.decoder,
                default_tracker=settings.tracker_options(),
                decode_workers=settings.decode_workers,
                prefetch_frames=settings.prefetch_frames,
            ),
            state.backends,
        )
        state.workers.start()
    loaded = ", ".join(f"{m.spec} on {m.info.device}" for m in state.models.all())
    startup_log.info("ready: %s (loaded in %.1f s)", loaded, time.monotonic() - started)


@dataclass(slots=True)
class _Queue:
    store: JobStore
    remote_models: RemoteModels | None = None  # distributed mode: what the workers published
    housekeeper: Housekeeper | None = None


def _open_queue(settings: Settings) -> _Queue:
    """The embedded SQLite queue; or, with ``queue_url``, Redis (and the result objects' store) plus the models
    the workers publish there. Either way a housekeeper removes jobs past their retention."""
    if settings.queue_url is None:
        embedded = open_sqlite_store(settings)
        return _Queue(
            embedded, housekeeper=Housekeeper(expire=embedded.expire_jobs, expire_every_s=settings.expiry_sweep_s)
        )
    store = open_redis_store(settings)
    return _Queue(
        store,
        RemoteModels(
            store.published_models,
            settings.model,
            extra_specs=settings.extra_models,
            segmenter_spec=settings.segmenter,
        ),
        # Due retries must reach the stream even while KEDA has every worker scaled to zero.
        Housekeeper(expire=store.expire_jobs, expire_every_s=settings.expiry_sweep_s, promote=store.promote_due),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing heavy happens until the lifespan starts."""
    settings = settings or get_settings()
    auth = TokenAuth(settings.token_list())  # fails fast: there is no unauthenticated mode

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue = _open_queue(settings)
        state = AppState(settings=settings, auth=auth, store=queue.store, fetcher=Fetcher(settings.fetch_policy()))
        app.state.preannotate = state
        loader = None
        if queue.remote_models is not None:  # distributed: `preannotate worker` processes run the models
            state.models = queue.remote_models
            startup_log.info("ready: models run in `preannotate worker` processes (distributed mode)")
        else:
            specs = dict.fromkeys([settings.model, *settings.extra_models])
            startup_log.info("loading models: %s (/readyz is 503 until they are ready)", ", ".join(specs))
            loader = threading.Thread(target=_load_models, args=(state,), name="model-loader", daemon=True)
            loader.start()
        if queue.housekeeper is not None:
            queue.housekeeper.start()
        sweep = start_label_studio_sweep(
            settings,
            state.store,
            lambda: state.models if state.ready else None,
            tenant=webhooks.webhook_tenant(state),
        )
        try:
            yield
        finally:
            state.draining = True
            if sweep is not None:
                await run_in_threadpool(sweep.stop, 10.0)
            if loader is not None:
                await run_in_threadpool(loader.join, _SHUTDOWN_GRACE_S)
            if queue.housekeeper is not None:
                await run_in_threadpool(queue.housekeeper.stop)
            if state.workers is not None:
                await run_in_threadpool(state.workers.stop, _SHUTDOWN_GRACE_S)
            if state.backends is not None:
                state.backends.close()
            if state.models is not None:
                state.models.close()
            if state.previews is not None:
                state.previews.close()
            ls_backend = getattr(app.state, "ls_ml_backend", None)
            if ls_backend is not None:
                ls_backend.close()
            state.store.close()

    docs = settings.public_docs
    app = FastAPI(
        title="preannotate",
        version="0.1.0",
        summary="Model-assisted preannotation: detections for images, videos and DICOM before a human opens the task.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    register_exception_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        max_json_bytes=settings.max_json_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        upload_paths=UPLOAD_PATHS,
    )

    @app.middleware("http")
    async def record_metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = _route_template(request)
        HTTP_REQUESTS.labels(method=request.method, route=route, status=str(response.status_code)).inc()
        HTTP_SECONDS.labels(method=request.method, route=route).observe(time.perf_counter() - start)
        return response

    routers = (health, predict, jobs, previews, models, evaluate, v7_byom, ls_ml_backend, webhooks, ui)
    for module in routers:
        app.include_router(module.router)
    add_component_schemas(app, JobCreate, PredictUrlRequest)
    return app


def _route_template(request: Request) -> str:
    """``/v1/jobs/{job_id}``, never the concrete path: ids must not become metric labels."""
    route = request.scope.get("route")  # set by the router once it matched
    return str(getattr(route, "path", "unmatched"))
