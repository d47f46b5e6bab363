"""The dashboard in a real browser: headless Chromium against the FastAPI example under uvicorn.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``/usr/bin/chromium``,
``/usr/bin/chromedriver``); skipped, saying so, without them. Selenium is
pointed at that chromedriver, so it downloads nothing.

``QUIV_SAVE_SCREENSHOT=1`` also writes the screenshot to ``docs/img/dashboard.png``.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "browser-test-token"

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "the browser test needs Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="the browser test needs selenium (the dev extra)")
pytest.importorskip("uvicorn", reason="the browser test needs uvicorn (the dev extra)")
pytest.importorskip("fastapi", reason="the browser test serves the FastAPI example")
pytest.importorskip("jinja2", reason="the dashboard needs the web extra")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server() -> Iterator[str]:
    """The FastAPI example served by a real uvicorn in a child process."""
    port = _free_port()
    env = {**os.environ, "QUIV_OPERATOR_TOKEN": TOKEN}
    command = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", "examples"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    child = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert child.poll() is None, "uvicorn exited before serving"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,720",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _row(driver: webdriver.Chrome, name: str) -> WebElement:
    return driver.find_element(By.XPATH, f"//table[@id='tasks']//tr[td/a[text()='{name}']]")


def _bar_value(driver: webdriver.Chrome, name: str) -> int | None:
    bars = _row(driver, name).find_elements(By.CSS_SELECTOR, "[role=progressbar]")
    return int(bars[0].get_attribute("aria-valuenow") or 0) if bars else None


def _pixels_vary(png: bytes) -> bool:
    """Whether a PNG is more than one flat colour (decoded by hand: no imaging library)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    data, offset = b"", 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        if kind == b"IDAT":
            data += png[offset + 8 : offset + 8 + length]
        offset += 12 + length
    raw = zlib.decompress(data)
    stride = len(raw) // height
    assert width > 0 and stride > width
    # Rows after the first, filtered "up" or not, differ from a flat image's only
    # if the picture has content; count the distinct non-filter bytes.
    distinct = {raw[row * stride + 1 : (row + 1) * stride] for row in range(0, height, 7)}
    return len(distinct) > 5


def test_the_dashboard_runs_shows_progress_and_cancels(
    server: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    # Rows are rebuilt by live updates: an element can go stale between two looks.
    wait = WebDriverWait(
        browser, 20, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
    )
    # The example protects the dashboard: without the operator's cookie, nothing.
    browser.get(f"{server}/quiv/")
    assert "log in" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{server}/login")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.current_url == f"{server}/quiv/")
    wait.until(lambda d: d.find_element(By.ID, "live").text == "live")

    # A task is listed with its trigger; "Run now" runs it and its bar fills up.
    report = _row(browser, "nightly-report")
    assert "cron '0 3 * * *'" in report.text
    report.find_element(By.CSS_SELECTOR, "[data-action=run]").click()
    seen: list[int] = []

    def full(driver: webdriver.Chrome) -> bool:
        value = _bar_value(driver, "nightly-report")
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)
        return value == 100

    wait.until(full)
    assert seen == sorted(seen) and len(seen) >= 3, seen  # it advanced, live, to 100 %
    outcome = '[data-field="outcome"] .status'
    wait.until(lambda d: _row(d, "nightly-report").find_element(By.CSS_SELECTOR, outcome).text)
    assert _row(browser, "nightly-report").find_element(By.CSS_SELECTOR, outcome).text == (
        "completed"
    )

    # Another, long job: it starts and reports, then is cancelled from the jobs page.
    _row(browser, "full-reindex").find_element(By.CSS_SELECTOR, "[data-action=run]").click()
    wait.until(lambda d: (_bar_value(d, "full-reindex") or 0) >= 2)
    png = browser.get_screenshot_as_png()
    assert _pixels_vary(png), "the screenshot is blank"
    (tmp_path / "dashboard.png").write_bytes(png)
    if os.environ.get("QUIV_SAVE_SCREENSHOT") == "1":
        (ROOT / "docs" / "img" / "dashboard.png").write_bytes(png)

    browser.find_element(By.LINK_TEXT, "Jobs").click()
    wait.until(lambda d: d.find_element(By.ID, "live").text == "live")
    running = browser.find_element(
        By.XPATH, "//table[@id='jobs']//tr[td[2][text()='full-reindex']]"
    )
    assert running.find_element(By.CSS_SELECTOR, "[data-field=status]").text == "running"
    running.find_element(By.CSS_SELECTOR, "[data-action=cancel]").click()
    wait.until(
        lambda d: running.find_element(By.CSS_SELECTOR, "[data-field=status]").text == "cancelled"
    )
    assert not running.find_elements(By.CSS_SELECTOR, "[data-action=cancel]")
