"""The analysis notebooks in a real JupyterLab, driven in Chromium: every cell runs without a traceback, ipywidgets
render as controls, moving a slider redraws the output below it, and every figure stays inside its output area.

Needs Debian's chromium (``/usr/bin/chromium``) and the ``playwright`` package (never ``playwright install``);
skips without them. Screenshots go to ``$FNAC_LAB_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}
RUN_TIMEOUT_MS = 150_000
#: The server settings ``make lab`` starts JupyterLab with.
LAB_CONFIG = REPO / "notebooks" / "lab-settings" / "jupyter_server_config.py"
#: User settings of the lab under test: every cell attached to the page (figures measurable when scrolled
#: away), the notebook's kernel started without asking, no news or update checks.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none",
                                                                  "autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smoke_copy(name: str, folder: Path) -> None:
    """The notebook with ``smoke = True`` in its parameters cell, written to ``folder``."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "smoke = False" in cell.source, name
    cell.source = cell.source.replace("smoke = False", "smoke = True", 1)
    nbformat.write(nb, folder / name)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group (server and kernels), SIGKILL when it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def sync_api():
    if not CHROMIUM.is_file():
        pytest.skip(f"browser tests skipped: {CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        pytest.skip("browser tests skipped: the playwright package is missing (pip install playwright)")
    return sync_api


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("FNAC_LAB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def lab(sync_api, tmp_path_factory):
    """``jupyter lab`` on 127.0.0.1 with a token and the default settings ``make lab`` gives it, serving smoke copies
    of the notebooks; stopped at the end."""
    root = tmp_path_factory.mktemp("lab")
    work, settings = root / "work", root / "settings"
    work.mkdir()
    for name in ("03_false_negative_explorer.ipynb", "05_localisation_maps.ipynb"):
        smoke_copy(name, work)
    for rel, values in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(root / "ws"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--ServerApp.port_retries=0", f"--config={LAB_CONFIG}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter lab did not start:\n" + (root / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, token
    finally:
        stop(proc)
        log.close()


@pytest.fixture(scope="module")
def browser(sync_api):
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def run_all(page, url: str, token: str, name: str) -> None:
    """Open the notebook, run every cell from the Run menu, wait until every code cell has run (or one failed)
    and the kernel is idle."""
    page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}")  # a workspace of its own
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    try:  # the kernel selection dialog, should the setting that skips it not apply
        page.wait_for_selector(".jp-Dialog .jp-mod-accept", timeout=4_000)
        page.locator(".jp-Dialog .jp-mod-accept").first.click()
    except sync_api_timeout(page):
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    assert not page.locator(".jp-Dialog").count()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
            const done = prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            const failed = [...document.querySelectorAll(
                ".jp-Notebook [data-mime-type='application/vnd.jupyter.stderr']")].some(
                e => e.textContent.includes('Traceback'));  // Run All stops at an error
            const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return (done || failed) && ind && ind.getAttribute('data-status') === 'idle';
        }""", timeout=RUN_TIMEOUT_MS)
    page.wait_for_timeout(1500)  # widget views and plotly figures finish drawing


def sync_api_timeout(page) -> type:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    return PlaywrightTimeout


def errors(page) -> list[str]:
    """Tracebacks in the notebook's outputs (errors and stderr both render as this mime type)."""
    texts = page.locator(".jp-Notebook [data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    return [t[-1500:] for t in texts if "Traceback" in t or "Error" in t.split("\n", 1)[0]]


def outside_figures(page) -> list[str]:
    """Plotly figures whose right edge lies beyond their output area's, and images wider than theirs."""
    return page.evaluate(
        """() => {
            const bad = [];
            for (const el of document.querySelectorAll('.js-plotly-plot, .jp-RenderedImage img')) {
                const area = el.closest('.jp-OutputArea-output') || el.closest('.jp-OutputArea');
                const r = el.getBoundingClientRect(), a = area.getBoundingClientRect();
                const natural = el.tagName === 'IMG' ? el.naturalWidth : 0;
                if (r.right > a.right + 1 || natural > a.width + 1)
                    bad.push(`${el.className || el.tagName}: right ${r.right} / ${a.right}, natural ${natural}`);
            }
            return bad;
        }""")


def output_image(output) -> str:
    img = output.locator("img")
    return img.first.get_attribute("src") if img.count() else ""


def running_kernels(url: str, token: str) -> list[dict]:
    request = urllib.request.Request(f"{url}/api/kernels", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)


def shut_down_kernels(url: str, token: str) -> None:
    """Shut the lab's kernels down (the next notebook gets both CPU cores)."""
    headers = {"Authorization": f"token {token}"}
    for kernel in running_kernels(url, token):
        urllib.request.urlopen(urllib.request.Request(f"{url}/api/kernels/{kernel['id']}", method="DELETE",
                                                      headers=headers), timeout=30)


@pytest.fixture
def page(browser, lab, screenshots, request):
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    try:
        yield pg
    finally:
        try:
            pg.screenshot(path=str(screenshots / f"{request.node.name}-final.png"))
        finally:
            context.close()
            shut_down_kernels(*lab)


def check_notebook(page, lab, screenshots, name: str) -> dict:
    url, token = lab
    t0 = time.perf_counter()
    run_all(page, url, token, name)
    seconds = time.perf_counter() - t0
    assert not errors(page), errors(page)
    shown = "\n".join(page.locator(".jp-Notebook .jp-OutputArea").all_inner_texts())
    assert "interactive(children=" not in shown and "Dropdown(" not in shown, "a widget rendered as text"
    assert page.locator(".jp-Notebook .widget-slider").count() > 0
    assert page.locator(".jp-Notebook .widget-dropdown select").count() > 0
    bad = outside_figures(page)
    for i, fig in enumerate(page.locator(".jp-Notebook .js-plotly-plot").all()):
        fig.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        fig.screenshot(path=str(screenshots / f"{name[:2]}-plotly-{i}.png"))
    assert not bad, bad
    assert not scrolling_legends(page), scrolling_legends(page)
    colours = model_colours_drawn(page)
    expected = viz_model_colours()
    assert colours and all(expected[name] == colour for name, colour in colours), colours
    return {"seconds": seconds, "plotly": page.locator(".jp-Notebook .js-plotly-plot").count()}


def scrolling_legends(page) -> list[str]:
    """Plotly legends whose items do not fit their visible area (plotly then draws a scroll bar in them)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot .legend .scrollbar')]
                 .filter(bar => bar.getBoundingClientRect().height > 0)
                 .map(bar => bar.closest('.js-plotly-plot').querySelector('.gtitle')?.textContent || '(untitled)')""")


def model_colours_drawn(page) -> list[tuple[str, str]]:
    """(model, colour) of every drawn plotly trace named after a model, alone or before ": " (as the notebooks name
    them: "FNAC (untrained)", "NCE baseline (untrained): audio (AP 0.52)")."""
    drawn = page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(gd => (gd.data || [])
                 .filter(t => t.name)
                 .map(t => [t.name, (t.marker && typeof t.marker.color === 'string') ? t.marker.color
                                    : (t.line && t.line.color) || null]))""")
    models = viz_model_colours()
    return [(name.split(": ")[0], colour) for name, colour in drawn
            if colour is not None and name.split(": ")[0] in models]


def viz_model_colours() -> dict[str, str]:
    from fnac_lab import viz

    return viz.model_colours()


def move_slider(page, widget, slider, key: str, screenshots: Path, shot: str) -> tuple[str, str]:
    """Press ``key`` on the handle of ``slider`` in the interactive ``widget``; the (before, after) image source
    of the output below it once the redraw arrived."""
    output = widget.locator(".widget-output, .jupyter-widgets-output-area").last
    before = output_image(output)
    assert before, "the interactive output shows no image"
    widget.scroll_into_view_if_needed()
    handle = slider.locator(".noUi-handle")
    handle.focus()
    handle.press(key)
    page.wait_for_function("([el, src]) => { const i = el.querySelector('img'); return i && i.src && i.src !== src; }",
                           arg=[output.element_handle(), before], timeout=60_000)
    page.wait_for_timeout(500)
    widget.screenshot(path=str(screenshots / shot))
    return before, output_image(output)


def test_explorer_in_the_lab(page, lab, screenshots):
    found = check_notebook(page, lab, screenshots, "03_false_negative_explorer.ipynb")
    assert found["plotly"] >= 2
    widget = page.locator(".jp-Notebook .widget-interact").first
    tau = widget.locator(".widget-slider").filter(has_text="tau")
    assert tau.count() == 1
    before, after = move_slider(page, widget, tau, "ArrowRight", screenshots, "03-after-slider.png")
    assert after and after != before
    print(f"03 ran in {found['seconds']:.0f} s; {found['plotly']} plotly figures")


def test_localisation_maps_in_the_lab(page, lab, screenshots):
    found = check_notebook(page, lab, screenshots, "05_localisation_maps.ipynb")
    assert found["plotly"] >= 2
    widget = page.locator(".jp-Notebook .widget-interact").last
    select = widget.locator(".widget-dropdown select")
    box = select.bounding_box()
    needed = select.evaluate("s => Math.max(...[...s.options].map(o => o.text.length))")
    assert box["width"] >= needed * 6, f"order dropdown {box['width']:.0f} px for {needed} characters"
    position = widget.locator(".widget-slider").filter(has_text="position")
    readout = position.locator(".widget-readout")
    assert readout.inner_text().strip() == "1"
    before, after = move_slider(page, widget, position, "End", screenshots, "05-browser-last.png")
    shown = "\n".join(page.locator(".jp-Notebook .jp-OutputArea").all_inner_texts())
    n = int(shown.split(" samples of the ")[0].split()[-1])
    assert readout.inner_text().strip() == str(n), "the last position is the sample count"
    assert after and after != before
    print(f"05 ran in {found['seconds']:.0f} s; {found['plotly']} plotly figures")


def test_offline_html_draws_its_figures(browser, screenshots, tmp_path):
    """A page like ``nbconvert --to html`` makes of a notebook: the compressed library once, then figures whose
    scripts wait for it; opened from a file, without a network, every figure draws."""
    import numpy as np
    import pandas as pd
    import plotly.io as pio

    from fnac_lab import viz
    from fnac_lab.viz.render import library_script, waiting_for_the_library

    table = pd.DataFrame({"ap50": [0.5, 0.4], "mean_ciou": [0.4, 0.3]}, index=["FNAC", "NCE baseline"])
    figures = [viz.scores_bars(table), viz.plotly_adjacency({"audio": np.eye(6), "visual": np.eye(6)},
                                                            labels=list("abcdef"))]
    body = "\n".join([library_script(False)] + [waiting_for_the_library(pio.to_html(f, include_plotlyjs=False,
                                                                                    full_html=False))
                                               for f in figures])
    page_file = tmp_path / "report.html"
    page_file.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>")
    context = browser.new_context(viewport=VIEWPORT, offline=True)
    try:
        page = context.new_page()
        problems = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(page_file.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=30_000)
        page.screenshot(path=str(screenshots / "offline-html.png"), full_page=True)
        assert not problems, problems
        assert page.locator(".js-plotly-plot").count() == 2
        assert page.evaluate("typeof window.Plotly.newPlot") == "function"
    finally:
        context.close()


def test_closing_a_notebooks_tab_shuts_its_kernel_down(page, lab):
    """notebooks/lab-settings/overrides.json, the default settings of ``make lab``: a closed tab leaves no kernel."""
    url, token = lab
    shut_down_kernels(url, token)
    name = "closing.ipynb"  # a notebook of its own: one the other tests ran may have unsaved changes
    body = json.dumps({"type": "notebook", "content": nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])})
    urllib.request.urlopen(urllib.request.Request(f"{url}/api/contents/{name}", data=body.encode(), method="PUT",
                                                  headers={"Authorization": f"token {token}"}), timeout=10)
    page.goto(f"{url}/lab/workspaces/close/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)

    def wait_for(condition) -> None:
        deadline = time.monotonic() + 60
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.5)

    wait_for(lambda: len(running_kernels(url, token)) == 1)
    assert len(running_kernels(url, token)) == 1, "the notebook's kernel did not start"
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=name).locator(".lm-TabBar-tabCloseIcon").click()
    page.wait_for_timeout(1000)
    if page.locator(".jp-Dialog").count():  # "Save your work" should the kernel's start have changed the file
        page.locator(".jp-Dialog button", has_text="Discard").first.click()
    wait_for(lambda: not running_kernels(url, token))
    assert running_kernels(url, token) == []
