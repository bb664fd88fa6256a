"""The web console (/ui) and /docs, driven in headless Chromium against a real server."""

from __future__ import annotations

import json
import shutil
import threading
import time
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from tests.service.conftest import DEMO_SOURCE
from tests.ui.browser import console_errors, requested_urls
from tests.ui.conftest import ADMIN_TOKEN, API_TOKEN

FOLD_WAIT_S = 120


def wait(browser, seconds: float = 20) -> WebDriverWait:
    # an element the console re-renders between finding and reading it is asked again
    return WebDriverWait(
        browser, seconds, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )


def css(browser, selector: str, seconds: float = 20):
    return wait(browser, seconds).until(
        ready.presence_of_element_located((By.CSS_SELECTOR, selector))
    )


def drop_file(browser, zone_selector: str, path) -> None:
    """A drop event on the zone, its DataTransfer holding a real file (read from a file input)."""
    browser.execute_script(
        "const input = document.createElement('input');"
        "input.type = 'file'; input.id = 'drop-source'; input.hidden = true;"
        "document.body.append(input);"
    )
    browser.find_element(By.ID, "drop-source").send_keys(str(path))
    browser.execute_script(
        "const source = document.getElementById('drop-source');"
        "const data = new DataTransfer(); data.items.add(source.files[0]); source.remove();"
        "const zone = document.querySelector(arguments[0]);"
        "zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true,"
        " cancelable: true}));"
        "zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true,"
        " cancelable: true}));",
        zone_selector,
    )


def test_models_page_lists_the_repository(browser, console_server):
    browser.get(f"{console_server.url}/ui")
    row = css(browser, 'tr[data-model="digits"][data-version="1"]')
    assert row.find_element(By.CSS_SELECTOR, ".state").text == "AVAILABLE"
    assert (
        row.find_element(By.LINK_TEXT, "Compare")
        .get_attribute("href")
        .endswith("#/models/digits/versions/1/compare")
    )


def test_dropped_model_is_folded_with_live_stages(browser, console_server, tmp_path):
    model = tmp_path / "dropped.keras"
    shutil.copy(DEMO_SOURCE, model)
    browser.get(f"{console_server.url}/ui")
    css(browser, 'tr[data-model="digits"]')
    # every state a job card shows, as the events arrive
    browser.execute_script(
        "window.seenStates = [];"
        "new MutationObserver((changes) => changes.forEach((c) => {"
        "  if (c.attributeName === 'data-state') window.seenStates.push(c.target.dataset.state);"
        "})).observe(document.getElementById('jobs'), {attributes: true, subtree: true,"
        " attributeFilter: ['data-state']});"
    )
    drop_file(browser, "#dropzone", model)
    card = css(browser, "li.job")
    assert card.find_element(By.CSS_SELECTOR, ".job-title").text == "dropped version 1"
    wait(browser, FOLD_WAIT_S).until(lambda _: card.get_attribute("data-state") == "done")
    seen = browser.execute_script("return window.seenStates")
    assert seen[-1] == "done"
    assert {"loading", "folding", "verifying"} & set(seen), seen
    stages = card.find_elements(By.CSS_SELECTOR, ".stages li")
    # every stage done, but quantizing: no precision variants were asked for
    classes = {stage.get_attribute("data-stage"): stage.get_attribute("class") for stage in stages}
    assert "skipped" in classes.pop("quantizing")
    assert all("done" in value for value in classes.values()), classes
    timings = card.find_element(By.CSS_SELECTOR, ".job-timings").text
    assert "folding" in timings and "verifying" in timings
    row = 'tr[data-model="dropped"][data-version="1"]'
    css(browser, row, 10)
    # the table is redrawn as models change: the row is looked up afresh each time
    wait(browser).until(
        lambda b: b.find_element(By.CSS_SELECTOR, f"{row} .state").text == "AVAILABLE"
    )
    card.find_element(By.LINK_TEXT, "Open the report").click()
    css(browser, "#verdict")
    assert browser.current_url.endswith("#/models/dropped/versions/1")


