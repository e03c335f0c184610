"""Lecture decks without a browser: the slide rule, and decks that load nothing from outside.

The browser test of a deck with the network blocked is in tests/test_site.py.
"""

import re
from pathlib import Path

import nbformat
import pytest

from website import assets, decks, pages

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LOADED = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)=["']([^"']+)""")


def md(text):
    return {"cell_type": "markdown", "source": text}


def py(text):
    return {"cell_type": "code", "source": text}


def test_the_slide_rule_starts_slides_at_headings_and_keeps_figures():
    assert decks.slide_type(md("# 01 · Title")) == "slide"
    assert decks.slide_type(md("## 2 · A section\n\ntext")) == "slide"
    assert decks.slide_type(md("### A subsection")) == "subslide"
    assert decks.slide_type(md("What to see: ...")) == "-"
    for drawing in (
        "tt.group_figure(view)",
        "tt.simplex_figure(p_old, scores, lrs=[0.5], epochs=30)",
        "fig = tt.replay_figure(runs, 'one batch')\nfig",
        "display(tt.table3_figure(rows))",
        "tt.GroupExplorer(k=K)",
        "explorer = GroupExplorer(k=K)\nexplorer",
        "GroupInspector(rollout)",
    ):
        assert decks.slide_type(py(drawing)) == "subslide", drawing
    for quiet in (
        'print(question("00-large-eta"))',
        "from tpo_core import teaching as tt",
        "# tt.group_figure(view) would draw it",
        "q = tc.tpo_target(old, scores)",
    ):
        assert decks.slide_type(py(quiet)) == "skip", quiet


def external(deck: str) -> list[str]:
    """Every file a deck's tags load from another site."""
    return [url for url in LOADED.findall(deck) if re.match(r"(https?:)?//", url)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebooks_lecture_deck_builds_from_its_slideshow_metadata(path):
    nb = nbformat.read(path, as_version=4)
    types = [
        cell.metadata.get("slideshow", {}).get("slide_type", decks.slide_type(cell))
        for cell in nb.cells
    ]  # an instructor may change a cell's slide type; a cell without one gets the rule's
    headings = [t for c, t in zip(nb.cells, types, strict=True) if c.source.startswith("## ")]
    assert set(headings) == {"slide"}  # every section starts a slide
    twins = {name: "<div></div>" for name in pages.TWIN_SETTINGS}
    deck = decks.lecture_deck(pages.site_notebook(nb, twins))  # as the site build does
    assert deck.count("<section") >= types.count("slide") + types.count("subslide")
    assert 'class="jp-CodeMirrorEditor' not in deck  # code is hidden
    assert nb.cells[0].source.splitlines()[0].lstrip("# ") in deck  # the title slide
    assert external(deck) == []


def test_a_deck_loads_its_scripts_from_the_site_plotly_first():
    deck = decks.lecture_deck(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T")])
    )
    loaded = LOADED.findall(deck)
    scripts = [u for u in loaded if u.endswith(".js")]
    assert scripts == [
        "../_static/plotly.min.js",
        f"../_static/mathjax/{assets.MATHJAX_SCRIPT}",
        "reveal.js/dist/reveal.js",
        "reveal.js/plugin/notes/notes.js",
    ]
    assert "reveal.js/dist/reveal.css" in loaded and "reveal.js/dist/theme/white.css" in loaded
    assert "require(" not in deck and "jquery" not in deck.lower()  # no AMD loader, no jQuery


def test_a_deck_gives_cells_without_slide_metadata_the_rules_type():
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title"),
            nbformat.v4.new_code_cell(
                "print('quietly')",
                outputs=[nbformat.v4.new_output("stream", name="stdout", text="skipped-output\n")],
            ),
            nbformat.v4.new_markdown_cell("## Second slide"),
        ]
    )
    deck = decks.lecture_deck(nb)
    assert "Second slide" in deck and "skipped-output" not in deck  # the print is skipped
    assert "slideshow" not in nb.cells[1].metadata  # the notebook itself is left alone


def test_the_deck_assets_are_the_files_the_decks_load():
    """Every local file a deck loads is one website/assets.py copies into the site."""
    reveal = {f"reveal.js/{p}" for p in assets.REVEAL_FILES if "*" not in p}
    mathjax = {f"../_static/mathjax/{p}" for p in assets.MATHJAX_FILES}
    deck = decks.lecture_deck(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T")])
    )
    local = set(LOADED.findall(deck)) - {"../_static/plotly.min.js"}
    assert local <= reveal | mathjax, local - reveal - mathjax
