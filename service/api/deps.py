"""FastAPI dependencies: ``XxxDep`` aliases for the state, the caller's tenant and the loaded models."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.auth import TokenAuth
from service.api.state import AppState
from service.errors import ErrorCode, PreannotateError
from service.loaded_models import ModelRegistry
from service.remote_models import ModelCatalog

_bearer = HTTPBearer(auto_error=False, description="an API token from PREANNOTATE_API_TOKENS")


def dep_state(request: Request) -> AppState:
    state: AppState = request.app.state.preannotate
    return state


StateDep = Annotated[AppState, Depends(dep_state)]


UI_COOKIE = "preannotate_session"
"""The job page's login cookie (``POST /ui/login``): a signed session value (``TokenAuth.session_for``), never the
token; HttpOnly and SameSite=Strict."""
COOKIE_METHODS = frozenset({"GET"})
"""The only method the cookie authenticates: a forged cross-site POST or DELETE can never ride on it (no CSRF).
(No route answers HEAD: FastAPI adds none.)"""


def has_bearer_header(request: Request) -> bool:
    """An ``Authorization`` header of the Bearer scheme: it wins over the cookie, even when its token is bad.
    Another scheme (a proxy's ``Basic``) is not ours and leaves the cookie in charge."""
    scheme, _, _ = request.headers.get("authorization", "").strip().partition(" ")
    return scheme.lower() == "bearer"


def request_tenant(request: Request, auth: TokenAuth, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The caller's tenant: from a Bearer header; without one, on GET only, from the job page's session cookie."""
    if has_bearer_header(request):
        return auth.tenant_for(credentials.credentials if credentials else None)
    session = request.cookies.get(UI_COOKIE)
    if session is None:
        return auth.tenant_for(None)  # 401: missing bearer token
    if request.method not in COOKIE_METHODS:
        raise PreannotateError(
            ErrorCode.UNAUTHORIZED,
            f"the job page's login cookie is accepted on GET only; {request.method} needs an "
            "Authorization: Bearer <token> header",
        )
    return auth.tenant_for_session(session, time.time())


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def dep_tenant(request: Request, state: StateDep, credentials: BearerDep) -> str:
    return request_tenant(request, state.auth, credentials)


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