def test_report_is_drawn_per_batch_norm(browser, console_server):
    report = httpx.get(f"{console_server.url}/v1/models/dropped/versions/1/report").json()
    browser.get(f"{console_server.url}/ui#/models/dropped/versions/1")
    assert css(browser, "#verdict").text == f"verification {report['verification']['verdict']}"
    sections = browser.find_elements(By.CSS_SELECTOR, "details.bn")
    assert [s.get_attribute("data-bn") for s in sections] == [e["bn"] for e in report["folded"]]
    for section, entry in zip(sections, report["folded"], strict=True):
        channels = entry["stats"]["channels"]
        scale = section.find_element(By.CSS_SELECTOR, '[data-plot="scale"] svg')
        assert scale.get_attribute("data-points") == str(channels)
        path = scale.find_element(By.CSS_SELECTOR, "path.series").get_attribute("d")
        assert path.count("L") == channels - 1
        gamma_beta = section.find_element(By.CSS_SELECTOR, '[data-plot="gamma-beta"] svg')
        assert gamma_beta.get_attribute("data-points") == str(2 * channels)
        for kind in ("moving-mean", "moving-variance"):
            plot = section.find_element(By.CSS_SELECTOR, f'[data-plot="{kind}"] svg')
            assert plot.get_attribute("data-points") == str(channels)
        badges = section.find_element(By.CSS_SELECTOR, ".badges").text
        assert f"scale spread: {entry['diagnostics']['scale_spread']:.4g}" in badges
    check = report["verification"]["outputs"][0]
    bars = browser.find_elements(By.CSS_SELECTOR, "#verification svg rect.bar")
    drawn = [float(bar.get_attribute("data-value")) for bar in bars]
    assert drawn == pytest.approx(
        [check["fold_error"], check["export_error"], check["total_error"]]
    )
    limits = browser.find_elements(By.CSS_SELECTOR, "#verification svg line[data-limit]")
    assert [float(tick.get_attribute("data-limit")) for tick in limits] == pytest.approx(
        [check["fold_limit"], check["export_limit"]]
    )
    links = {
        link.get_attribute("data-download"): link.get_attribute("href")
        for link in browser.find_elements(By.CSS_SELECTOR, "a[data-download]")
    }
    assert set(links) == {"report", "model.onnx", "unfolded.onnx"}
    onnx = httpx.get(links["model.onnx"])
    assert onnx.status_code == 200
    assert 'filename="dropped-1-model.onnx"' in onnx.headers["content-disposition"]


def test_compare_runs_folded_unfolded_and_source(browser, console_server):
    browser.get(f"{console_server.url}/ui#/models/dropped/versions/1")
    css(browser, "a.primary").click()
    keras = css(browser, "#compare-keras")
    assert keras.is_enabled() and keras.is_selected()
    rows = json.loads(browser.find_element(By.ID, "compare-rows").get_attribute("value"))
    assert np.asarray(rows).shape == (4, 64)
    browser.find_element(By.ID, "compare-run").click()
    verdict = css(browser, "#compare-verdict", 60)
    assert verdict.text.startswith("passed")
    latency = browser.find_elements(By.CSS_SELECTOR, '[data-plot="latency"] rect.bar')
    assert {bar.get_attribute("data-name") for bar in latency} == {"folded", "unfolded", "source"}
    assert all(float(bar.get_attribute("data-value")) > 0 for bar in latency)
    assert float(browser.find_element(By.CSS_SELECTOR, "td.keras-max-abs").text) < 1e-3
    outputs = browser.find_element(By.CSS_SELECTOR, '[data-plot="outputs"] svg')
    assert outputs.get_attribute("data-points") == str(3 * 10)  # three variants, 10 classes
    differences = browser.find_element(By.CSS_SELECTOR, '[data-plot="differences"] svg')
    assert differences.get_attribute("data-points") == str(2 * 4 * 10)


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<i8"])
def test_compare_reads_a_dropped_npy(browser, console_server, tmp_path, dtype):
    from sklearn.datasets import load_digits

    rows = load_digits().data[:3].astype(dtype)
    path = tmp_path / "rows.npy"
    np.save(path, rows)
    browser.get(f"{console_server.url}/ui#/models/digits/versions/1/compare")
    css(browser, "#compare-drop")
    drop_file(browser, "#compare-drop", path)
    wait(browser).until(lambda b: "rows.npy" in b.find_element(By.ID, "compare-note").text)
    value = browser.find_element(By.ID, "compare-rows").get_attribute("value")
    assert np.asarray(json.loads(value)) == pytest.approx(rows)
    browser.find_element(By.ID, "compare-run").click()
    css(browser, "#compare-verdict", 60)
    outputs = browser.find_element(By.CSS_SELECTOR, '[data-plot="outputs"] svg')
    assert outputs.get_attribute("data-points") == str(3 * 10)
    expected = httpx.post(
        f"{console_server.url}/v1/models/digits/versions/1:predict",
        json={"instances": rows.tolist()},
    ).json()["predictions"]
    first_row = browser.find_element(By.CSS_SELECTOR, '[data-plot="outputs"] path[data-series]')
    assert first_row.get_attribute("data-count") == str(len(expected[0]))


def test_monitor_shows_the_request_rate(browser, console_server):
    browser.get(f"{console_server.url}/ui#/monitor")
    css(browser, '[data-plot="rate"]')
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                client.post(
                    f"{console_server.url}/v1/models/digits:predict",
                    json={"instances": [[0.0] * 64]},
                )
                time.sleep(0.02)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait(browser, 30).until(
            lambda b: float(b.find_element(By.ID, "monitor-rate").text.split()[2]) > 1,
            message=browser.find_element(By.ID, "monitor-rate").text,
        )
    finally:
        stop.set()
        sender.join()
    count = browser.find_element(By.CSS_SELECTOR, 'tr[data-model="digits"] td.requests')
    assert int(count.text) > 0
    rate = browser.find_element(By.CSS_SELECTOR, '[data-plot="rate"] svg')
    assert int(rate.get_attribute("data-points")) >= 1


