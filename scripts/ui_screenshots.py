"""Screenshots of every console page, desktop and phone width, into docs/ui/.

Starts a server on 127.0.0.1 with the demo model, uploads it once more through the page,
sends some predictions, and photographs each page in headless Chromium:

    PYTHONPATH=. python scripts/ui_screenshots.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.service.conftest import DEMO_SOURCE, make_repository, serving  # noqa: E402
from tests.ui.browser import start_browser, stop_browser  # noqa: E402

OUT = REPO / "docs" / "ui"
WIDTHS = {"desktop": 1280, "phone": 375}
MAX_HEIGHT = 3600


def shoot(browser, name: str, width: int, label: str) -> None:
    browser.set_window_size(width, 900)
    time.sleep(0.6)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(MAX_HEIGHT, height + 120))
    time.sleep(0.6)
    path = OUT / f"{name}-{label}.png"
    browser.save_screenshot(str(path))
    print(f"wrote {path.relative_to(REPO)}")


def until(browser, selector: str, seconds: float = 120) -> None:
    WebDriverWait(browser, seconds, 0.2).until(lambda b: b.find_elements(By.CSS_SELECTOR, selector))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="foldserve-screens-"))
    upload = work / "upload" / "digits-v2.keras"
    upload.parent.mkdir()
    shutil.copy(DEMO_SOURCE, upload)
    try:
        with serving(make_repository(work)) as server:
            browser = start_browser()
            try:
                run(browser, server.url, upload)
            finally:
                stop_browser(browser)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(browser, url: str, upload: Path) -> None:
    browser.get(f"{url}/ui")
    until(browser, 'tr[data-model="digits"]')
    browser.find_element(By.ID, "upload-file").send_keys(str(upload))
    browser.find_element(By.ID, "upload-button").click()
    until(browser, 'li.job[data-state="done"]')
    until(browser, 'tr[data-model="digits-v2"] .state-available', 30)
    for label, width in WIDTHS.items():
        shoot(browser, "models", width, label)

    browser.get(f"{url}/ui#/models/digits/versions/1")
    until(browser, "details.bn svg")
    for label, width in WIDTHS.items():
        shoot(browser, "report", width, label)

    browser.get(f"{url}/ui#/models/digits/versions/1/compare")
    until(browser, "#compare-run")
    browser.find_element(By.ID, "compare-run").click()
    until(browser, "#compare-verdict", 60)
    for label, width in WIDTHS.items():
        shoot(browser, "compare", width, label)

    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                rows = int(time.time() * 3) % 8 + 1
                client.post(
                    f"{url}/v1/models/digits:predict", json={"instances": [[0.5] * 64] * rows}
                )
                time.sleep(0.01 + 0.03 * (int(time.time()) % 3))

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        browser.get(f"{url}/ui#/monitor")
        time.sleep(14)
        for label, width in WIDTHS.items():
            shoot(browser, "monitor", width, label)
    finally:
        stop.set()
        sender.join()

    browser.get(f"{url}/ui")
    until(browser, 'tr[data-model="digits"]')
    browser.execute_script(
        "import('/ui/api.js').then((m) => m.askToken("
        "'this endpoint needs \\'Authorization: Bearer <api token>\\''))"
    )
    until(browser, "dialog[open]")
    for label, width in WIDTHS.items():
        browser.set_window_size(width, 700)
        time.sleep(0.5)
        path = OUT / f"token-{label}.png"
        browser.save_screenshot(str(path))
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
