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
    deps = yaml.safe_load(path.read_text())["dependencies"]
    return {
        requirement(d) for d in deps if isinstance(d, str) and not d.startswith(("python", "pip"))
    }


def test_conda_environments_match_pyproject():
    project = pyproject()
    extras = project["optional-dependencies"]
    wanted = {
        requirement(s) for s in project["dependencies"] + extras["notebooks"] + extras["test"]
    }
    for path in (ROOT / "environment.yml", ROOT / "binder" / "environment.yml"):
        assert conda_dependencies(path) == wanted, f"{path.name} drifted from pyproject.toml"


def test_torch_is_not_pinned_exactly():
    torch_spec = next(s for s in pyproject()["dependencies"] if s.startswith("torch"))
    assert "==" not in torch_spec and "<" not in torch_spec


def test_environments_install_this_package():
    root_pip = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"][-1]["pip"]
    assert any(line.endswith("-e .") for line in root_pip)
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post_build