def test_token_is_asked_for_and_the_call_retried(browser, token_server, tmp_path):
    browser.get(f"{token_server.url}/ui")
    dialog = css(browser, "dialog[open]")
    assert "api token" in dialog.find_element(By.ID, "token-reason").text
    browser.find_element(By.ID, "token-input").send_keys(API_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    css(browser, 'tr[data-model="digits"]')
    assert browser.execute_script("return sessionStorage.getItem('foldserve.token')") == API_TOKEN
    # an upload needs the admin token: asked for again, and the upload goes through
    model = tmp_path / "guarded.keras"
    shutil.copy(DEMO_SOURCE, model)
    browser.find_element(By.ID, "upload-file").send_keys(str(model))
    browser.find_element(By.ID, "upload-button").click()
    dialog = css(browser, "dialog[open]")
    assert "admin token" in dialog.find_element(By.ID, "token-reason").text
    browser.find_element(By.ID, "token-input").send_keys(ADMIN_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    card = css(browser, "li.job")
    assert card.find_element(By.CSS_SELECTOR, ".job-title").text == "guarded version 1"
    jobs = httpx.get(
        f"{token_server.url}/v1/jobs", headers={"Authorization": f"Bearer {API_TOKEN}"}
    ).json()["jobs"]
    assert [job["name"] for job in jobs] == ["guarded"]


def _swagger_operation(browser, url: str, tag: str, operation: str):
    browser.get("about:blank")  # Swagger UI opens the deep-linked operation on a fresh load
    browser.get(f"{url}/docs#/{tag}/{operation}")
    block = css(browser, f"#operations-{tag.replace(' ', '_')}-{operation}.is-open", 30)
    # the opened operation renders its body a moment after the block itself
    wait(browser, 30).until(lambda _: block.find_elements(By.CSS_SELECTOR, "button.try-out__btn"))[
        0
    ].click()
    return block


def _swagger_execute(browser, block) -> tuple[str, str]:
    block.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = wait(browser, 60).until(
        lambda _: block.find_element(
            By.CSS_SELECTOR, ".live-responses-table tbody td.response-col_status"
        )
    )
    body = block.find_element(
        By.CSS_SELECTOR, ".live-responses-table tbody .response-col_description pre"
    )
    return status.text.strip(), body.text


def test_docs_try_it_out_sends_a_prediction(browser, console_server):
    block = _swagger_operation(browser, console_server.url, "TensorFlow Serving REST", "predict")
    name = block.find_element(By.CSS_SELECTOR, 'input[placeholder="name"]')
    name.clear()  # the documented example is prefilled
    name.send_keys("digits")
    body = block.find_element(By.CSS_SELECTOR, "textarea.body-param__text")
    body.send_keys(Keys.CONTROL, "a")
    body.send_keys(Keys.DELETE)
    body.send_keys(json.dumps({"instances": [[0.5] * 64]}))
    status, text = _swagger_execute(browser, block)
    assert status == "200", text
    assert '"predictions"' in text


def test_docs_try_it_out_uploads_a_file(browser, console_server, tmp_path):
    model = tmp_path / "from-docs.keras"
    shutil.copy(DEMO_SOURCE, model)
    upload = httpx.get(f"{console_server.url}/openapi.json").json()["paths"]["/v1/models"]["post"]
    schema = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["file"] == {**schema["properties"]["file"], "type": "string"}
    assert schema["properties"]["file"]["format"] == "binary"
    block = _swagger_operation(browser, console_server.url, "Model store", upload["operationId"])
    block.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(model))
    name = block.find_element(By.CSS_SELECTOR, '.opblock-section-request-body input[type="text"]')
    assert name.get_attribute("value") == "my-model"
    name.send_keys(Keys.CONTROL, "a")
    name.send_keys("from-docs")
    status, text = _swagger_execute(browser, block)
    assert status == "202", text
    assert '"name": "from-docs"' in text
    job = httpx.get(f"{console_server.url}/v1/jobs?limit=1").json()["jobs"][0]
    assert (job["name"], job["filename"]) == ("from-docs", "from-docs.keras")


def test_no_request_left_127_0_0_1_and_no_console_errors(browser, console_server):
    urls = requested_urls(browser)
    assert any(url.startswith(f"{console_server.url}/ui/") for url in urls)
    outside = [
        url
        for url in urls
        if urlparse(url).scheme in {"http", "https", "ws", "wss"}
        and urlparse(url).hostname != "127.0.0.1"
    ]
    assert outside == []
    assert console_errors(browser) == []
    page = httpx.get(f"{console_server.url}/ui")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{console_server.url}/ui/../pyproject.toml").status_code == 404
