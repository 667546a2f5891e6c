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


UI_COOKIE = "preannotate_token"
"""The job page's login cookie (``POST /ui/login``): the token itself, HttpOnly and SameSite=Strict."""
COOKIE_METHODS = frozenset({"GET", "HEAD"})
"""The only methods the cookie authenticates: a forged cross-site POST or DELETE can never ride on it (no CSRF)."""


def request_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The bearer token; without an Authorization header, on GET and HEAD only, the job page's cookie."""
    if "authorization" in request.headers:  # the header wins, even a malformed one (then 401)
        return credentials.credentials if credentials else None
    if request.method not in COOKIE_METHODS:
        if UI_COOKIE in request.cookies:
            raise PreannotateError(
                ErrorCode.UNAUTHORIZED,
                f"the job page's login cookie is accepted on GET and HEAD only; {request.method} needs an "
                "Authorization: Bearer <token> header",
            )
        return None
    return request.cookies.get(UI_COOKIE)


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def dep_tenant(request: Request, state: StateDep, credentials: BearerDep) -> str:
    return state.auth.tenant_for(request_token(request, credentials))


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
