"""Headless Chromium driven by selenium, set up as this machine needs it."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver",)


def _first(candidates: tuple[str, ...], name: str) -> str | None:
    for candidate in candidates:
        if Path(candidate).exists():
            return candidate
    return shutil.which(name)


def find_browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why they cannot be had."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    chromium = _first(CHROMIUM_CANDIDATES, "chromium")
    driver = _first(DRIVER_CANDIDATES, "chromedriver")
    if chromium is None or driver is None:
        return "chromium or chromedriver missing (scripts/ensure-chromium.sh installs them)"
    return chromium, driver


def start_browser(width: int = 1280, height: int = 900):
    """A fresh headless Chromium with an empty profile and the performance log on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if isinstance(found, str):
        raise RuntimeError(found)
    chromium, driver = found
    profile = tempfile.mkdtemp(prefix="foldserve-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.profile_dir = profile
    return browser


def stop_browser(browser) -> None:
    try:
        browser.quit()
    finally:
        shutil.rmtree(getattr(browser, "profile_dir", ""), ignore_errors=True)


def requested_urls(browser) -> list[str]:
    """Every URL the page asked the network for since the last call (performance log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(browser) -> list[str]:
    """Severe messages of the page's console (script errors, CSP violations); an HTTP error
    status the page met and handled (a 401 before the token is given) is not one."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
