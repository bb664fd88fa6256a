"""Screenshots of every console page, desktop and phone width, into docs/ui/.

    .venv/bin/python scripts/ui_screenshots.py

Starts a server on a temporary copy of the demo repository (127.0.0.1 only), uploads
the demo model through the page, runs a compare, and drives headless Chromium as the
browser tests do (tests/service/test_console.py).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as until  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from tests.service.conftest import DEMO_SOURCE, make_repository, serving  # noqa: E402
from tests.service.test_console import start_browser  # noqa: E402

OUT = REPO / "docs" / "ui"


def full_page(driver, path: Path, width: int) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(height + 120, 6000))
    time.sleep(0.4)
    driver.save_screenshot(str(path))
    print(f"wrote {path.relative_to(REPO)}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = load_digits().data[:4].astype("float32").tolist()
    with (
        tempfile.TemporaryDirectory() as scratch,
        serving(make_repository(Path(scratch))) as server,
    ):
        driver = start_browser()
        try:
            wait = WebDriverWait(driver, 120)
            driver.get(f"{server.url}/ui/")
            wait.until(until.presence_of_element_located((By.ID, "models-table")))
            driver.find_element(By.ID, "upload-file").send_keys(str(DEMO_SOURCE))
            driver.find_element(By.ID, "upload-name").send_keys("digits-upload")
            driver.find_element(By.ID, "upload-button").click()
            wait.until(until.presence_of_element_located((By.ID, "upload-report")))
            time.sleep(3.5)  # the models table refreshes
            full_page(driver, OUT / "models.png", 1280)

            driver.get(f"{server.url}/ui/#/models/digits-upload/1")
            text = wait.until(until.presence_of_element_located((By.ID, "compare-rows")))
            text.clear()
            text.send_keys(json.dumps(rows))
            driver.find_element(By.ID, "compare-button").click()
            wait.until(until.presence_of_element_located((By.ID, "compare-table")))
            full_page(driver, OUT / "version.png", 1280)

            driver.get(f"{server.url}/ui/#/jobs")
            wait.until(until.presence_of_element_located((By.CSS_SELECTOR, "#jobs table")))
            full_page(driver, OUT / "jobs.png", 1280)

            for page, name in (
                ("", "models-phone.png"),
                ("#/models/digits/1", "version-phone.png"),
            ):
                driver.set_window_size(375, 800)
                driver.get(f"{server.url}/ui/{page}")
                wait.until(until.presence_of_element_located((By.CSS_SELECTOR, "main h1")))
                time.sleep(2.5)
                full_page(driver, OUT / name, 375)
        finally:
            driver.quit()
    with tempfile.TemporaryDirectory() as scratch:
        models = make_repository(Path(scratch))
        env = {"FOLDSERVE_API_TOKEN": "reader-secret"}
        with serving(models, env) as server:
            driver = start_browser()
            try:
                driver.get(f"{server.url}/ui/")
                WebDriverWait(driver, 60).until(
                    until.visibility_of_element_located((By.ID, "token-dialog"))
                )
                driver.set_window_size(1280, 700)
                driver.save_screenshot(str(OUT / "token.png"))
                print(f"wrote {(OUT / 'token.png').relative_to(REPO)}")
            finally:
                driver.quit()


if __name__ == "__main__":
    main()
