"""The README, CI, pyproject and conda/Binder environments must not drift apart."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAME = {"torch": "pytorch-cpu"}  # pip name -> conda-forge name where they differ


def readme_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    assert len(blocks) == 2, "the Quick start section must hold exactly two commands"
    return [b.strip() for b in blocks]


def test_ci_runs_the_readme_commands():
    setup, test = readme_commands()
    install, opens = setup.rsplit(" && ", 1)
    assert opens.startswith(".venv/bin/jupyter lab notebooks")
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci, "CI must install exactly as the README says"
    assert test in ci.splitlines(), "CI must run the README's test command"


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement(spec):
    name, bound = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", spec).groups()
    return CONDA_NAME.get(name, name), bound.replace(" ", "")


def conda_dependencies(path):
    """Conda packages plus the pip section's requirements (those not on conda-forge)."""
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = next((d["pip"] for d in deps if isinstance(d, dict)), [])
    names = [d for d in deps if isinstance(d, str) and not d.startswith(("python", "pip"))]
    names += [p for p in pip if not p.startswith("-")]
    return {requirement(d) for d in names}


def test_conda_environments_match_pyproject():
    project = pyproject()
    extras = project["optional-dependencies"]
    needed = project["dependencies"] + extras["notebooks"] + extras["test"] + extras["llm"]
    wanted = {requirement(s) for s in needed}
    for path in (ROOT / "environment.yml", ROOT / "binder" / "environment.yml"):
        assert conda_dependencies(path) == wanted, f"{path.name} drifted from pyproject.toml"


def test_torch_is_not_pinned_exactly():
    torch_spec = next(s for s in pyproject()["dependencies"] if s.startswith("torch"))
    assert "==" not in torch_spec and "<" not in torch_spec


def test_environments_install_this_package():
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    root_pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert any(line.endswith("-e .") for line in root_pip)
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post_build


# A notebook's import -> the package that provides it in the Binder environment.
PROVIDED_BY = {"torch": "pytorch-cpu", "IPython": "ipykernel", "tpo_core": None}


def notebook_imports():
    import nbformat

    roots = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                roots |= set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", cell.source, re.M))
    return roots - set(__import__("sys").stdlib_module_names)


def test_binder_environment_provides_every_notebook_import():
    names = {name for name, _ in conda_dependencies(ROOT / "binder" / "environment.yml")}
    imports = notebook_imports()
    assert {"torch", "tpo_core", "IPython"} <= imports  # the scan finds real imports
    for module in imports - {"google"}:  # google.colab exists only on Colab
        package = PROVIDED_BY.get(module, module.replace("_", "-"))
        assert package is None or package in names, f"notebooks import {module}; Binder lacks it"


def test_jupyterlab_news_pop_up_is_off_in_this_environment_and_on_binder():
    """The README's first command (and Binder's postBuild) install the settings override, and
    JupyterLab reads it: no news pop-up over the figures of a projected classroom."""
    import json
    import sys

    from jupyterlab_server.settings_utils import _get_overrides

    shipped = ROOT / "binder" / "jupyterlab" / "overrides.json"
    setup, _ = readme_commands()
    assert "binder/jupyterlab/overrides.json" in setup
    assert "binder/jupyterlab/overrides.json" in (ROOT / "binder" / "postBuild").read_text()
    schema_file = Path(sys.prefix, "share/jupyter/lab/schemas/@jupyterlab/apputils-extension")
    schema = json.loads((schema_file / "notification.json").read_text())["properties"]
    notification = json.loads(shipped.read_text())["@jupyterlab/apputils-extension:notification"]
    assert {"const": notification["fetchNews"], "title": "Never"} in schema["fetchNews"]["oneOf"]
    assert (
        notification["checkForUpdates"] is False and schema["checkForUpdates"]["type"] == "boolean"
    )
    overrides, error = _get_overrides(str(Path(sys.prefix, "share/jupyter/lab/settings")))
    assert not error
    assert overrides.get("@jupyterlab/apputils-extension:notification") == notification


def test_readme_figures_exist_and_are_small():
    """The figures of README and docs/ are PNGs .ci/readme-figures writes, each under 200 kB."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    pattern = r"!\[[^\]]+\]\(((?:\.\./)?docs/figures/|figures/)([\w-]+)\.png\)"
    shown = {name for page in pages for _, name in re.findall(pattern, page.read_text())}
    assert len(shown) >= 4
    written = re.findall(r'^\s+"(\w+)": ', (ROOT / ".ci" / "readme-figures").read_text(), re.M)
    assert shown <= set(written), f"not written by .ci/readme-figures: {shown - set(written)}"
    for name in written:
        data = (ROOT / "docs" / "figures" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000, name
