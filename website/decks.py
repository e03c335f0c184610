"""Lecture decks: one reveal.js deck per notebook, presented from the site without a network.

A deck is the site's copy of a notebook (outputs as on its page, code hidden),
cut into slides by JupyterLab's slideshow metadata, where a cell has it, else by
:func:`slide_type`. It loads reveal.js from ``slides/reveal.js/`` and plotly.js
and MathJax from the site's ``_static/`` (``website/templates/deck``), so a deck
copied with the site works in a lecture hall without Wi-Fi.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from website.assets import MATHJAX_SCRIPT

TEMPLATES = Path(__file__).resolve().parent / "templates"
REVEAL = "reveal.js"  # beside the decks, in the site's slides/
STATIC = "../_static"  # the site's static files, seen from slides/
FIGURE_CALL = re.compile(
    r"^(?!\s*(?:#|from |import )).*?(?:\.\w+_figure|\b\w+Explorer|\bGroupInspector)\(", re.M
)


def slide_type(cell) -> str:
    """The lecture deck's rule (JupyterLab's slideshow metadata, read by ``nbconvert --to slides``).

    A ``#``/``##`` heading starts a slide and a ``###`` heading a sub-slide; other
    prose continues its slide; a code cell that draws a figure (``<module>.<name>_figure(``,
    an explorer, ``GroupInspector(``) gets a sub-slide of its own; other code (set-up,
    printed checks, exercises) is skipped.
    """
    source = "".join(cell["source"]).lstrip()
    if cell["cell_type"] == "markdown":
        if re.match(r"#{1,2} ", source):
            return "slide"
        return "subslide" if source.startswith("### ") else "-"
    return "subslide" if FIGURE_CALL.search(source) else "skip"


def lecture_deck(nb) -> str:
    """The reveal.js deck (HTML) of site notebook ``nb``, slides as its slideshow metadata says."""
    from nbconvert import SlidesExporter

    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        cell.metadata.setdefault("slideshow", {}).setdefault("slide_type", slide_type(cell))
    exporter = SlidesExporter(
        template_name="deck",
        extra_template_basedirs=[str(TEMPLATES)],
        exclude_input=True,
        reveal_scroll=True,
        reveal_url_prefix=REVEAL,
        reveal_theme="white",  # its font ships with reveal.js; "simple" loads Google's
    )
    resources = {"deck": {"static": STATIC, "mathjax": MATHJAX_SCRIPT}}
    html, _ = exporter.from_notebook_node(nb, resources=resources)
    return html
