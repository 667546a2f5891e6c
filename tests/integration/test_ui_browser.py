"""The job page (`GET /ui`) in a real headless Chromium against a real `preannotate serve` (issue 16): log in
through the form, a job submitted through the API appears on the open page and reaches succeeded with its
progress, its items and result links show, names are shown as text; no data without a login."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import skimage.data

from service.samples import write_pan_video
from tests.integration.browser import chromium, require_browser
from tests.integration.servers import TOKEN, MediaServer, Server, running, wait_for_job
from tests.media import corrupt_payloads, write_astronaut_media

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

WAIT_S = 60.0
HOSTILE_NAME = '<img src=x id="injected">astronaut'  # shown as text, never parsed


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_astronaut_media(tmp_path_factory.mktemp("ui-media"))
    # key frames every 10: noise in the packets of the second GOP loses some frames, the rest decode
    write_pan_video(skimage.data.astronaut(), root / "gops.mp4", duration_s=2.0, fps=25, gop=10)
    corrupt_payloads(root / "gops.mp4", root / "damaged.mp4", range(10, 20))
    return root


@pytest.fixture(scope="module")
def media_server(media: Path) -> Iterator[MediaServer]:
    with MediaServer(media) as server:
        yield server


@pytest.fixture(scope="module")
def server(media_server: MediaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_browser()
    db = tmp_path_factory.mktemp("ui-db") / "jobs.db"
    with running(db, PREANNOTATE_FETCH_ALLOWED_HOSTS=f"127.0.0.1:{media_server.port}") as srv:
        yield srv


@pytest.fixture
def browser(server: Server) -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def log_in(browser: WebDriver, server: Server, token: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/ui")
    browser.find_element(By.NAME, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def wait_until(browser: WebDriver, what: str, css: str, text: str | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    located = (By.CSS_SELECTOR, css)
    condition = (
        expected_conditions.presence_of_element_located(located)
        if text is None
        else expected_conditions.text_to_be_present_in_element(located, text)
    )
    try:
        WebDriverWait(browser, WAIT_S).until(condition)
    except Exception as exc:
        page = browser.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{what}: {css} {text or ''} not shown after {WAIT_S} s; the page shows:\n{page}") from exc


def submit_job(server: Server, media_server: MediaServer) -> str:
    body = {
        "fps": 10,
        "items": [
            {"name": HOSTILE_NAME, "slots": [{"url": f"{media_server.url}/astronaut.png"}]},
            {"name": "pan", "slots": [{"url": f"{media_server.url}/pan.mp4"}]},
        ],
    }
    with server.client() as client:
        # a new key each time: the same body alone would be the same job
        response = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])


def test_without_login_the_page_is_the_form_and_shows_no_job(
    browser: WebDriver, server: Server, media_server: MediaServer
) -> None:
    from selenium.webdriver.common.by import By

    job_id = submit_job(server, media_server)
    browser.get(f"{server.url}/ui")

    assert browser.find_elements(By.CSS_SELECTOR, "#login input[name=token]")
    assert job_id not in browser.page_source
    browser.get(f"{server.url}/v1/jobs")  # the API itself, in the same browser: no cookie, no data
    assert "unauthorized" in browser.page_source
    assert job_id not in browser.page_source


def test_a_wrong_token_shows_the_error(browser: WebDriver, server: Server) -> None:
    from selenium.webdriver.common.by import By

    log_in(browser, server, "not-the-token")

    wait_until(browser, "login error", "#login-error", "not valid")
    assert browser.find_elements(By.CSS_SELECTOR, "#login input[name=token]")
    assert browser.get_cookies() == []


def test_a_login_form_posted_from_another_site_is_refused(
    browser: WebDriver, server: Server, media_server: MediaServer, media: Path
) -> None:
    """Login CSRF: a page elsewhere (the media server: another origin) auto-submits the login form with its own
    token; the browser says so (Sec-Fetch-Site) and the server refuses it, so no session is set."""
    from selenium.webdriver.common.by import By

    (media / "csrf.html").write_text(
        f'<form id="f" method="post" action="{server.url}/ui/login"><input name="token" value="{TOKEN}"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    browser.get(f"{media_server.url}/csrf.html")

    wait_until(browser, "the refusal", "body", "cross_site_request")
    browser.get(f"{server.url}/ui")
    assert browser.find_elements(By.CSS_SELECTOR, "#login input[name=token]")  # still logged out
    assert browser.get_cookies() == []


def test_a_job_submitted_through_the_api_appears_and_finishes_with_its_progress(
    browser: WebDriver, server: Server, media_server: MediaServer
) -> None:
    from selenium.webdriver.common.by import By

    log_in(browser, server, TOKEN)
    wait_until(browser, "the jobs list", "h2", "Jobs")
    (cookie,) = browser.get_cookies()
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert TOKEN not in cookie["value"]  # a signed session, never the token

    job_id = submit_job(server, media_server)  # after the page loaded: only its polling can show it
    row = f'tr.job[data-job-id="{job_id}"]'
    wait_until(browser, "the new job", row)
    wait_until(browser, "the job finishing", f"{row} .status", "succeeded")
    with server.client() as client:
        progress = wait_for_job(client, job_id)["progress"]
    assert isinstance(progress, dict)
    assert progress["frames_done"] > 1
    shown = browser.find_element(By.CSS_SELECTOR, f"{row} .progress-text").text
    assert shown == f"2/2 items · {progress['frames_done']}/{progress['frames_planned']} frames"

    browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
    wait_until(browser, "the job's items", '.item[data-position="1"]')
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".item .item-name")]
    assert names == [HOSTILE_NAME, "pan"]
    assert browser.find_elements(By.ID, "injected") == []  # the name's markup was never parsed
    for fmt in ("coco", "darwin", "labelstudio", "encord"):
        href = browser.find_element(By.CSS_SELECTOR, f"a.result-{fmt}").get_attribute("href")
        assert href == f"{server.url}/v1/jobs/{job_id}/result?format={fmt}"
        assert httpx.get(href, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_finished_items_preview_renders(browser: WebDriver, server: Server, media_server: MediaServer) -> None:
    """The job's items drawn by GET /v1/jobs/{id}/items/{item}/preview (and /sheet for the video) in the page."""
    from selenium.webdriver.common.by import By

    job_id = submit_job(server, media_server)
    with server.client() as client:
        assert wait_for_job(client, job_id)["status"] == "succeeded"
    log_in(browser, server, TOKEN)
    wait_until(browser, "the jobs list", "h2", "Jobs")

    browser.get(f"{server.url}/ui#/jobs/{job_id}")
    wait_until(browser, "the job's pictures", '.item[data-position="1"] .pictures')
    for position in (0, 1):
        image = f'.item[data-position="{position}"] img.preview'
        loaded = browser.execute_async_script(
            "const img = document.querySelector(arguments[0]), done = arguments[1];"
            "if (!img) { done(-1); return; }"
            "if (img.complete) { done(img.naturalWidth); return; }"
            "img.decode().then(() => done(img.naturalWidth), () => done(0));",
            image,
        )
        assert isinstance(loaded, int)
        assert loaded > 0, f"item {position}: no preview image rendered ({loaded}; -1: a placeholder instead)"
    # a still is its preview alone; the video's first frame comes with its contact sheet of the sampled frames
    assert browser.find_elements(By.CSS_SELECTOR, '.item[data-position="0"] img.sheet') == []
    wait_until(browser, "the video's contact sheet", '.item[data-position="1"] img.sheet')


def test_an_items_warnings_are_shown_with_its_previews(
    browser: WebDriver, server: Server, media_server: MediaServer
) -> None:
    """A video that decoded only in part succeeds with what decoded; the page says what did not."""
    from selenium.webdriver.common.by import By

    body = {"fps": 10, "items": [{"name": "damaged", "slots": [{"url": f"{media_server.url}/damaged.mp4"}]}]}
    with server.client() as client:
        response = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert response.status_code == 202, response.text
        job_id = str(response.json()["job_id"])
        assert wait_for_job(client, job_id)["status"] == "succeeded"
        (warning,) = client.get(f"/v1/jobs/{job_id}/items/0/frames").json()["warnings"]
    log_in(browser, server, TOKEN)
    wait_until(browser, "the jobs list", "h2", "Jobs")

    browser.get(f"{server.url}/ui#/jobs/{job_id}")
    wait_until(browser, "the item's warning", '.item[data-position="0"] .warning')
    shown = browser.find_element(By.CSS_SELECTOR, '.item[data-position="0"] .warning').text
    assert shown == f"{warning['code']} {warning['message']}"
