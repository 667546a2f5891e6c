"""The job page: ``GET /ui`` (one static page over the JSON API), its login form and its login cookie.

The page needs a token like every route: an ``Authorization: Bearer`` header, or the cookie ``POST /ui/login``
sets. Without one it answers 401 with the login form and no job data. The cookie holds a signed session with an
expiry (``TokenAuth.session_for``), never the token, and authenticates GET only (``service.api.deps.request_tenant``),
so a cross-site form can never post or delete with it; login and logout refuse a cross-site origin (login CSRF).
"""

from __future__ import annotations

import html
import time
from functools import cache
from importlib import resources
from string import Template
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.api.deps import UI_COOKIE, BearerDep, StateDep, has_bearer_header, request_tenant
from service.config import Settings
from service.errors import ErrorCode, PreannotateError

router = APIRouter(prefix="/ui", include_in_schema=False)

_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
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
        request_tenant(request, state.auth, credentials)
    except PreannotateError:
        expired = UI_COOKIE in request.cookies and not has_bearer_header(request)
        return _login_form(401, "Your session has ended: log in again." if expired else None)
    return HTMLResponse(_asset("index.html"), headers=SECURITY_HEADERS)


@router.get("/{name}", response_class=Response)
def asset(name: str) -> Response:
    """The page's script and style sheet (no data in them: served without a token)."""
    if name not in _ASSET_TYPES:
        return Response("not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
    return Response(_asset(name), media_type=_ASSET_TYPES[name], headers=SECURITY_HEADERS)


_SAME_ORIGIN_FETCH = frozenset({"same-origin", "none"})  # Sec-Fetch-Site values of our own form (or a typed URL)
_DEFAULT_PORTS = (None, 80, 443)


def _host_port(netloc: str) -> str | None:
    """``host[:port]`` without a default port (``https://x`` matches ``Host: x`` or ``x:443`` even where a TLS proxy
    says nothing of the scheme); None for no host or a malformed port."""
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname if port in _DEFAULT_PORTS else f"{parts.hostname}:{port}"


def _forwarded_proto(request: Request) -> str:
    """The scheme the browser used: a proxy's ``X-Forwarded-Proto`` (its first hop), else this connection's."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded or request.url.scheme


def _refuse_cross_site(request: Request) -> None:
    """403 for a login or logout posted by another site (login CSRF): ``Sec-Fetch-Site`` must say same-origin;
    browsers without it send ``Origin``, which must be this server. Neither header (curl, a script): allowed."""
    fetch_site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if fetch_site is not None:
        allowed = fetch_site.lower() in _SAME_ORIGIN_FETCH
    elif origin is not None:
        own = _host_port(request.headers.get("host", ""))
        allowed = own is not None and _host_port(urlsplit(origin).netloc) == own  # "null" has no host: refused
    else:
        allowed = True
    if not allowed:
        raise PreannotateError(
            ErrorCode.CROSS_SITE_REQUEST,
            f"{request.url.path} accepts forms from this server's own pages only "
            f"(Sec-Fetch-Site: {fetch_site or '-'}, Origin: {origin or '-'})",
        )


def _cookie_secure(request: Request, settings: Settings) -> bool:
    """Secure when forced, or (auto) when the browser's request was https. A forged X-Forwarded-Proto only makes
    a cookie its own sender's browser keeps off plain http: trusting it can only restrict."""
    if settings.ui_cookie_secure != "auto":
        return settings.ui_cookie_secure == "always"
    return _forwarded_proto(request) == "https"


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, state: StateDep, token: Annotated[str, Form()] = "") -> Response:
    """Checks the token as the API does; sets a signed session (not the token) as an HttpOnly, SameSite=Strict
    cookie that the server honours for ``PREANNOTATE_UI_SESSION_S``, and goes to the page."""
    _refuse_cross_site(request)
    settings = state.settings
    try:
        session = state.auth.session_for(token, int(time.time()) + settings.ui_session_s)
    except PreannotateError:
        return _login_form(401, "That token is not valid." if token.strip() else "Enter an API token.")
    response = RedirectResponse("/ui", status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        UI_COOKIE,
        session,
        max_age=settings.ui_session_s,
        path="/",
        secure=_cookie_secure(request, settings),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Clears the cookie in this browser (a copy of it stays valid until its expiry: sessions are stateless)."""
    _refuse_cross_site(request)
    response = RedirectResponse("/ui", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(UI_COOKIE, path="/", httponly=True, samesite="strict")
    return response
