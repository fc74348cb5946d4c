"""Headless Chromium for the pages visionlab serves (the docs site, the serve page): Debian's
chromium and chromium-driver driven by selenium, with the same quiet, offline profile."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when either is not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chrome(profile: Path, window: str = "1440,900") -> Any:
    """A selenium Chrome driver on the local chromium with its profile in `profile`; the
    caller quits it. SystemExit in one line when chromium or its driver is missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = chromium()
    if found is None:
        raise SystemExit("error: needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={window}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
