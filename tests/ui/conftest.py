"""One headless Chromium for the module, and real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.conftest import Server, demo_server, folded_copy, serving
from tests.ui.browser import find_browser, start_browser, stop_browser

ADMIN_TOKEN = "admin-secret"
API_TOKEN = "reader-secret"


@pytest.fixture(scope="module")
def browser():
    found = find_browser()
    if isinstance(found, str):
        pytest.skip(found)
    driver = start_browser()
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        stop_browser(driver)


@pytest.fixture(scope="module")
def console_server(tmp_path_factory) -> Iterator[Server]:
    yield from demo_server(tmp_path_factory, "console")


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, console_server) -> Iterator[Server]:
    """Admin and API tokens set; the demo model copied in already folded."""
    models = folded_copy(tmp_path_factory, console_server, "console-tokens")
    env = {"FOLDSERVE_ADMIN_TOKEN": ADMIN_TOKEN, "FOLDSERVE_API_TOKEN": API_TOKEN}
    with serving(models, env) as running:
        yield running
