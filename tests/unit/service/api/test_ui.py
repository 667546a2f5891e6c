"""The job page's routes on the real routers and a real SQLite store (issue 16): the login form and its cookie (a
signed session with a server-side expiry, never the token), which authenticates GET only (never a POST or DELETE: no
CSRF), login and logout refused from another site, the security headers, the page's files."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.deps import UI_COOKIE
from service.api.routes import ui
from service.intake.config import WebhookConfig
from tests.unit.service.intake.helpers import TOKEN, WebhookApp, webhook_app

AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY: dict[str, Any] = {"items": [{"name": "a", "slots": [{"url": "https://media.example.com/a.jpg"}]}]}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[WebhookApp]:
    with webhook_app(tmp_path, WebhookConfig(), ui_session_s=600) as a:
        a.client.app.include_router(ui.router)  # type: ignore[attr-defined]
        yield a


def log_in(app: WebhookApp, token: str = TOKEN) -> httpx.Response:
    return app.client.post("/ui/login", data={"token": token}, follow_redirects=False)


def log_in_with(app: WebhookApp, headers: dict[str, str]) -> httpx.Response:
    return app.client.post("/ui/login", data={"token": TOKEN}, headers=headers, follow_redirects=False)


def set_cookie_header(response: httpx.Response) -> str:
    (header,) = response.headers.get_list("set-cookie")
    return header


def test_login_sets_an_http_only_strict_cookie_for_the_configured_time(app: WebhookApp) -> None:
    response = log_in(app)

    assert (response.status_code, response.headers["location"]) == (303, "/ui")
    cookie = set_cookie_header(response).lower()
    assert cookie.startswith(f"{UI_COOKIE}=")
    for attribute in ("httponly", "samesite=strict", "path=/", "max-age=600"):
        assert attribute in cookie
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back


def cookie_value(response: httpx.Response) -> str:
    return set_cookie_header(response).split(";")[0].split("=", 1)[1]


def test_the_cookie_is_a_signed_session_that_expires_with_the_setting_not_the_token(app: WebhookApp) -> None:
    before_s = time.time()
    value = cookie_value(log_in(app))

    assert TOKEN not in value
    version, tenant, expiry, mac = value.split(".")
    assert (version, tenant) == ("v1", app.state.auth.tenant_for(TOKEN))
    assert before_s + 600 - 1 <= int(expiry) <= time.time() + 600
    assert len(bytes.fromhex(mac)) == 32  # HMAC-SHA256


def test_the_raw_token_as_a_cookie_is_refused(app: WebhookApp) -> None:
    app.client.cookies.set(UI_COOKIE, TOKEN)
    assert app.client.get("/v1/jobs").status_code == 401


def test_the_server_refuses_an_expired_session(app: WebhookApp) -> None:
    expires_at_s = int(time.time()) + 2
    app.client.cookies.set(UI_COOKIE, app.state.auth.session_for(TOKEN, expires_at_s))
    assert app.client.get("/v1/jobs").status_code == 200
    time.sleep(expires_at_s - time.time() + 0.1)  # a real wait: the expiry is signed into the value, not only Max-Age

    response = app.client.get("/v1/jobs")
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")
    assert "expired" in response.json()["error"]["message"]
    page = app.client.get("/ui")
    assert (page.status_code, "session has ended" in page.text) == (401, True)


def test_a_session_with_its_expiry_or_tenant_changed_is_refused(app: WebhookApp) -> None:
    _, tenant, expiry, mac = cookie_value(log_in(app)).split(".")
    longer = f"v1.{tenant}.{int(expiry) + 86_400 * 365}.{mac}"
    for forged in (
        longer,
        f"v1.{'0' * 16}.{expiry}.{mac}",
        f"v1.{tenant}.{expiry}.{'0' * 64}",
        f"v2.{tenant}.{expiry}.{mac}",
    ):
        app.client.cookies.clear()  # the login's cookie is kept under the server's domain: replace it
        app.client.cookies.set(UI_COOKIE, forged)
        assert app.client.get("/v1/jobs").status_code == 401


@pytest.mark.parametrize(
    ("url", "headers", "setting", "secure"),
    [
        ("https://testserver/ui/login", {}, "auto", True),
        ("http://testserver/ui/login", {"X-Forwarded-Proto": "https"}, "auto", True),  # TLS ended at a proxy
        ("http://testserver/ui/login", {"X-Forwarded-Proto": "http"}, "auto", False),
        ("http://testserver/ui/login", {}, "always", True),
        ("https://testserver/ui/login", {}, "never", False),
    ],
)
def test_the_cookie_is_secure_over_https_behind_a_proxy_or_when_forced(
    tmp_path: Path, url: str, headers: dict[str, str], setting: str, secure: bool
) -> None:
    with webhook_app(tmp_path, WebhookConfig(), ui_cookie_secure=setting) as a:
        a.client.app.include_router(ui.router)  # type: ignore[attr-defined]
        response = a.client.post(url, data={"token": TOKEN}, headers=headers, follow_redirects=False)
    assert response.status_code == 303
    assert ("; secure" in set_cookie_header(response).lower()) is secure


CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # a sibling host is another origin all the same
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},  # the browser's own verdict wins
    {"Origin": "https://attacker.example"},  # a browser without Sec-Fetch-Site
    {"Origin": "http://testserver:8080"},
    {"Origin": "null"},  # a sandboxed frame
]
SAME_SITE = [{}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {"Origin": "http://testserver"}]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_a_cross_site_login_is_refused(app: WebhookApp, headers: dict[str, str]) -> None:
    response = log_in_with(app, headers)

    assert (response.status_code, response.json()["error"]["code"]) == (403, "cross_site_request")
    assert "set-cookie" not in response.headers
    assert app.client.get("/v1/jobs").status_code == 401


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_a_cross_site_logout_is_refused(app: WebhookApp, headers: dict[str, str]) -> None:
    log_in(app)
    response = app.client.post("/ui/logout", headers=headers, follow_redirects=False)

    assert (response.status_code, response.json()["error"]["code"]) == (403, "cross_site_request")
    assert app.client.get("/v1/jobs").status_code == 200


@pytest.mark.parametrize("headers", SAME_SITE)
def test_a_same_origin_login_and_logout_are_allowed(app: WebhookApp, headers: dict[str, str]) -> None:
    assert log_in_with(app, headers).status_code == 303
    assert app.client.get("/v1/jobs").status_code == 200
    assert app.client.post("/ui/logout", headers=headers, follow_redirects=False).status_code == 303
    assert app.client.get("/v1/jobs").status_code == 401


def test_the_origin_check_sees_the_public_host_behind_a_proxy(app: WebhookApp) -> None:
    headers = {"Host": "preannotate.example.com", "Origin": "https://preannotate.example.com"}
    assert log_in_with(app, headers).status_code == 303


@pytest.mark.parametrize(("token", "message"), [("wrong-token", "not valid"), ("", "Enter an API token")])
def test_a_bad_token_shows_the_form_again_with_a_message(app: WebhookApp, token: str, message: str) -> None:
    response = log_in(app, token)

    assert response.status_code == 401
    assert 'id="login-error"' in response.text
    assert message in response.text
    assert "set-cookie" not in response.headers


def test_without_a_token_the_page_is_the_login_form_and_no_data(app: WebhookApp) -> None:
    response = app.client.get("/ui")

    assert response.status_code == 401
    assert 'action="/ui/login"' in response.text
    assert "app.js" not in response.text


@pytest.mark.parametrize("how", ["header", "cookie"])
def test_the_page_is_served_for_a_header_or_the_cookie(app: WebhookApp, how: str) -> None:
    if how == "cookie":
        log_in(app)
    response = app.client.get("/ui", headers=AUTH if how == "header" else {})

    assert response.status_code == 200
    assert '<script src="/ui/app.js"' in response.text


def test_the_page_and_the_form_carry_the_security_headers(app: WebhookApp) -> None:
    for response in (app.client.get("/ui"), app.client.get("/ui", headers=AUTH), log_in(app, "nope")):
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        # same-origin: no URL leaks to other sites, and our own form's POST keeps its real Origin (no-referrer would
        # make it "null", which the login's cross-site check must refuse)
        assert response.headers["referrer-policy"] == "same-origin"


def test_the_cookie_authenticates_gets_of_the_api(app: WebhookApp) -> None:
    job_id = app.client.post("/v1/jobs", json=BODY, headers=AUTH).json()["job_id"]
    log_in(app)

    listed = app.client.get("/v1/jobs")
    assert listed.status_code == 200
    assert [job["id"] for job in listed.json()["jobs"]] == [job_id]
    assert app.client.get(f"/v1/jobs/{job_id}/items").status_code == 200


def test_the_cookie_never_authenticates_a_post_or_a_delete(app: WebhookApp) -> None:
    job_id = app.client.post("/v1/jobs", json=BODY, headers=AUTH).json()["job_id"]
    log_in(app)

    posted = app.client.post("/v1/jobs", json=BODY)
    cancelled = app.client.post(f"/v1/jobs/{job_id}/cancel")
    deleted = app.client.delete(f"/v1/jobs/{job_id}")

    for response in (posted, cancelled, deleted):
        assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")
        assert "GET only" in response.json()["error"]["message"]
    assert app.client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"  # neither cancelled nor deleted
    assert app.jobs() == 1


def test_the_header_wins_over_the_cookie(app: WebhookApp) -> None:
    log_in(app)
    response = app.client.get("/v1/jobs", headers={"Authorization": "Bearer not-a-token"})
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize("scheme", ["Basic dXNlcjpwYXNz", "Negotiate abc", "Token xyz"])
def test_another_authorization_scheme_leaves_the_cookie_in_charge(app: WebhookApp, scheme: str) -> None:
    """A proxy in front (``Basic`` auth) keeps its header on every request: the cookie still logs the page in."""
    log_in(app)
    headers = {"Authorization": scheme}

    assert app.client.get("/v1/jobs", headers=headers).status_code == 200
    page = app.client.get("/ui", headers=headers)
    assert (page.status_code, '<script src="/ui/app.js"' in page.text) == (200, True)


def test_head_is_not_a_route(app: WebhookApp) -> None:
    """The README promises the cookie on GET only: no route answers HEAD (FastAPI adds none)."""
    log_in(app)
    assert app.client.head("/v1/jobs").status_code == 405


def test_a_bad_cookie_is_401(app: WebhookApp) -> None:
    app.client.cookies.set(UI_COOKIE, "forged-token")

    assert app.client.get("/v1/jobs").status_code == 401
    page = app.client.get("/ui")
    assert page.status_code == 401
    assert "session has ended" in page.text


def test_logout_clears_the_cookie(app: WebhookApp) -> None:
    log_in(app)
    response = app.client.post("/ui/logout", follow_redirects=False)

    assert response.status_code == 303
    assert "max-age=0" in set_cookie_header(response).lower()
    assert app.client.get("/v1/jobs").status_code == 401
    assert app.client.get("/ui").status_code == 401


def test_the_token_is_never_logged(app: WebhookApp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log_in(app)
    log_in(app, "a-wrong-secret-token")
    app.client.get("/v1/jobs")
    app.client.post("/v1/jobs", json=BODY)

    assert TOKEN not in caplog.text
    assert "a-wrong-secret-token" not in caplog.text


@pytest.mark.parametrize(("name", "media_type"), [("app.js", "text/javascript"), ("app.css", "text/css")])
def test_the_page_files_are_served_with_their_types(app: WebhookApp, name: str, media_type: str) -> None:
    response = app.client.get(f"/ui/{name}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert app.client.get("/ui/login.html").status_code == 404  # only the listed files


def test_the_script_puts_no_data_through_inner_html() -> None:
    script = (Path(ui.__file__).parent.parent / "ui" / "app.js").read_text()
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "document.write" not in script


def test_the_cookie_secure_flag_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import Settings

    assert Settings().ui_cookie_secure == "auto"
    monkeypatch.setenv("PREANNOTATE_UI_COOKIE_SECURE", "always")
    assert Settings().ui_cookie_secure == "always"
    monkeypatch.setenv("PREANNOTATE_UI_COOKIE_SECURE", "yes")
    with pytest.raises(ValueError, match="auto"):
        Settings()


def test_the_session_length_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import Settings

    assert Settings().ui_session_s == 8 * 3600
    monkeypatch.setenv("PREANNOTATE_UI_SESSION_S", "120")
    assert Settings().ui_session_s == 120
    monkeypatch.setenv("PREANNOTATE_UI_SESSION_S", "5")
    with pytest.raises(ValueError, match="greater than or equal to 60"):
        Settings()
