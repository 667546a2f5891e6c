"""FastAPI dependencies: ``XxxDep`` aliases for the state, the caller's tenant and the loaded models."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.state import AppState
from service.errors import ErrorCode, PreannotateError
from service.loaded_models import ModelRegistry
from service.remote_models import ModelCatalog

_bearer = HTTPBearer(auto_error=False, description="an API token from PREANNOTATE_API_TOKENS")


def dep_state(request: Request) -> AppState:
    state: AppState = request.app.state.preannotate
    return state


StateDep = Annotated[AppState, Depends(dep_state)]


def dep_tenant(state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    return state.auth.tenant_for(credentials.credentials if credentials else None)


TenantDep = Annotated[str, Depends(dep_tenant)]


def dep_models(state: StateDep) -> ModelCatalog:
    if state.models is None or state.draining:
        reason = "shutting down" if state.draining else (state.load_error or "models are loading")
        raise PreannotateError(ErrorCode.NOT_READY, f"not ready: {reason}")
    return state.models


ModelsDep = Annotated[ModelCatalog, Depends(dep_models)]
"""Spec, version and classes of each model: loaded here, or published by workers (distributed mode)."""


def dep_local_models(models: ModelsDep) -> ModelRegistry:
    if not isinstance(models, ModelRegistry):
        raise PreannotateError(
            ErrorCode.ROUTE_UNAVAILABLE,
            "this route runs the model inside the API process, and in distributed mode (PREANNOTATE_QUEUE_URL) "
            "the API loads none: submit a job to /v1/jobs, or serve this route from a `preannotate serve` "
            "without a queue URL",
        )
    return models


LocalModelsDep = Annotated[ModelRegistry, Depends(dep_local_models)]
"""Models loaded in this process, with their batchers (synchronous inference routes)."""
