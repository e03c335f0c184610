"""The course site's pages: each notebook with its outputs, each explorer beside a twin.

``.ci/build-site`` executes every notebook once (or takes the outputs that the
test suite's nbval run recorded, when their :func:`fingerprint` still matches),
passes it through :func:`site_notebook` and renders the result with Sphinx and
MyST-NB. On the site:

* plotly figures become HTML fragments that use the page's one copy of plotly.js;
* an explorer needs a kernel, so its widget output becomes a note saying so and,
  for a cell tagged ``twin:NAME``, the kernel-free twin ``NAME`` of
  :func:`twin_figures` (precomputed states, the notebook's default settings);
  a cell tagged ``explorer`` gets the note alone; other widget outputs (progress
  bars, live training curves, each followed by a static copy) are dropped;
* Colab and Binder badges become plain links (a badge image is a request to
  another site), links to the published site's reference pages become links
  within the site, and saved widget state goes.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from pathlib import Path

import nbformat
import plotly.graph_objects as go

from tpo_core.teaching import BetaExplorer, GroupExplorer, OvershootExplorer, twin_html

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
TWIN_TAG = "twin:"
EXPLORER_TAG = "explorer"
LIBRARY = Path(__file__).resolve().parents[1] / "tpo_core"  # what a notebook's outputs depend on
BADGE = re.compile(r"\[!\[([^\]]*)\]\([^)]*\)\]\(([^)]*)\)")  # [![alt](image)](target)
SITE_PAGE = re.compile(r"\]\(https://[\w-]+\.github\.io/[\w.-]+/docs/(\w+)\.html(#[\w-]+)?\)")

LIVE_NOTE = (
    '<div class="admonition note live-note"><p class="admonition-title">Live in the notebook</p>'
    "<p>This explorer needs a Python kernel: open the notebook on Binder or Colab (the launch "
    "button at the top of this page) or locally to drag its controls.{twin}</p></div>"
)
TWIN_NOTE = (
    " Below is a kernel-free twin of its main figure: sliders over states that "
    "<code>tpo_core</code> computed beforehand, at the notebook's default settings."
)
DECK_NOTE = (
    '<p class="deck-link">Teaching from this notebook? Its <a href="../slides/{stem}.slides.html">'
    "lecture slides</a> open in any browser, without a network.</p>"
)

TWIN_SETTINGS = {
    "group-target": (GroupExplorer, dict(k=5, eta=1.0, seed=0)),
    "overshoot": (OvershootExplorer, dict(k=5, lr=1.0, epochs=50, eta=1.0, seed=0)),
    "beta": (BetaExplorer, dict(k=10)),
}
"""Each twin's explorer and its arguments: those of the tagged cell at the notebook's defaults
(a test evaluates the cell's call in its notebook's parameters)."""


def twin_figures() -> dict[str, object]:
    """The twins that cells tagged ``twin:NAME`` show."""
    return {name: cls(**kwargs).kernel_free() for name, (cls, kwargs) in TWIN_SETTINGS.items()}


def link_badges(markdown: str) -> str:
    """``[![alt](image)](target)`` becomes ``[alt](target)``: no image from another site."""
    return BADGE.sub(r"[\1](\2)", markdown)


def site_links(markdown: str) -> str:
    """Links to the published site's ``docs/PAGE.html`` become ``../docs/PAGE.md``: on the site a
    notebook links its reference pages within the site, so they work offline too."""
    return SITE_PAGE.sub(r"](../docs/\1.md\2)", markdown)


def _html_output(html: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data={"text/html": html})


def twin_names(cell) -> list[str]:
    """The twins a cell's ``twin:NAME`` tags ask for."""
    tags = cell.get("metadata", {}).get("tags", [])
    return [t[len(TWIN_TAG) :] for t in tags if t.startswith(TWIN_TAG)]


def _site_outputs(cell, twin_htmls: dict[str, str]) -> list:
    tags = cell.get("metadata", {}).get("tags", [])
    names = twin_names(cell)
    unknown = set(names) - set(twin_htmls)
    if unknown:
        raise ValueError(f"unknown twin(s) {sorted(unknown)} tagged on: {cell.source[:60]!r}")
    outputs, noted = [], False
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if PLOTLY_MIME in data:
            outputs.append(_html_output(twin_html(_figure(data[PLOTLY_MIME]))))
        elif WIDGET_MIME in data:
            if noted or not (names or EXPLORER_TAG in tags):
                continue
            noted = True
            outputs.append(_html_output(LIVE_NOTE.format(twin=TWIN_NOTE if names else "")))
            outputs += [_html_output(twin_htmls[name]) for name in names]
        else:
            outputs.append(output)
    return outputs


def _figure(spec) -> go.Figure:
    """The figure of a plotly mime bundle (a dict, or its JSON text); its ``config`` is dropped."""
    spec = dict(json.loads(spec) if isinstance(spec, str) else spec)
    spec.pop("config", None)
    return go.Figure(spec)


def site_notebook(nb, twin_htmls: dict[str, str]):
    """A copy of executed notebook ``nb`` ready for the site (see the module docstring)."""
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)  # the explorers' saved state: megabytes no page can use
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = site_links(link_badges(cell.source))
        elif cell.cell_type == "code":
            cell.outputs = _site_outputs(cell, twin_htmls)
    return nb


def with_deck_link(nb, stem: str):
    """A copy of site notebook ``nb`` with a link to its lecture deck under the title."""
    nb = nbformat.from_dict(nb)
    note = nbformat.v4.new_markdown_cell(DECK_NOTE.format(stem=stem))
    nb.cells.insert(1, note)
    return nb


def fingerprint(notebook: Path, library: Path) -> str:
    """SHA-256 of what a notebook's outputs depend on: its file, the library's files (code
    and shipped results) and the versions of the packages that compute them."""
    digest = hashlib.sha256(notebook.read_bytes())
    for path in sorted(p for p in library.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(library).as_posix().encode())
        digest.update(path.read_bytes())
    for package in ("torch", "numpy", "plotly", "transformers", "peft", "reasoning-gym"):
        try:
            digest.update(f"{package}=={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{package} absent".encode())
    return digest.hexdigest()


def record(nb, notebook: Path, folder: Path) -> None:
    """Keep executed ``nb`` (the run of file ``notebook``) in ``folder``, stamped with its
    :func:`fingerprint`, for :func:`recorded` to hand back while that still matches."""
    nb.metadata["tpo_site"] = {"fingerprint": fingerprint(notebook, LIBRARY)}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / notebook.name)


def recorded(notebook: Path, folder: Path):
    """The run of ``notebook`` that :func:`record` kept in ``folder``; None if stale or absent."""
    path = folder / notebook.name
    if not path.exists():
        return None
    nb = nbformat.read(path, as_version=4)
    current = nb.metadata.get("tpo_site", {}).get("fingerprint") == fingerprint(notebook, LIBRARY)
    return nb if current else None
