"""The web console at /ui, driven in a real headless Chromium against a real server."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from tests.service.conftest import make_repository, serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "no chromium/chromedriver: run scripts/ensure-chromium.sh (make test does)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as until  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def start_browser(width: int = 1280, height: int = 1000):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='foldserve-chromium-')}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def requested_urls(driver) -> list[str]:
    """Every URL the page asked the network for since the last call."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def console_server(tmp_path_factory):
    with serving(make_repository(tmp_path_factory.mktemp("console"))) as running:
        yield running


def wait(driver, timeout: float = 60):
    return WebDriverWait(driver, timeout)


def test_models_page_lists_the_served_models(browser, console_server):
    browser.get(f"{console_server.url}/ui/")
    table = wait(browser).until(until.presence_of_element_located((By.ID, "models-table")))
    assert "digits" in table.text and "AVAILABLE" in table.text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_drop_upload_follows_the_job_to_the_drawn_report(
    browser, console_server, trained_model_file
):
    browser.get(f"{console_server.url}/ui/")
    wait(browser).until(until.presence_of_element_located((By.ID, "drop-zone")))
    # A real drop: the file goes into a DataTransfer and lands on the drop zone.
    browser.execute_script(
        "const input = document.createElement('input'); input.type = 'file';"
        "input.id = 'dropped'; document.body.append(input);"
    )
    browser.find_element(By.ID, "dropped").send_keys(str(trained_model_file))
    browser.execute_script(
        "const transfer = new DataTransfer();"
        "transfer.items.add(document.getElementById('dropped').files[0]);"
        "document.getElementById('drop-zone').dispatchEvent("
        "  new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));"
    )
    assert "Fresh Digits.keras" in browser.find_element(By.ID, "upload-chosen").text
    browser.find_element(By.ID, "upload-name").send_keys("console-digits")
    browser.find_element(By.ID, "upload-button").click()
    link = wait(browser, 180).until(until.presence_of_element_located((By.ID, "upload-report")))
    stages = browser.find_elements(By.CSS_SELECTOR, "#upload-status .stages li")
    assert [stage.get_attribute("class") for stage in stages] == ["done"] * 6
    assert browser.find_element(By.ID, "upload-progress").get_attribute("value") == "6"
    link.click()

    wait(browser).until(until.presence_of_element_located((By.ID, "verification")))
    report = httpx.get(f"{console_server.url}/v1/models/console-digits/versions/1/report").json()
    assert "passed" in browser.find_element(By.ID, "verification").text
    bn_cards = browser.find_elements(By.CSS_SELECTOR, "#bns article.bn")
    assert len(bn_cards) == len(report["folded"]) + len(report["not_folded"]) > 0
    for card, entry in zip(bn_cards, report["folded"], strict=False):
        assert card.get_attribute("data-bn") == entry["bn"]
        plots = card.find_elements(By.CSS_SELECTOR, "svg.plot")
        assert len(plots) == 4  # scale, gamma/beta, moving mean, moving variance
        bars = plots[0].find_elements(By.CSS_SELECTOR, "rect[data-channel]")
        assert len(bars) == entry["stats"]["channels"]
        drawn = [float(bar.get_attribute("data-value")) for bar in bars]
        np.testing.assert_allclose(drawn, entry["stats"]["per_channel"]["scale"])
        assert len(plots[1].find_elements(By.CSS_SELECTOR, "polyline")) == 2
    error_bars = browser.find_elements(By.CSS_SELECTOR, "#verification svg rect")
    assert len(error_bars) == 3 * len(report["verification"]["outputs"])


def test_compare_playground_runs_and_plots(browser, console_server, digits):
    browser.get(f"{console_server.url}/ui/#/models/digits/1")
    rows = wait(browser).until(until.presence_of_element_located((By.ID, "compare-rows")))
    rows.clear()
    rows.send_keys(json.dumps(digits.data[:3].astype("float32").tolist()))
    browser.find_element(By.ID, "compare-button").click()
    table = wait(browser, 120).until(until.presence_of_element_located((By.ID, "compare-table")))
    assert "probabilities" in table.text and "yes" in table.text
    result = browser.find_element(By.ID, "compare-result")
    assert "passed" in result.text
    series = result.find_elements(By.CSS_SELECTOR, "polyline[data-series]")
    assert [line.get_attribute("data-series") for line in series] == [
        "folded",
        "unfolded",
        "source",
    ]
    latency_bars = result.find_elements(By.CSS_SELECTOR, "svg rect[data-value]")
    assert len(latency_bars) == 2 and all(
        float(bar.get_attribute("data-value")) > 0 for bar in latency_bars
    )
    assert "source model:" in result.find_element(By.ID, "compare-source-latency").text


def test_compare_reads_an_npy_file(browser, console_server, digits, tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, digits.data[5:7].astype("float64"))
    browser.get(f"{console_server.url}/ui/#/models/digits/1")
    wait(browser).until(until.presence_of_element_located((By.ID, "compare-npy"))).send_keys(
        str(path)
    )
    wait(browser).until(
        lambda driver: (
            json.loads(driver.find_element(By.ID, "compare-rows").get_property("value"))
            == digits.data[5:7].tolist()
        )
    )


