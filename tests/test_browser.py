"""Reading along in a real browser: JupyterLab on 127.0.0.1 (a free port, a token), Debian's ``chromium`` and
``chromium-driver`` driven by Selenium.

Notebook 03 is written with the ``smoke`` profile and ``interactive = True`` injected (papermill's
``parameterize_notebook``, as a reader would set them in the parameters cell) into a temporary folder, opened in
JupyterLab and run with *Run → Run All Cells*; its network trains into a temporary runs folder
(``ZFREPRO_RUNS``) and its results and figures go to a temporary project home (``ZFREPRO_HOME``). Then:

- the feature explorer renders (a layer picker and a drawn image) and choosing another layer redraws it;
- moving the occlusion explorer's sliders (keyboard on the slider handles) changes its image and the
  probabilities it writes below it;
- no cell printed a traceback; screenshots go to ``build/browser/``.

Skips, saying why, without selenium, JupyterLab, a chromium binary and its driver, or a dataset (``ZFREPRO_DATA``).
Every wait is bounded (the whole test: about 2-4 minutes on 2 CPU cores, at most ``_BUDGET_S``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "browser"
NOTEBOOK = ROOT / "notebooks" / "03_feature_visualization.ipynb"
_BUDGET_S = 600  # run all of notebook 03 on smoke, training included (about 2 min alone on 2 cores)


def _browser() -> tuple[str, str]:
    """(chromium binary, chromedriver) or a skip naming what is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[dev]'")
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        pytest.skip("JupyterLab is not installed: pip install -e '.[dev]'")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.access(p, os.X_OK)), None)
    if not binary or not driver:
        pytest.skip("no browser: the test drives Debian's chromium with its driver "
                    "(apt-get install -y chromium chromium-driver; .ci/run installs them where it can)")
    return binary, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, every: float = 0.5):
    """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout`` s.
    Says what it waits for (``pytest -s`` shows it): the steps of a slow browser test, in CI's log."""
    print(f"browser test: waiting for {what} (at most {timeout:.0f}s)", flush=True)
    end = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < end:
        try:
            got = check()
            if got:
                return got
        except Exception as exc:  # noqa: BLE001 - a page still rendering: try again
            last_exc = exc
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {type(last_exc).__name__}: {str(last_exc).splitlines()[0][:200]})" if last_exc else ""))


