"""Real-browser tests: JupyterLab on loopback, driven by headless Chromium.

Needs Debian's ``chromium`` (``.ci/run`` installs it). Elsewhere these tests
are skipped with that reason, unless ``CI`` or ``TPO_BROWSER_TESTS`` is set,
in which case a missing browser is a failure. A screenshot of each notebook
lands in ``artifacts/``.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tpo_core.group import group_view, random_group

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = shutil.which("chromium")
REQUIRED = bool(os.environ.get("CI") or os.environ.get("TPO_BROWSER_TESTS"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

if CHROMIUM is None and REQUIRED:
    raise RuntimeError("browser tests are required here but Debian's chromium is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


def patience(ms: int) -> int:
    """A wait of ``ms`` on an idle machine, stretched by the load: on a busy machine (a load
    average above the CPU count) every step of a notebook takes that much longer."""
    load = os.getloadavg()[0] / (os.cpu_count() or 1) if hasattr(os, "getloadavg") else 1.0
    return int(ms * max(1.0, load))


WIDGET_CALL = re.compile(r"\b(\w+Explorer|GroupInspector|LiveCurves|LiveRLVR)\(")


def notebooks_with_widgets():
    """The notebooks whose code builds an explorer or a live figure."""
    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        if any(WIDGET_CALL.search(source) for source in code):
            found.append(path.name)
    return found


def test_the_notebooks_with_widgets_are_found():
    """The scan that picks the notebooks below finds the four that have explorers."""
    assert {"01_one_group.ipynb", "02_tabular_bandits.ipynb"} <= set(notebooks_with_widgets())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on loopback over a scratch copy of the notebooks."""
    yield from _lab(tmp_path_factory, "widget")


@pytest.fixture(scope="module")
def lab_output(tmp_path_factory):
    """The same, with every kernel drawing its explorers into Outputs (``TPO_DRAWING``)."""
    yield from _lab(tmp_path_factory, "output")


def _lab(tmp_path_factory, drawing: str):
    root = tmp_path_factory.mktemp(f"lab-{drawing}")
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(nb, root)
    port, token = free_port(), secrets.token_hex(16)
    # Render every cell (no windowing), so widgets far up a long notebook stay in the DOM.
    settings = root / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        f"--LabApp.user_settings_dir={root / 'settings'}",
    ]
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    env = os.environ | {"TPO_DRAWING": drawing}
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError((root / "server.log").read_text()) from None
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


BADGE_IMAGES = (
    "https://colab.research.google.com/assets/colab-badge.svg",
    "https://mybinder.org/badge_logo.svg",
)
EXTERNAL_REQUESTS: list[str] = []


def _stub_external(route):
    EXTERNAL_REQUESTS.append(route.request.url)
    route.fulfill(status=204, body="")


def open_and_run_all(browser, lab, name):
    """Open a notebook, run every cell, wait for the kernel; return (page, console errors)."""
    base, token = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.websocket_bytes = [0]  # what the kernel's websocket carried to the page
    page.failed = []  # the requests that failed, to name what a console error is about
    page.on(
        "response", lambda r: page.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    page.on("requestfailed", lambda r: page.failed.append(f"failed {r.url}"))

    def count(ws):
        ws.on(
            "framereceived",
            lambda payload: page.websocket_bytes.__setitem__(
                0, page.websocket_bytes[0] + len(payload)
            ),
        )

    page.on("websocket", count)
    # The tests run offline: requests that leave loopback are answered empty here, and
    # must be the launch badges' images, nothing a notebook needs to work.
    page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), _stub_external)
    # A fresh workspace per page, so tabs and kernels of earlier tests are not restored.
    workspace = secrets.token_hex(4)
    page.goto(f"{base}/lab/workspaces/{workspace}/tree/{name}?token={token}")
    try:
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=patience(60_000))
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-not-opened.png"))
        raise
    # The status bar reads "Python 3 (ipykernel) | Idle" once the kernel is connected; if
    # JupyterLab asks which kernel to start instead, accept its proposal.
    idle = page.get_by_text(re.compile(r"\| Idle$"))
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select")
    idle.or_(select).first.wait_for(timeout=patience(120_000))
    if select.is_visible():
        select.click()
    idle.wait_for(timeout=patience(120_000))
    page.get_by_role("menuitem", name="Run").click()
    # the menu's item (JupyterLab 3 also keeps the command palette's in the page)
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
    # Every code cell gets an execution count once the kernel has run it. The wait lasts as
    # long as the kernel keeps finishing cells: it fails only if no cell finishes for a
    # stall window (stretched by the machine's load), not after a fixed wall time.
    counted = """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
        .map(p => /\\[\\d+\\]/.test(p.textContent))"""
    stall = int(os.environ.get("TPO_BROWSER_TIMEOUT_MS", 240_000))
    done, since = -1, time.monotonic()
    while True:
        marks = page.evaluate(counted)
        if marks and all(marks):
            return page, errors
        if sum(marks) > done:
            done, since = sum(marks), time.monotonic()
        elif (time.monotonic() - since) * 1000 > patience(stall):
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-timeout.png"))
            raise TimeoutError(f"{name}: no cell finished in {patience(stall) / 1000:.0f} s")
        page.wait_for_timeout(500)


STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'


def cell_errors(page):
    """Tracebacks printed by any cell (warnings on stderr are allowed)."""
    texts = page.evaluate(f"[...document.querySelectorAll('{STDERR}')].map(e => e.textContent)")
    return [t for t in texts if "Traceback" in t or "Error" in t]


# anywidget gives a model two seconds to initialise and logs this if it takes longer
# (seen only with the CPU saturated by other work); the widget still renders then.
# It is tolerated only when every widget view on the page did render.
SLOW_INIT = "[anywidget] Failed to initialize model."


def serious_console_errors(page, errors):
    rendered = page.evaluate(
        """() => {
            const views = document.querySelectorAll('.jp-OutputArea-output .widget-box, '
                + '.jp-OutputArea-output .js-plotly-plot');
            const failed = [...document.querySelectorAll('.jp-OutputArea-output')]
                .filter(o => /Error displaying widget/.test(o.textContent));
            return views.length > 0 && failed.length === 0;
        }"""
    )
    # JupyterLab 3 (the ipywidgets 7 check) renders math with MathJax 2, whose web fonts it
    # does not serve: the browser falls back to others. Those failures are fonts, nothing else.
    fonts_only = all("/MathJax/fonts/" in f or f.endswith("about:blank") for f in page.failed)
    font_noise = ("Access to font at 'about:blank'", "Failed to load resource")
    return [
        e
        for e in errors
        if not (e == SLOW_INIT and rendered) and not (fonts_only and e.startswith(font_noise))
    ]


Q_BARS = """() => {
    const gd = document.querySelectorAll('.js-plotly-plot')[0];
    return gd.data.find(t => t.name === 'q').y.slice();
}"""


SLIDER_NOTEBOOK = "01_one_group.ipynb"  # its GroupExplorer, driven in both drawings
WEBSOCKET_BYTES: dict[str, dict[str, int]] = {}  # drawing -> notebook -> bytes


def record_bytes(drawing: str, name: str, page) -> None:
    """Keep (and write to artifacts/) the websocket bytes a notebook's run-all moved."""
    WEBSOCKET_BYTES.setdefault(drawing, {})[name] = page.websocket_bytes[0]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "websocket-bytes.json").write_text(json.dumps(WEBSOCKET_BYTES, indent=1))


@pytest.mark.parametrize("drawing", ["widget", "output"])
def test_group_explorer_eta_slider_changes_q_bars(browser, request, drawing):
    lab = request.getfixturevalue("lab" if drawing == "widget" else "lab_output")
    page, errors = open_and_run_all(browser, lab, SLIDER_NOTEBOOK)
    record_bytes(drawing, SLIDER_NOTEBOOK, page)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 0")
    page.get_by_text(re.compile(r"\| Idle$")).wait_for(timeout=patience(120_000))
    before = page.evaluate(Q_BARS)
    # Type a new eta into the slider's editable readout, as a student can.
    slider = page.locator(".widget-hslider", has=page.locator("label", has_text="eta")).first
    slider.scroll_into_view_if_needed()
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("0.2")
    page.keyboard.press("Enter")
    sharper = page.wait_for_function(
        f"""(before) => {{
            const q = ({Q_BARS})();
            return Math.max(...q) > Math.max(...before) + 0.05 ? q : null;
        }}""",
        arg=before,
        timeout=patience(60_000),
    )
    after = sharper.json_value()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"01_one_group-{drawing}.png"))
    if drawing == "output":  # plain figures: no plotly bundle per figure over the websocket
        assert page.websocket_bytes[0] < 6e6, page.websocket_bytes[0]
    assert max(after) > max(before), f"lowering eta must sharpen the target q: {before} -> {after}"
    # The bars are TPO's target for the group the notebook built (K = 5, seed 0) at the new eta.
    eta = float(readout.inner_text())
    assert abs(eta - 0.2) < 0.01
    expected = group_view(*random_group(5, 0), eta=eta).q.tolist()
    assert after == pytest.approx(expected, abs=5e-3)
    assert cell_errors(page) == []
    assert serious_console_errors(page, errors) == [], f"console errors: {errors}; {page.failed}"
    page.close()