def test_bad_rows_show_the_servers_error(browser, console_server):
    browser.get(f"{console_server.url}/ui/#/models/digits/1")
    rows = wait(browser).until(until.presence_of_element_located((By.ID, "compare-rows")))
    rows.clear()
    rows.send_keys("[[1, 2, 3]]")
    browser.find_element(By.ID, "compare-button").click()
    error = wait(browser).until(until.presence_of_element_located((By.ID, "compare-error")))
    assert "shape" in error.text


def test_the_console_asks_for_a_token(browser, guarded_server):
    browser.get(f"{guarded_server.url}/ui/")
    dialog = wait(browser).until(until.visibility_of_element_located((By.ID, "token-dialog")))
    assert "token" in dialog.text.lower()
    field = browser.find_element(By.ID, "token-input")
    field.send_keys("reader-secret", Keys.ENTER)
    table = wait(browser).until(until.presence_of_element_located((By.ID, "models-table")))
    assert "digits" in table.text
    browser.execute_script("sessionStorage.clear()")


def test_the_page_talks_only_to_its_own_server(browser, console_server):
    requested_urls(browser)  # drop what earlier tests asked for
    browser.get(f"{console_server.url}/ui/")
    wait(browser).until(until.presence_of_element_located((By.ID, "models-table")))
    browser.get(f"{console_server.url}/ui/#/models/digits/1")
    wait(browser).until(until.presence_of_element_located((By.ID, "bns")))
    time.sleep(2.5)  # one round of the live statistics
    urls = requested_urls(browser)
    assert any(url.endswith("/v2/models/stats") for url in urls)
    own = urlparse(console_server.url).netloc
    foreign = [url for url in urls if urlparse(url).scheme in ("http", "https")]
    foreign = [url for url in foreign if urlparse(url).netloc != own]
    assert foreign == []
    policy = httpx.get(f"{console_server.url}/ui/").headers["content-security-policy"]
    assert "default-src 'self'" in policy


def test_phone_width_has_no_sideways_scroll(console_server):
    driver = start_browser(375, 800)
    try:
        for page in ("", "#/models/digits/1", "#/jobs"):
            driver.get(f"{console_server.url}/ui/{page}")
            wait(driver).until(until.presence_of_element_located((By.CSS_SELECTOR, "main h1")))
            time.sleep(0.5)
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, page
    finally:
        driver.quit()


def _operation(driver, method: str, path: str):
    """Open one operation of Swagger UI and press "Try it out"."""
    block = driver.find_element(
        By.XPATH,
        f"//div[contains(@class,'opblock-{method}')]"
        f"[.//*[contains(@class,'opblock-summary-path') and @data-path='{path}']]",
    )
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait(driver).until(lambda _: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    return block


def _execute(driver, block) -> str:
    block.find_element(By.CSS_SELECTOR, ".execute").click()
    status = wait(driver, 180).until(
        lambda _: block.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"
        )
    )
    return status[0].text.strip()


def test_swagger_ui_sends_a_prediction_and_an_upload(
    browser, console_server, digits, trained_model_file
):
    browser.get(f"{console_server.url}/docs")
    wait(browser).until(until.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))

    predict = _operation(browser, "post", "/v1/models/{name}:predict")
    predict.find_element(By.CSS_SELECTOR, "tr[data-param-name='name'] input").send_keys("digits")
    body = predict.find_element(By.CSS_SELECTOR, "textarea.body-param__text")
    body.send_keys(Keys.CONTROL, "a")
    body.send_keys(Keys.DELETE)
    body.send_keys(json.dumps({"instances": [digits.data[0].astype("float32").tolist()]}))
    status = _execute(browser, predict)
    assert status == "200", predict.find_element(By.CSS_SELECTOR, ".live-responses-table").text
    answer = predict.find_element(
        By.CSS_SELECTOR, ".live-responses-table tbody .response-col_description"
    )
    assert "predictions" in answer.text

    upload = _operation(browser, "post", "/v1/models")
    upload.find_element(By.CSS_SELECTOR, "input[type='file']").send_keys(str(trained_model_file))
    name = upload.find_element(By.CSS_SELECTOR, "tr[data-property-name='name'] input")
    name.send_keys(Keys.CONTROL, "a")  # Swagger UI fills in an example name
    name.send_keys(Keys.DELETE)
    name.send_keys("from-swagger")
    status = _execute(browser, upload)
    assert status == "202", upload.find_element(By.CSS_SELECTOR, ".live-responses-table").text
    job = httpx.get(f"{console_server.url}/v1/jobs?limit=1").json()["jobs"][0]
    assert job["name"] == "from-swagger"
    for _ in range(600):
        job = httpx.get(f"{console_server.url}/v1/jobs/{job['id']}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert job["state"] == "done", job
