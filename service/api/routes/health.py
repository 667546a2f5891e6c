"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import StateDep, TenantDep
from service.api.schemas import error_responses
from service.errors import PreannotateError
from service.metrics import observe_scrape

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive (no auth)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "loading, failed to load, or draining"}})
def readyz(state: StateDep) -> JSONResponse:
    """Ready to serve: models loaded and warmed, not draining (no auth)."""
    if state.ready and state.models is not None:
        ping = getattr(state.store, "ping", None)  # distributed mode: the queue must answer
        if ping is not None and not ping():
            return JSONResponse({"status": "queue_unavailable"}, status_code=503)
        try:
            specs = [m.spec for m in state.models.all()]
        except PreannotateError:  # Redis went away between the ping and the read
            return JSONResponse({"status": "queue_unavailable"}, status_code=503)
        # Distributed with no worker yet: ready all the same (jobs are accepted; they wake the workers).
        body: dict[str, Any] = {"status": "ready", "models": specs}
        return JSONResponse(body)
    status = "draining" if state.draining else ("failed" if state.load_error else "loading")
    body = {"status": status}
    if state.load_error:
        body["error"] = state.load_error
    return JSONResponse(body, status_code=503)


@router.get("/metrics", response_class=Response, responses=error_responses(401))
def metrics(state: StateDep, tenant: TenantDep) -> Response:
    """Prometheus metrics (bearer auth, like every non-health route)."""
    queue_stats = getattr(state.store, "queue_stats", None)  # Redis only: lag, pending, delayed retries, dead letters
    observe_scrape(
        queue_depth=state.store.depth(),
        busy_workers=state.workers.busy if state.workers else 0,
        queue_stats=queue_stats() if queue_stats is not None else None,
    )
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
