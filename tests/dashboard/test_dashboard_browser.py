"""The dashboard in a real browser: ``eegfs dashboard`` on a free port, headless Chromium
(Debian's ``chromium`` through its ``chromium-driver``; nothing is downloaded), a real training
started in the background, and its curve growing on the Run page without a page reload.

A marker set on ``window`` before the training starts must still be there after every page
change and every live update: navigation and live updates happen over Streamlit's websocket,
never by reloading. Screenshots of every page go to ``$EEGFS_TEST_SCREENSHOT_DIR`` when set
(``make dashboard-screenshots`` writes the ones in docs/), else to the test's temp directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.connections import mongo_client
from services.local import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Generous: the machine is shared and slow; every wait polls and returns as soon as it can.
START_TIMEOUT_S = 180
WAIT_S = 120
MARKER = "eegfs-no-reload"
WINDOW = (1440, 1000)
MAX_SHOT_HEIGHT = 4000

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver packages "
    "(apt-get install chromium chromium-driver; .ci/run installs them)",
)

PAGE_HEIGHT_JS = """
const main = document.querySelector('[data-testid="stMain"]');
const block = document.querySelector('[data-testid="stMainBlockContainer"]');
return Math.max(main ? main.scrollHeight : 0, block ? block.scrollHeight : 0);
"""
POINTS_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).reduce(
  (n, gd) => n + (gd.data || []).reduce((m, t) => m + ((t.x && t.x.length) || 0), 0), 0);
"""


def _wait(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:  # noqa: BLE001 - the page may be between renders
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} ({last_error!r})")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture
def dashboard_url(demo_env, tmp_path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, **demo_env.environ}
    log = open(tmp_path / "dashboard.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "eegfs", "dashboard", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: proc.poll() is not None or _healthy(url), START_TIMEOUT_S, "the dashboard")
        assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
        yield url
    finally:
        proc.send_signal(signal.SIGINT)  # eegfs passes it on and waits for Streamlit to stop
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(flag)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot_dir(tmp_path) -> Path:
    target = os.environ.get("EEGFS_TEST_SCREENSHOT_DIR")
    path = Path(target) if target else tmp_path / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _css(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _go(driver, page: str) -> None:
    """Click the sidebar link of ``page`` (client-side navigation, no reload)."""
    link = _wait(
        lambda: [
            a
            for a in _css(driver, '[data-testid="stSidebarNavLink"]')
            if a.text.strip().splitlines()[-1:] == [page]
        ],
        WAIT_S,
        f"the sidebar link {page!r}",
    )[0]
    link.click()
    _wait(lambda: any(h.text == page for h in _css(driver, "h1")), WAIT_S, f"the {page} page title")


def _settled(driver) -> bool:
    """No Streamlit "running" indicator and no skeletons: the page has finished drawing."""
    return not _css(driver, '[data-testid="stStatusWidget"]') and not _css(
        driver, '[data-testid="stSkeleton"]'
    )


def _marker(driver) -> object:
    return driver.execute_script("return window.__eegfsMarker || null;")


def _no_exception(driver, page: str) -> None:
    errors = [e.text for e in _css(driver, '[data-testid="stException"]')]
    assert not errors, f"{page}: {errors}"


def _snap(driver, directory: Path, name: str) -> None:
    """Screenshot of the whole page: the window is made as tall as the page for the picture."""
    _wait(lambda: _settled(driver), WAIT_S, "the page to finish drawing")
    height = driver.execute_script(PAGE_HEIGHT_JS) or WINDOW[1]
    driver.set_window_size(WINDOW[0], int(min(max(height + 120, WINDOW[1]), MAX_SHOT_HEIGHT)))
    try:
        _wait(lambda: _settled(driver), WAIT_S, "the page to draw at its new size")
        time.sleep(1.5)  # let plotly finish resizing before the picture (not an assertion)
        driver.save_screenshot(str(directory / f"dashboard-{name}.png"))
    finally:
        driver.set_window_size(*WINDOW)


def _start_training(env, tmp_path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "eegfs",
        "train",
        "--challenge",
        "2",
        "--data",
        *env.c2_files,
        "--epochs",
        "500",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--features",
        "online",
        "--log-every",
        "1",
        "--name",
        "browser-live",
        "--tag",
        "demo",
        "--no-progress",
    ]
    log = open(tmp_path / "train.log", "wb")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        command, env={**os.environ, **env.environ}, stdout=log, stderr=subprocess.STDOUT
    )


def _running_run_id(env) -> str | None:
    client = mongo_client(env.mongo_uri)
    try:
        doc = client[env.mongo_db].experiments.find_one({"name": "browser-live"})
    finally:
        client.close()
    return str(doc["_id"]) if doc and doc.get("status") == "running" else None


def test_run_page_curve_grows_live_without_reload(
    demo_env, dashboard_url, browser, screenshot_dir, tmp_path
):
    driver = browser
    driver.get(dashboard_url)
    _wait(lambda: _css(driver, '[data-testid="stDataFrame"]'), WAIT_S, "the runs table")
    _no_exception(driver, "Runs")
    _snap(driver, screenshot_dir, "runs")
    driver.execute_script(f"window.__eegfsMarker = '{MARKER}';")

    training = _start_training(demo_env, tmp_path)
    try:
        run_id = _wait(lambda: _running_run_id(demo_env), START_TIMEOUT_S, "the training run")
        _go(driver, "Run")
        _wait(
            lambda: any("browser-live" in h.text for h in _css(driver, "h3")),
            WAIT_S,
            "the running run's page",
        )
        first = _wait(lambda: driver.execute_script(POINTS_JS), WAIT_S, "a first curve point")
        grown = _wait(
            lambda: (
                (driver.execute_script(POINTS_JS) or 0) > first and driver.execute_script(POINTS_JS)
            ),
            WAIT_S,
            f"more than {first} curve points",
        )
        assert grown > first
        assert _marker(driver) == MARKER, "the page reloaded while the curve grew"
        assert training.poll() is None, (tmp_path / "train.log").read_text()
        _no_exception(driver, "Run")
        _snap(driver, screenshot_dir, "run")
        assert run_id in driver.page_source
    finally:
        if training.poll() is None:
            training.send_signal(signal.SIGINT)  # recorded as "stopped"
        try:
            training.wait(120)
        except subprocess.TimeoutExpired:
            training.kill()
            training.wait()

    from training.predict import predict_file  # the Models page lists predictions

    predict_file(
        demo_env.settings, "demo-model@candidate", demo_env.c2_files[0], out=tmp_path / "p.parquet"
    )
    for page in ("Compare", "Models", "Features", "Services"):
        _go(driver, page)
        if page == "Models":
            _wait(
                lambda: any("Predictions" in h.text for h in _css(driver, "h4")),
                WAIT_S,
                "the predictions section",
            )
            assert "No predictions recorded yet" not in driver.page_source
        if page == "Features":
            _wait(lambda: _css(driver, '[data-testid="stImage"] img'), WAIT_S, "the topography")
        if page == "Compare":
            _wait(lambda: driver.execute_script(POINTS_JS), WAIT_S, "the compared curves")
        _no_exception(driver, page)
        _snap(driver, screenshot_dir, page.lower())
        assert _marker(driver) == MARKER, f"the page reloaded on the way to {page}"
