"""The built course site in a real browser: from a local HTTP server, nothing from outside.

Needs ``_site/`` (``.ci/build-site``) and Debian's ``chromium``. Without a built
site these tests are skipped with that reason, unless ``TPO_SITE_TESTS`` is set
(``.ci/run`` sets it after building the site), in which case they fail. Every
request that would leave the machine is blocked and fails the module: the pages
and the lecture decks must work without a network. Screenshots land in
``artifacts/site/``.
"""

import functools
import http.server
import os
import shutil
import threading
import tomllib
from pathlib import Path

import pytest

from tpo_core.group import group_view, random_group
from tpo_core.teaching import ETA_RANGE, twin_grid
from website.pages import TWIN_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_site"
SHOTS = ROOT / "artifacts" / "site"
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))

if os.environ.get("TPO_SITE_TESTS"):
    if not (SITE / "index.html").exists():
        raise RuntimeError("site tests are required here but _site/ is not built (.ci/build-site)")
    if CHROMIUM is None:
        raise RuntimeError("site tests are required here but Debian's chromium is not installed")
pytestmark = [
    pytest.mark.skipif(not (SITE / "index.html").exists(), reason="run .ci/build-site first"),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base():
    handler = functools.partial(QuietHandler, directory=SITE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(base):
    """A browser context in which any request that would leave the machine fails the tests."""
    outside = []
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = b.new_context(viewport={"width": 1280, "height": 900})

        def route(route):
            if route.request.url.startswith(base):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", route)
        yield context
        b.close()
    assert outside == [], f"requests that left the machine: {outside}"


RAW_TEXT = """(pattern) => {  // markdown left unrendered, in prose or in an output
    const walk = document.createTreeWalker(document.querySelector('main'), 4);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
        if (!n.parentElement.closest('pre, code, mjx-container') && pattern.test(n.data)) {
            return n.data;
        }
    }
    return false;
}"""


def open_page(browser, url):
    """The page once loaded and idle, with every console error and uncaught exception."""
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="networkidle")
    if page.locator("script[src*=mathjax]").count():  # wait until the math is typeset
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("MathJax.startup.promise.then(() => true)")
    return page, errors


def test_front_page_is_the_course_map_with_navigation(browser, base):
    page, errors = open_page(browser, f"{base}/index.html")
    links = page.evaluate("[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    for name in NOTEBOOKS:
        assert f"notebooks/{name}.html" in links, name
    for doc in ("GLOSSARY", "INSTRUCTORS", "SOLUTIONS", "REFRESHER"):
        assert f"docs/{doc}.html" in links, doc
    assert page.locator("table").count() >= 1  # the course map
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "index.png")
    assert errors == []
    page.close()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_page_renders_figures_and_math_without_errors(browser, base, name):
    page, errors = open_page(browser, f"{base}/notebooks/{name}.html")
    state = page.evaluate(
        f"""() => {{
        const rawText = {RAW_TEXT};
        return {{
            divs: document.querySelectorAll('.plotly-graph-div').length,
            drawn: document.querySelectorAll('.plotly-graph-div.js-plotly-plot').length,
            cells: document.querySelectorAll('.cell_output').length,
            tables: document.querySelectorAll('.cell_output table').length,
            math: document.querySelectorAll('mjx-container').length,
            rawMath: rawText(/\\$[^$\\s][^$]*\\$/),
            rawTable: rawText(/^\\s*\\|.*\\|\\s*$|\\|\\s*:?-{{3,}}/m),
        }};}}"""
    )
    assert state["cells"] > 0 and state["divs"] > 0
    assert state["drawn"] == state["divs"]  # every figure was drawn by the page's plotly.js
    assert state["math"] > 0 and state["rawMath"] is False, state["rawMath"]
    assert state["rawTable"] is False, state["rawTable"]  # markdown tables render as tables
    if name == "05_sparse_reward":
        assert state["tables"] >= 1  # Table 3, from display(Markdown(...))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png")
    assert errors == []
    page.close()


def test_one_group_twin_eta_slider_moves_q_to_the_library_values(browser, base):
    page, errors = open_page(browser, f"{base}/notebooks/01_one_group.html")
    find = """[...document.querySelectorAll('.plotly-graph-div')].find(
        g => g.layout.meta && g.layout.meta.sliders && g.layout.meta.sliders[0] === 'eta')"""
    page.evaluate(f"{find}.scrollIntoView()")
    twin = page.locator(".plotly-graph-div").nth(
        page.evaluate(f"[...document.querySelectorAll('.plotly-graph-div')].indexOf({find})")
    )
    before = page.evaluate(f"{find}.data[1].y.slice()")
    rail = twin.locator(".slider-rail-rect").first.bounding_box()
    page.mouse.click(rail["x"] + rail["width"] * 0.9, rail["y"] + rail["height"] / 2)
    page.wait_for_timeout(300)
    i, j = page.evaluate(f"[0, 1].map(k => {find}.layout.sliders[k].active)")
    _, settings = TWIN_SETTINGS["group-target"]  # notebook 01's group and eta
    etas, _ = twin_grid(ETA_RANGE, settings["eta"])  # the twin's eta steps
    p_old, scores = random_group(settings["k"], settings["seed"])
    expected = group_view(p_old, scores, etas[i]).q.tolist()
    assert etas[i] > 5  # the slider moved far right
    after = page.evaluate(f"{find}.data[1].y.slice()")
    assert after == pytest.approx(expected) and after != pytest.approx(before)
    assert page.evaluate(f"{find}.layout.sliders[1].steps[{j}].label") == f"{float(scores[0]):.3g}"
    page.screenshot(path=SHOTS / "01_twin_moved.png")
    assert errors == []
    page.close()


def test_search_finds_the_glossary(browser, base):
    page, errors = open_page(browser, f"{base}/search.html?q=temperature")
    page.wait_for_selector("#search-results li", timeout=10_000)
    hits = page.evaluate("[...document.querySelectorAll('#search-results li a')].map(a => a.href)")
    assert any("GLOSSARY" in h for h in hits), hits
    assert errors == []
    page.close()


def test_solutions_are_folded_behind_a_toggle(browser, base):
    page, errors = open_page(browser, f"{base}/docs/SOLUTIONS.html")
    closed = page.evaluate("[...document.querySelectorAll('details')].filter(d => !d.open).length")
    assert closed >= 10
    page.locator("details summary").first.click()
    assert page.evaluate("document.querySelector('details').open")
    assert errors == []
    page.close()


def test_a_lecture_deck_shows_math_and_figures_with_the_network_blocked(browser, base):
    """The browser context aborts every request that leaves the machine (and the module fails
    if one was tried): the deck must typeset its math and draw its figures from the site."""
    page, errors = open_page(browser, f"{base}/slides/01_one_group.slides.html")
    page.wait_for_function("window.Reveal && Reveal.isReady()")
    state = page.evaluate(
        """() => ({
        slides: document.querySelectorAll('.reveal .slides section').length,
        math: document.querySelectorAll('.reveal mjx-container').length,
        figures: document.querySelectorAll('.reveal .plotly-graph-div').length,
        drawn: document.querySelectorAll('.reveal .plotly-graph-div .main-svg').length,
    })"""
    )
    assert state["slides"] > 5 and state["math"] > 0
    assert state["figures"] > 0 and state["drawn"] >= state["figures"]
    first_figure = page.evaluate(
        """() => { const s = document.querySelector('.reveal .plotly-graph-div').closest('section');
                   return Reveal.getIndices(s); }"""
    )
    page.evaluate(f"Reveal.slide({first_figure['h']}, {first_figure.get('v') or 0})")
    page.wait_for_timeout(500)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "01_deck_figure.png")
    assert errors == []
    page.close()


