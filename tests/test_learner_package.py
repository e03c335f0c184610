"""The learner package installs with its runtime dependencies alone: no site or docs tooling.

nbformat, nbconvert and Sphinx come only with the ``test`` and ``site`` extras; the site's
and the docs' generators live in ``website/``, outside the package.
"""

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tpo_core"
SITE_TOOLS = {"nbformat", "nbconvert", "nbclient", "sphinx", "myst_nb", "myst_parser"}


def imported_roots(source: str) -> set[str]:
    """The top-level modules a source file imports, at any depth (functions included)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_scan_sees_imports_inside_functions():
    source = "import os\ndef f():\n    from nbformat import v4\n    import sphinx.util\n"
    assert imported_roots(source) == {"os", "nbformat", "sphinx"}


def test_no_file_of_the_learner_package_imports_site_tooling():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the scan reads the package
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path.read_text()) & SITE_TOOLS)
        for path in files
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_site_tooling_is_only_in_the_extras_and_website_is_not_packaged():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = {
        spec.split(">")[0].split("=")[0].strip() for spec in project["project"]["dependencies"]
    }
    assert not runtime & {"nbformat", "nbconvert", "nbclient", "sphinx", "myst-nb"}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["tpo_core*"]
