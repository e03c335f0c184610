"""The site's pages without a browser: notebook outputs turned into page content, and the twins."""

import ast
import json
import re
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import pytest

from tpo_core.teaching import BetaExplorer, GroupExplorer, OvershootExplorer, twin_html
from website import pages as site

ROOT = Path(__file__).resolve().parents[1]
EXPLORER_CALL = re.compile(r"^(?!from |import ).*\b(\w+Explorer|GroupInspector)\(", re.M)


def widget_output():
    data = {"text/plain": "HBox(...)", site.WIDGET_MIME: {"model_id": "abc", "version_major": 2}}
    return nbformat.v4.new_output("display_data", data=data)


def notebook(*cells):
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def code(source, outputs=(), tags=()):
    cell = nbformat.v4.new_code_cell(source, outputs=list(outputs))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def test_a_plotly_output_becomes_html_that_uses_the_pages_plotly():
    fig = go.Figure(go.Bar(y=[0.125, 0.875], name="q"))
    spec = dict(fig.to_plotly_json(), config={"responsive": True})
    nb = site.site_notebook(
        notebook(
            code("fig", [nbformat.v4.new_output("display_data", data={site.PLOTLY_MIME: spec})])
        ),
        {},
    )
    (output,) = nb.cells[0].outputs
    html = output.data["text/html"]
    assert list(output.data) == ["text/html"]
    assert "Plotly.newPlot" in html and "0.125" in html and "0.875" in html
    assert len(html) < 20_000  # the figure only: plotly.js itself is not inlined
    assert "widgets" not in nb.metadata


def test_widget_outputs_become_a_note_and_the_tagged_twin_or_go():
    stream = nbformat.v4.new_output("stream", name="stdout", text="kept\n")
    nb = site.site_notebook(
        notebook(
            code(
                "GroupExplorer()",
                [widget_output(), stream],
                tags=["twin:demo"],
            ),
            code("SimplexExplorer(p, s)", [widget_output()], tags=["explorer"]),
            code("live = LiveCurves(names)\ndisplay(live)", [widget_output()]),
            nbformat.v4.new_markdown_cell(
                "[![Colab](https://colab.example/badge.svg)](https://colab.example/nb)"
            ),
        ),
        {"demo": "<div id='demo-twin'></div>"},
    )
    twin_cell, note_cell, live_cell, text = nb.cells
    note, twin, kept = twin_cell.outputs
    assert "Live in the notebook" in note.data["text/html"] and "twin" in note.data["text/html"]
    assert twin.data["text/html"] == "<div id='demo-twin'></div>" and kept == stream
    (only_note,) = note_cell.outputs
    assert "Live in the notebook" in only_note.data["text/html"]
    assert "twin" not in only_note.data["text/html"]
    assert live_cell.outputs == []  # a live figure: its static copy follows in the notebook
    assert text.source == "[Colab](https://colab.example/nb)"


def test_an_unknown_twin_is_refused_by_name():
    with pytest.raises(ValueError, match="nope"):
        site.site_notebook(notebook(code("x", [widget_output()], tags=["twin:nope"])), {})


def test_every_explorer_cell_is_tagged_with_a_known_twin_or_as_an_explorer():
    known = set(site.twin_figures())
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code" or not EXPLORER_CALL.search("".join(cell["source"])):
                continue
            tags = cell["metadata"].get("tags", [])
            names = set(site.twin_names(cell))
            assert names <= known, (path.name, names - known)
            assert names or site.EXPLORER_TAG in tags, (path.name, "".join(cell["source"])[:60])


def flat(rows):
    return [float(v) for row in rows for v in row]


def drawn(fig):
    return flat(trace.y for trace in fig.data)


def test_a_group_explorers_twin_starts_at_its_current_state():
    explorer = GroupExplorer(k=4, eta=1.0, seed=3)
    explorer.eta_slider.value = 2.5
    explorer.score_sliders[0].value = 1.3
    fig = explorer.kernel_free()
    assert drawn(fig) == pytest.approx(drawn(explorer.figure))
    i, j = (slider.active for slider in fig.layout.sliders)
    assert flat(fig.layout.meta["states"][i][j]["y"]) == pytest.approx(drawn(explorer.figure))
    assert fig.layout.sliders[0].steps[i].label == "2.5"
    assert len(twin_html(fig)) < 2e6


