"""Headless Chromium driven by Selenium (Debian's chromium, chromium-driver
and python3-selenium: nothing is downloaded at test time)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

from tests.helpers.titles import ROOT

SCREENSHOTS = os.path.join(ROOT, "build", "screenshots")


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium that plays media without a click."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1100,900",
                "--no-first-run", "--disable-extensions", "--mute-audio"):
        options.add_argument(arg)
    profile = tempfile.mkdtemp(prefix="kvod-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str) -> str:
    """Save the page as build/screenshots/NAME.png (a test artefact); its path."""
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, f"{name}.png")
    driver.save_screenshot(path)
    return path