@pytest.fixture()
def lab(tmp_path, data_root):
    """A JupyterLab server on 127.0.0.1 serving a folder that holds notebook 03 with smoke parameters."""
    binary, driver = _browser()
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    work = tmp_path / "notebooks"
    work.mkdir()
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)),
                               {"profile": "smoke", "data_root": str(data_root), "device": "cpu", "interactive": True})
    nbformat.write(nb, str(work / NOTEBOOK.name))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, ZFREPRO_RUNS=str(tmp_path / "runs"), ZFREPRO_HOME=str(tmp_path / "home"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    env.setdefault("ZFREPRO_CACHE", str(tmp_path / "cache"))
    (tmp_path / "home").mkdir()
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                           "checkForUpdates": False}))
    # every cell in the page (JupyterLab 4 leaves cells outside the viewport out of the DOM by default)
    (settings.parent / "notebook-extension").mkdir()
    (settings.parent / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         f"--LabApp.user_settings_dir={tmp_path / 'settings'}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),  # CI containers run as root
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with {server.returncode}: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                return r.status == 200
        _wait("JupyterLab to answer on 127.0.0.1", up, 90)
        yield {"url": f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", "binary": binary, "driver": driver,
               "log": tmp_path / "jupyterlab.log"}
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernel it started (its own session)
            server.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.mark.slow
def test_notebook_03_explorers_in_jupyterlab(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    opts = webdriver.ChromeOptions()
    opts.binary_location = lab["binary"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(lab["driver"]), options=opts)
    except Exception as exc:  # noqa: BLE001 - a driver that does not match the browser, no display libraries ...
        pytest.skip(f"chromium could not be started by Selenium: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    SHOTS.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        driver.set_page_load_timeout(60)
        driver.get(lab["url"])
        _wait("the notebook to open", lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell"), 120)
        _wait("its kernel to start", lambda: _kernel_idle(driver), 120)
        time.sleep(2)  # the kernel's first idle comes before its websocket is settled

        def prompts() -> list[str]:
            return [p.text for p in driver.find_elements(By.CSS_SELECTOR, ".jp-InputArea-prompt")]

        def run_all() -> bool:  # Run → Run All Cells, as a reader does; True once cells are queued or running
            _wait("the Run menu", lambda: _click(driver, "//div[contains(@class,'lm-MenuBar-itemLabel') and "
                                                         "text()='Run']"), 30)
            time.sleep(0.5)
            _wait("Run All Cells", lambda: _click(driver, "//div[contains(@class,'lm-Menu-itemLabel') and "
                                                          "text()='Run All Cells']"), 30)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                if any(p.strip() not in ("", "[ ]:") for p in prompts()):
                    return True
                time.sleep(1)
            return False
        if not run_all():
            print("browser test: no cell started, Run All Cells again", flush=True)
            assert run_all(), "Run All Cells started no cell"

        left = _BUDGET_S - (time.monotonic() - start)
        idle_polls = []

        def finished():
            if "Traceback (most recent call last)" in driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").text:
                return "error"
            ps = prompts()
            explorers = driver.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")
            if explorers and not any("*" in p for p in ps):
                return "done"
            idle_polls.append(not any("*" in p for p in ps) and _kernel_idle(driver))
            return "stopped" if idle_polls[-3:] == [True] * 3 else None  # idle, nothing queued, no explorer
        state = _wait("Run All Cells to finish with the explorers drawn", finished, left, every=2)
        if state == "stopped":
            driver.save_screenshot(str(SHOTS / "failure.png"))
            pytest.fail("notebook 03 stopped in JupyterLab before its explorers were drawn (prompts: "
                        f"{[p for p in prompts() if p]}); the page is in {SHOTS / 'failure.png'}")
        if state == "error":
            driver.save_screenshot(str(SHOTS / "error.png"))
            pytest.fail("a cell of notebook 03 failed in JupyterLab: "
                        + driver.find_element(By.CSS_SELECTOR, ".jp-Notebook").text[-1500:])

        boxes = [b for b in driver.find_elements(By.CSS_SELECTOR, ".widget-vbox") if
                 b.find_elements(By.CSS_SELECTOR, "img")]
        assert len(boxes) >= 2, "the feature and the occlusion explorer"
        features = next(b for b in boxes if b.find_elements(By.CSS_SELECTOR, ".widget-dropdown select"))
        occlusion = next(b for b in boxes if b.find_elements(By.CSS_SELECTOR, ".widget-slider"))

        # the feature explorer: drawn; another layer redraws it
        img = features.find_element(By.CSS_SELECTOR, "img")
        _wait("the feature explorer's image to load", lambda: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img) > 400, 30)
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", features)
        time.sleep(0.5)
        driver.save_screenshot(str(SHOTS / "feature_explorer.png"))
        select = Select(features.find_element(By.CSS_SELECTOR, ".widget-dropdown select"))
        layers = [o.text for o in select.options]
        assert layers[-1] == "conv5" and "conv2" in layers and select.first_selected_option.text == "conv5"
        before = img.get_attribute("src")
        select.select_by_visible_text("conv2")
        _wait("the feature explorer to redraw for conv2", lambda: features.find_element(
            By.CSS_SELECTOR, "img").get_attribute("src") != before, 60)
        assert driver.execute_script("return arguments[0].naturalWidth",
                                     features.find_element(By.CSS_SELECTOR, "img")) > 400

        # the occlusion explorer: moving the occluder changes the image and the probabilities
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", occlusion)
        text = occlusion.find_element(By.CSS_SELECTOR, ".widget-html")
        first_text, first_src = text.text, occlusion.find_element(By.CSS_SELECTOR, "img").get_attribute("src")
        assert "occluder at row 0, col 0" in first_text and "P(" in first_text, first_text
        handles = occlusion.find_elements(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
        assert len(handles) == 2, "row and col sliders"
        for handle in handles:
            handle.click()
            handle.send_keys(*[Keys.ARROW_RIGHT] * 12)
        moved = _wait("the occlusion explorer to redraw", lambda: (lambda t: t if "row 0, col 0" not in t and
                      occlusion.find_element(By.CSS_SELECTOR, "img").get_attribute("src") != first_src else None)(
                      text.text), 60)
        _wait("the last position to be drawn", lambda: _settled(text), 30)
        moved = text.text
        assert "row 12" in moved and "col 12" in moved, moved
        assert moved.split("):")[1] != first_text.split("):")[1], f"the probabilities did not change: {moved}"
        time.sleep(0.5)
        driver.save_screenshot(str(SHOTS / "occlusion_explorer.png"))
    except BaseException:
        driver.save_screenshot(str(SHOTS / "failure.png"))  # what the page showed when it failed or timed out
        print(f"browser test: failed; the page is in {SHOTS / 'failure.png'}", flush=True)
        raise
    finally:
        driver.quit()


def _kernel_idle(driver) -> bool:
    """The notebook toolbar's kernel indicator says idle (JupyterLab 4: ``data-status``; older: the title)."""
    from selenium.webdriver.common.by import By

    if any("| Idle" in e.text for e in driver.find_elements(By.CSS_SELECTOR, ".jp-StatusBar-Widget, #jp-main-statusbar")):
        return True
    if driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel-toolbar [data-status='idle']"):
        return True
    return any("Idle" in (e.get_attribute("title") or "") for e in
               driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel-toolbar .jp-Toolbar-kernelStatus, "
                                                     ".jp-NotebookPanel-toolbar [title*='Kernel']"))


def _click(driver, xpath: str) -> bool:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.XPATH, xpath)
    if found:
        found[0].click()
        return True
    return False


def _settled(element) -> bool:
    """True once ``element``'s text has not changed for a second."""
    first = element.text
    time.sleep(1.0)
    return element.text == first
