"""Debian's headless Chromium driven by selenium through Debian's chromedriver (never a downloaded driver).

Without the packages the tests that need them skip, unless ``PREANNOTATE_REQUIRE_BROWSER=1`` (CI), which turns
the skip into a failure so a missing package cannot pass silently.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # selenium is imported only where it is installed
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver"
# No network here: Chromium's background services would only fail to connect (many times a start).
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the dev extra)")
    return f"missing {', '.join(missing)} ({INSTALL})" if missing else None


def require_browser() -> None:
    """Skip (or, with PREANNOTATE_REQUIRE_BROWSER=1, fail) where the browser is not installed."""
    import pytest

    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("PREANNOTATE_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def chromium(*, width_px: int = 1280, height_px: int = 900) -> Iterator[WebDriver]:
    """A fresh headless Chromium (its own empty profile), closed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*HEADLESS_FLAGS, f"--user-data-dir={profile}", f"--window-size={width_px},{height_px}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()