# A rendered widget: an ipywidgets box, or a plotly FigureWidget (a Lumino widget view;
# static plotly outputs render as a bare plot container).
WIDGET_VIEW = (
    ".jp-OutputArea .widget-box, .jp-OutputArea-output .lm-Widget.js-plotly-plot, "
    ".jp-OutputArea .widget-output .js-plotly-plot"
)


# Drawn as "output", every notebook runs the same two paths: an explorer's slider redraw
# (01's) and a live figure's throttled redraw during training (04's LiveCurves, which
# LiveRLVR shares in Explorer._redraw); the other notebooks run in widget mode only.
# Notebook 01 runs in both drawings in the eta slider's test above, so not again here.
OUTPUT_DRAWN = ("01_one_group.ipynb", "04_token_tasks_dense.ipynb")
RUNS = [(name, "widget") for name in notebooks_with_widgets() if name != SLIDER_NOTEBOOK] + [
    (name, "output") for name in OUTPUT_DRAWN if name != SLIDER_NOTEBOOK
]


def test_the_notebooks_drawn_as_output_have_widgets():
    assert set(OUTPUT_DRAWN) <= set(notebooks_with_widgets())


@pytest.mark.parametrize(("name", "drawing"), RUNS)
def test_notebook_runs_in_jupyterlab_with_widgets(browser, request, name, drawing):
    lab = request.getfixturevalue("lab" if drawing == "widget" else "lab_output")
    page, errors = open_and_run_all(browser, lab, name)
    record_bytes(drawing, name, page)
    try:
        page.wait_for_selector(WIDGET_VIEW, timeout=patience(60_000))
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"{Path(name).stem}-{drawing}-no-widget.png"
        page.screenshot(path=str(shot), full_page=True)
        mimes = page.evaluate(
            "[...document.querySelectorAll('.jp-OutputArea-output')]"
            ".map(o => o.dataset.mimeType || o.innerHTML.slice(0, 80))"
        )
        pytest.fail(f"no widget rendered; output types: {mimes}; console: {errors}")
    page.locator(WIDGET_VIEW).first.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-{drawing}-widgets.png"))
    assert cell_errors(page) == []
    assert serious_console_errors(page, errors) == [], f"console errors: {errors}; {page.failed}"
    page.close()


def test_only_badge_images_are_requested_from_outside(browser, lab):
    """Runs after the notebook tests (file order): nothing else may reach the network."""
    assert set(EXTERNAL_REQUESTS) <= set(BADGE_IMAGES), set(EXTERNAL_REQUESTS) - set(BADGE_IMAGES)


def test_kernel_free_target_twin_composes_its_two_sliders(browser, tmp_path):
    """No kernel: clicking either slider's rail restyles the bars to the precomputed state."""
    import torch

    from tpo_core.teaching.explorers import twins

    p_old, scores = random_group(5, 0)
    etas, values = torch.logspace(-1.3, 1.3, 27).tolist(), [-2 + 0.2 * i for i in range(21)]
    page_file = tmp_path / "twin.html"
    fig = twins.target_twin(p_old, scores, etas, 0, values, start=(13, 10))
    fig.write_html(page_file, include_plotlyjs=True, post_script=twins.TWO_SLIDERS_JS)
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.goto(page_file.as_uri())
    page.wait_for_selector(".slider-rail-rect")
    rails = page.locator(".slider-rail-rect")
    for rail, fraction in ((0, 0.97), (1, 0.03)):
        box = rails.nth(rail).bounding_box()
        page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
        page.wait_for_timeout(300)
    graph = "document.querySelector('.plotly-graph-div')"
    i, j = page.evaluate(f"[0, 1].map(k => {graph}.layout.sliders[k].active)")
    assert i > 20 and j < 3  # both sliders moved
    s = scores.clone()
    s[0] = values[j]
    expected = group_view(p_old, s, etas[i]).q.tolist()
    assert page.evaluate(f"{graph}.data[1].y") == pytest.approx(expected)
    page.close()
