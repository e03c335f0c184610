"""Binder and Colab links, and Colab installs, all point at pyproject.toml's one repository."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / ".ci" / "set-repository"


def run(*args):
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def tool():
    namespace: dict = {"__name__": "set_repository", "__file__": str(TOOL)}
    exec(compile(TOOL.read_text(), str(TOOL), "exec"), namespace)
    return namespace


def test_every_launch_link_uses_the_one_address(tool):
    address = tool["repository"]()
    for path in tool["linked_files"]():
        found = tool["addresses"](path.read_text(encoding="utf-8"))
        assert found == {address}, f"{path.name} links to {found}"
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = notebook.read_text(encoding="utf-8")
        assert (
            f"colab.research.google.com/github/{address}/blob/{tool['ref']()}/notebooks/"
            f"{notebook.name}" in text
        )
        assert f"git+https://github.com/{address}@{tool['ref']()}" in text  # the Colab setup cell
    owner, name = address.split("/")
    assert f"https://{owner}.github.io/{name}/" in (ROOT / "README.md").read_text()  # the site
    assert run("--check").returncode == 0


def test_the_site_takes_its_launch_buttons_from_the_one_address(tool, monkeypatch):
    import runpy

    build = runpy.run_path(str(ROOT / "website" / "build.py"))
    assert build["repository"]() == f"https://github.com/{tool['repository']()}"
    monkeypatch.setenv("TPO_REPOSITORY", "https://github.com/alice/course")
    conf = runpy.run_path(str(ROOT / "website" / "conf.py"))
    assert conf["html_theme_options"]["repository_url"] == "https://github.com/alice/course"


def test_one_command_moves_every_link_and_back(tmp_path, tool):
    for name in ("pyproject.toml", "README.md", "CITATION.cff"):
        shutil.copy(ROOT / name, tmp_path)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    before = {p: p.read_text(encoding="utf-8") for p in tool["linked_files"](tmp_path)}
    assert tmp_path / "CITATION.cff" in before
    old = tool["repository"](tmp_path)
    assert run("alice/course", "--root", str(tmp_path)).returncode == 0
    assert tool["repository"](tmp_path) == "alice/course"
    for path in before:
        text = path.read_text(encoding="utf-8")
        assert tool["addresses"](text) == {"alice/course"} and old not in text
    assert "https://alice.github.io/course/" in (tmp_path / "README.md").read_text()
    assert "https://alice.github.io/course/docs/REFRESHER.html" in (
        tmp_path / "notebooks" / "01_one_group.ipynb"
    ).read_text(encoding="utf-8")
    citation = (tmp_path / "CITATION.cff").read_text()
    assert 'repository-code: "https://github.com/alice/course"' in citation
    assert run("--check", "--root", str(tmp_path)).returncode == 0
    assert run(old, "--root", str(tmp_path)).returncode == 0
    assert all(p.read_text(encoding="utf-8") == text for p, text in before.items())


def test_drift_is_reported_and_bad_names_refused(tmp_path, tool):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "README.md").write_text("https://mybinder.org/v2/gh/someone/else/main\n")
    checked = run("--check", "--root", str(tmp_path))
    assert checked.returncode == 1 and "README.md" in checked.stdout
    refused = run("not a name", "--root", str(tmp_path))
    assert refused.returncode != 0 and "OWNER/NAME" in refused.stderr


def test_one_command_locks_every_launch_on_a_tag_and_refuses_one_that_does_not_exist(
    tmp_path, tool
):
    for name in ("pyproject.toml", "README.md", "CITATION.cff"):
        shutil.copy(ROOT / name, tmp_path)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    before = {p: p.read_text(encoding="utf-8") for p in tool["linked_files"](tmp_path)}
    refused = run("--ref", "spring-2027", "--root", str(tmp_path))
    assert refused.returncode != 0 and "create it first" in refused.stderr
    assert all(p.read_text(encoding="utf-8") == text for p, text in before.items())

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "course")
    git("tag", "spring-2027")
    assert run("--ref", "spring-2027", "--root", str(tmp_path)).returncode == 0
    assert tool["ref"](tmp_path) == "spring-2027"
    for path in before:
        assert tool["refs"](path.read_text(encoding="utf-8")) <= {"spring-2027"}, path.name
    notebook = (tmp_path / "notebooks" / "06_llm_rlvr.ipynb").read_text(encoding="utf-8")
    assert "blob/spring-2027/notebooks/06_llm_rlvr.ipynb" in notebook
    assert "tpo-notebooks@spring-2027" in notebook  # its Colab cell installs the same commit
    readme = (tmp_path / "README.md").read_text()
    assert "/tpo-notebooks/spring-2027?urlpath=" in readme
    assert run("--check", "--root", str(tmp_path)).returncode == 0
    assert run("--ref", "main", "--root", str(tmp_path)).returncode == 0
    assert all(p.read_text(encoding="utf-8") == text for p, text in before.items())
