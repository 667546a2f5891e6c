"""Screenshots of the job page for the README: ``make screenshots`` (or ``python -m tests.tools.ui_screenshots``).

Starts a real ``preannotate serve`` (default model) on the demo's sample media (``preannotate demo``'s photos and
video, served over loopback), runs one job, then opens ``/ui`` in Debian's headless Chromium, logs in through the
form and saves ``docs/ui-jobs.png`` (the jobs list) and ``docs/ui-job.png`` (the job with its items' previews).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from service.commands.demo import write_samples
from tests.integration.browser import browser_missing, chromium
from tests.integration.servers import TOKEN, MediaServer, Server, running, wait_for_job

WIDTH_PX, HEIGHT_PX = 1200, 860
MAX_PNG_BYTES = 1024**2
WAIT_S = 120.0
# Resolves once every picture on the page has loaded or failed (then the page shows its placeholder text).
PICTURES_SETTLED = """
const done = arguments[arguments.length - 1];
const pending = [...document.querySelectorAll(".pictures img")].map((img) => img.decode().catch(() => null));
Promise.all(pending).then(() => done(document.querySelectorAll(".pictures img").length));
"""


def submit_demo_job(server: Server, media: MediaServer, paths: list[Path]) -> str:
    # the video first: the job's screenshot shows its first frame drawn and its contact sheet
    ordered = sorted(paths, key=lambda path: path.suffix != ".mp4")
    items = [{"name": path.name, "slots": [{"url": f"{media.url}/{path.name}"}]} for path in ordered]
    with server.client() as client:
        response = client.post("/v1/jobs", json={"fps": 2, "items": items})
        response.raise_for_status()
        job_id = str(response.json()["job_id"])
        status = wait_for_job(client, job_id, timeout_s=WAIT_S)["status"]
    print(f"job {job_id}: {status}")
    return job_id


def shoot(browser: WebDriver, path: Path) -> None:
    browser.save_screenshot(str(path))
    size = path.stat().st_size
    print(f"wrote {path} ({size // 1024} KiB)")
    if size > MAX_PNG_BYTES:
        raise SystemExit(f"{path} is {size} bytes, over {MAX_PNG_BYTES}: make the window smaller")


def screenshots(server: Server, job_id: str, out_dir: Path) -> None:
    with chromium(width_px=WIDTH_PX, height_px=HEIGHT_PX) as browser:
        browser.get(f"{server.url}/ui")
        browser.find_element(By.NAME, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        row = (By.CSS_SELECTOR, f'tr.job[data-job-id="{job_id}"]')
        WebDriverWait(browser, WAIT_S).until(expected_conditions.presence_of_element_located(row))
        shoot(browser, out_dir / "ui-jobs.png")

        browser.get(f"{server.url}/ui#/jobs/{job_id}")
        pictures = (By.CSS_SELECTOR, ".pictures")
        WebDriverWait(browser, WAIT_S).until(expected_conditions.presence_of_element_located(pictures))
        browser.set_script_timeout(WAIT_S)
        images = browser.execute_async_script(PICTURES_SETTLED)
        print(f"{images} preview images rendered")
        shoot(browser, out_dir / "ui-job.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNGs go (default: docs)")
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        print(f"ui_screenshots: {missing}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-screenshots-") as tmp:
        root = Path(tmp)
        paths = write_samples(root / "media")
        with (
            MediaServer(root / "media") as media,
            running(root / "jobs.db", PREANNOTATE_FETCH_ALLOWED_HOSTS=f"127.0.0.1:{media.port}") as server,
        ):
            job_id = submit_demo_job(server, media, paths)
            screenshots(server, job_id, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