def test_every_notebook_page_links_its_deck_and_hands_out_the_notebook(browser, base):
    for name in NOTEBOOKS:
        assert (SITE / "slides" / f"{name}.slides.html").exists(), name
        handed_out = SITE / "_sources" / "notebooks" / f"{name}.ipynb"
        assert handed_out.read_bytes() == (ROOT / "notebooks" / f"{name}.ipynb").read_bytes()
    page, errors = open_page(browser, f"{base}/notebooks/01_one_group.html")
    links = page.evaluate("[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    assert "../slides/01_one_group.slides.html" in links
    assert "../_sources/notebooks/01_one_group.ipynb" in links  # the download button
    with open(ROOT / "pyproject.toml", "rb") as f:
        launch_ref = tomllib.load(f)["tool"]["tpo-notebooks"]["ref"]
    binder = [h for h in links if h and h.startswith("https://mybinder.org/")]
    assert binder and all(f"/{launch_ref}?urlpath=" in h for h in binder), binder
    colab = [h for h in links if h and h.startswith("https://colab.research.google.com/")]
    assert colab and all(f"/blob/{launch_ref}/" in h for h in colab), colab
    assert errors == []
    page.close()


def test_plotly_and_mathjax_load_only_where_used():
    def loads(page: str, script: str) -> bool:
        return f'src="{script}' in page or f"/{script}" in page

    glossary = (SITE / "docs" / "GLOSSARY.html").read_text()
    notebook = (SITE / "notebooks" / "01_one_group.html").read_text()
    assert not loads(glossary, "_static/plotly.min.js")  # text only: no 4.6 MB of plotly.js
    assert loads(notebook, "_static/plotly.min.js")
    mathjax = SITE / "_static" / "mathjax"
    files = [p for p in mathjax.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2_500_000  # MathJax in full is 24 MB
    assert (mathjax / "tex-chtml-full.js").exists() and any(p.suffix == ".woff" for p in files)
