"""The job page: ``GET /ui`` (one static page over the JSON API), its login form and its login cookie.

The page needs a token like every route: an ``Authorization: Bearer`` header, or the cookie ``POST /ui/login``
sets. Without one it answers 401 with the login form and no job data. The cookie authenticates GET and HEAD
only (``service.api.deps.request_token``), so a cross-site form can never post or delete with it.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.api.deps import UI_COOKIE, BearerDep, StateDep, request_token
from service.errors import PreannotateError

router = APIRouter(prefix="/ui", include_in_schema=False)

_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_ASSET_TYPES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


@cache
def _asset(name: str) -> str:
    return resources.files("service.api.ui").joinpath(name).read_text(encoding="utf-8")


def _login_form(status_code: int, message: str | None = None) -> HTMLResponse:
    shown = f'<p class="error" id="login-error" role="alert">{html.escape(message)}</p>' if message else ""
    body = Template(_asset("login.html")).substitute(message=shown)
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


@router.get("", response_class=HTMLResponse)
def page(request: Request, state: StateDep, credentials: BearerDep) -> HTMLResponse:
    """The page for a valid token (header or cookie); else 401 with the login form."""
    try:
        state.auth.tenant_for(request_token(request, credentials))
    except PreannotateError:
        expired = UI_COOKIE in request.cookies and "authorization" not in request.headers
        return _login_form(401, "Your session has ended: log in again." if expired else None)
    return HTMLResponse(_asset("index.html"), headers=SECURITY_HEADERS)


@router.get("/{name}", response_class=Response)
def asset(name: str) -> Response:
    """The page's script and style sheet (no data in them: served without a token)."""
    if name not in _ASSET_TYPES:
        return Response("not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
    return Response(_asset(name), media_type=_ASSET_TYPES[name], headers=SECURITY_HEADERS)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, state: StateDep, token: Annotated[str, Form()] = "") -> Response:
    """Checks the token as the API does; sets it as an HttpOnly, SameSite=Strict cookie and goes to the page."""
    try:
        state.auth.tenant_for(token)
    except PreannotateError:
        return _login_form(401, "That token is not valid." if token.strip() else "Enter an API token.")
    response = RedirectResponse("/ui", status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        UI_COOKIE,
        token.strip(),
        max_age=state.settings.ui_session_s,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(UI_COOKIE, path="/", httponly=True, samesite="strict")
    return response