def test_overshoot_and_beta_twins_start_where_their_explorers_are():
    explorer = OvershootExplorer(k=5, lr=0.7, epochs=30, seed=2)
    fig = explorer.kernel_free()
    assert fig.layout.sliders[0].steps[fig.layout.sliders[0].active].label == "0.7"
    for got, want in zip(fig.data, explorer.figure.data, strict=True):
        assert list(got.x) == list(want.x) and list(got.y) == pytest.approx(list(want.y))
    beta = BetaExplorer(k=7)
    beta.k_slider.value = 12
    fig = beta.kernel_free()
    assert fig.layout.sliders[0].steps[fig.layout.sliders[0].active].label == "12"
    data = fig.layout.sliders[0].steps[fig.layout.sliders[0].active].args[0]
    assert flat(data["y"]) == pytest.approx(drawn(beta.beta_figure))
    assert len(twin_html(fig)) < 2e6


def test_the_fingerprint_follows_the_notebook_and_the_library(tmp_path):
    nb, lib = tmp_path / "a.ipynb", tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    nb.write_text("{}")
    (lib / "sub" / "m.py").write_text("x = 1\n")
    first = site.fingerprint(nb, lib)
    (lib / "sub" / "m.py").write_text("x = 2\n")
    second = site.fingerprint(nb, lib)
    nb.write_text('{"cells": []}')
    assert len({first, second, site.fingerprint(nb, lib)}) == 3


def test_a_recording_is_handed_back_only_while_its_notebook_is_unchanged(tmp_path):
    source = tmp_path / "nb.ipynb"
    nbformat.write(notebook(code("1 + 1")), source)
    run = nbformat.read(source, as_version=4)
    run.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    assert site.recorded(source, tmp_path / "runs") is None  # nothing kept yet
    site.record(run, source, tmp_path / "runs")
    kept = site.recorded(source, tmp_path / "runs")
    assert kept is not None and kept.cells[0].outputs[0].text == "2\n"
    nbformat.write(notebook(code("1 + 2")), source)  # the notebook changes: the run is stale
    assert site.recorded(source, tmp_path / "runs") is None


def test_links_to_the_published_reference_pages_stay_within_the_site():
    text = (
        "the [refresher](https://alice.github.io/course/docs/REFRESHER.html) §1 and the "
        "[glossary](https://alice.github.io/course/docs/GLOSSARY.html#grpo); "
        "[elsewhere](https://alice.github.io/course/notebooks/01.html)"
    )
    assert site.site_links(text) == (
        "the [refresher](../docs/REFRESHER.md) §1 and the [glossary](../docs/GLOSSARY.md#grpo); "
        "[elsewhere](https://alice.github.io/course/notebooks/01.html)"
    )
    nb = site.site_notebook(notebook(nbformat.v4.new_markdown_cell(text)), {})
    assert "../docs/REFRESHER.md" in nb.cells[0].source


def test_a_notebook_page_links_its_lecture_deck_under_the_title():
    nb = notebook(nbformat.v4.new_markdown_cell("# Title"), code("1 + 1"))
    linked = site.with_deck_link(nb, "01_one_group")
    assert [c.cell_type for c in linked.cells] == ["markdown", "markdown", "code"]
    assert 'href="../slides/01_one_group.slides.html"' in linked.cells[1].source
    assert len(nb.cells) == 2  # the site copy itself is left alone


def called(call: ast.Call) -> str:
    """What a call calls: ``GroupExplorer`` in ``GroupExplorer()`` and ``tt.GroupExplorer()``."""
    return getattr(call.func, "attr", getattr(call.func, "id", ""))


def test_each_twin_has_the_arguments_of_its_cell_at_the_notebooks_defaults():
    seen = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        sources = ["".join(c["source"]) for c in cells]
        tagged = [
            (site.twin_names(c), s)
            for c, s in zip(cells, sources, strict=True)
            if site.twin_names(c)
        ]
        if not tagged:
            continue
        defaults: dict = {}  # what the parameters cell, right after its heading, sets
        heading = next(i for i, s in enumerate(sources) if s.startswith("## Parameters"))
        exec(sources[heading + 1], defaults)
        for names, source in tagged:
            calls = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)]
            for name in names:
                explorer, kwargs = site.TWIN_SETTINGS[name]
                call = next(c for c in calls if called(c) == explorer.__name__)
                assert not call.args, f"{path.name}: pass {name}'s explorer keywords only"
                used = {k.arg: eval(ast.unparse(k.value), defaults) for k in call.keywords}
                assert used == kwargs, (path.name, name, used, kwargs)
                seen.add(name)
    assert seen == set(site.TWIN_SETTINGS)
