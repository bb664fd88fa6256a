"""The report page of a version with precision variants: their verdicts, latencies, files."""

from __future__ import annotations

import shutil
import subprocess
import sys

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from tests.service.conftest import DEMO_SOURCE, serving
from tests.ui.browser import console_errors


@pytest.fixture(scope="module")
def variant_server(tmp_path_factory):
    models = tmp_path_factory.mktemp("variant-page") / "models"
    version = models / "digits" / "1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "fold",
            str(DEMO_SOURCE),
            "-o",
            str(version),
            "--precision",
            "fp16,int8",
            "--min-agreement",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    shutil.copy(DEMO_SOURCE, version / "model.keras")
    with serving(models) as running:
        yield running


def test_variants_are_tabled_drawn_and_downloadable(browser, variant_server):
    url = variant_server.url
    report = httpx.get(f"{url}/v1/models/digits/versions/1/report").json()
    browser.get(f"{url}/ui#/models/digits/versions/1")
    WebDriverWait(browser, 20).until(ready.presence_of_element_located((By.ID, "variants")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#variants tbody tr")
    assert [row.get_attribute("data-precision") for row in rows] == ["fp16", "int8"]
    for row, entry in zip(rows, report["variants"], strict=True):
        assert ("passed" if entry["passed"] else "failed") in row.text
        assert f"digits-{entry['precision']}" in row.text
    for batch in ("batch1", "batch8"):
        bars = browser.find_elements(By.CSS_SELECTOR, f'[data-plot="variants-{batch}"] rect.bar')
        assert len(bars) == 3  # fp32, fp16, int8
    links = {
        link.get_attribute("data-download")
        for link in browser.find_elements(By.CSS_SELECTOR, "a[data-download]")
    }
    assert {"model.fp16.onnx", "model.int8.onnx"} <= links
    assert not console_errors(browser)
