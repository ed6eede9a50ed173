"""The demo in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by Selenium uploads a
DICOM, waits for the six models' results, checks every panel has content and saves a screenshot.

Skips cleanly where Chromium or its driver is not installed (``.ci/run`` installs them). Set
``SPINEBENCH_SCREENSHOT=path.png`` to keep the screenshot.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from spinebench.engine.profiles import PROFILES
from test_predict import example, make_demo_weights

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import app

    app.WEIGHTS_DIR = make_demo_weights(tmp_path_factory.getbasetemp() / "demo_weights")
    app.sp.get_predictor(str(app.WEIGHTS_DIR))  # as main() does: models loaded before serving
    _, local_url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        yield local_url
    finally:
        app.demo.close()


@pytest.fixture(scope="module")
def driver(url):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1600,2400", "--hide-scrollbars"):
        opts.add_argument(arg)
    try:
        drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    except Exception as e:  # a driver that does not match the browser, a sandbox problem...
        pytest.skip(f"cannot start headless chromium: {type(e).__name__}: {str(e).splitlines()[0]}")
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _wait(fn, timeout: float, what: str):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - elements appear and re-render while Gradio updates
            last = e
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what} ({last!r})")


def test_upload_shows_all_six_results(driver, url, tmp_path):
    from selenium.webdriver.common.by import By

    import app

    driver.get(url)
    file_input = _wait(lambda: driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]"), 60,
                       "the upload field")
    file_input.send_keys(example("dicom"))

    def rows():
        texts = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#summary [role=row]")][1:]  # no header
        return texts if len(texts) == 6 and all("(" in t for t in texts) else None

    table = _wait(rows, 180, "six rows in the summary table")
    names = [n for n in app.PANELS if app._task(n) != "cobb"]
    assert len(names) == 6
    for name in names:
        assert any(name in t for t in table), name

    def panels_loaded():
        ok = {}
        for name in names:
            imgs = driver.find_elements(By.CSS_SELECTOR, f"#panel-{name} img")
            ok[name] = bool(imgs) and driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", imgs[0])
        return ok if all(ok.values()) else None

    _wait(panels_loaded, 60, "an image in each of the six model panels")
    view = driver.find_element(By.CSS_SELECTOR, "#model-view img")
    assert driver.execute_script("return arguments[0].naturalHeight", view) == PROFILES["quick"].cache_side
    agreement = driver.find_element(By.ID, "agreement").text
    assert "of 6" in agreement and "not a diagnosis" in agreement
    meta = driver.find_element(By.ID, "image-meta").text
    assert "dicom" in meta and "DX" in meta
    page = driver.page_source
    assert "DEMO-EXAMPLE" not in page and "SYNTHETIC" not in page  # no DICOM patient field reaches the page

    shot = tmp_path / "demo.png"
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    keep = os.environ.get("SPINEBENCH_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_bad_file_shows_an_error_and_the_page_keeps_working(driver, url, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"DICM" + b"\0" * 500)
    driver.get(url)
    file_input = _wait(lambda: driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]"), 60,
                       "the upload field")
    file_input.send_keys(str(bad))
    _wait(lambda: "not a recognised image" in driver.page_source or "DICOM" in driver.find_element(
        By.CSS_SELECTOR, ".toast-body, .error").text, 60, "an error message")
