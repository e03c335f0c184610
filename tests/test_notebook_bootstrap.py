"""Every notebook starts with the same Colab bootstrap; its logic is tested by simulation."""

import json
import re
import sys
import types
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def first_code_cell(path):
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


# what a notebook needs beyond the core package
EXTRAS = {"06_llm_rlvr.ipynb": "[llm]", "07_capstone.ipynb": "[llm]"}


def test_every_notebook_starts_with_the_same_bootstrap_and_its_own_extras():
    sources = {}
    for p in NOTEBOOKS:
        cell = first_code_cell(p)
        extras = EXTRAS.get(p.name, "")
        assert f'"tpo-core{extras} @' in cell, f"{p.name} must install tpo-core{extras}"
        sources[p.name] = cell.replace(f"tpo-core{extras} @", "tpo-core @")
    assert len(set(sources.values())) == 1, "the first code cells differ between notebooks"


class FakeShell:
    def __init__(self):
        self.magics = []

    def run_line_magic(self, name, line, _stack_depth=1):
        self.magics.append((name, line))


def run_bootstrap(on_colab, monkeypatch):
    shell, enabled = FakeShell(), []
    if on_colab:
        output = types.SimpleNamespace(enable_custom_widget_manager=lambda: enabled.append(True))
        colab = types.ModuleType("google.colab")
        colab.output = output
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
        monkeypatch.setitem(sys.modules, "google.colab", colab)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    code = TransformerManager().transform_cell(first_code_cell(NOTEBOOKS[0]))
    exec(compile(code, "bootstrap", "exec"), {"get_ipython": lambda: shell})
    return shell.magics, enabled


def test_bootstrap_on_colab_installs_the_package_and_enables_widgets(monkeypatch):
    magics, enabled = run_bootstrap(True, monkeypatch)
    assert len(magics) == 1 and magics[0][0] == "pip"
    line = magics[0][1]
    assert "tpo-core" in line and "torch" not in line.replace("tpo-core", "")  # keeps Colab's torch
    assert enabled == [True]


def test_bootstrap_elsewhere_does_nothing(monkeypatch):
    magics, enabled = run_bootstrap(False, monkeypatch)
    assert magics == [] and enabled == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_readme_has_a_colab_badge_for_every_notebook(path):
    readme = (ROOT / "README.md").read_text()
    assert f"blob/main/notebooks/{path.name}" in readme, (
        f"README has no Colab badge for {path.name}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_its_own_colab_badge(path):
    first = "".join(json.loads(path.read_text())["cells"][0]["source"])
    address = re.search(r'Repository = "https://github.com/(.+)"', PYPROJECT).group(1)
    assert f"colab.research.google.com/github/{address}/blob/main/notebooks/{path.name}" in first


GPU_NOTEBOOKS = {"06_llm_rlvr.ipynb", "07_capstone.ipynb"}


def title_cell(path) -> str:
    return "".join(json.loads(path.read_text())["cells"][0]["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_gpu_notebook_asks_for_a_gpu_runtime_before_its_first_cell(path):
    """On Colab a runtime change restarts the session: 06 and 07 say so before anything runs."""
    asks = "choose a GPU runtime" in title_cell(path) and "Change runtime type" in title_cell(path)
    assert asks == (path.name in GPU_NOTEBOOKS)


def test_reference_links_open_the_course_sites_pages_on_colab_and_the_site():
    """A notebook on Colab has no ../docs/ beside it: it links the published site's pages (the
    site build turns them back into links within the site)."""
    address = re.search(r'Repository = "https://github.com/(.+)"', PYPROJECT).group(1)
    owner, name = address.split("/")
    site = f"https://{owner}.github.io/{name}/docs/"
    linked = set()
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert "](../docs/" not in text, path.name
        linked |= set(re.findall(re.escape(site) + r"(\w+)\.html", text))
    assert {"REFRESHER", "GLOSSARY"} <= linked
    assert all((ROOT / "docs" / f"{page}.md").exists() for page in linked), linked
