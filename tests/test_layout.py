"""The package's shape: stages on a shared base, a teaching layer on top, old paths deprecated."""

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import tpo_core

PACKAGE = Path(tpo_core.__file__).parent
BASE = {"objectives", "stats"}  # what every stage may import
STAGES = {"group", "bandits", "tokens", "llm"}
TEACHING = "teaching"


def top_level_units() -> set[str]:
    """Modules and subpackages directly under tpo_core/ (data folders and __init__ aside)."""
    units = {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    return units | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}


def unit_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_units(path: Path) -> set[str]:
    """The top-level units of tpo_core that ``path`` imports (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "tpo_core":
                names = parts[1:2] or [a.name for a in node.names]  # `from tpo_core import x`
                found |= set(names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tpo_core" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_at_most_eight_top_level_units():
    units = top_level_units()
    assert units == BASE | STAGES | {TEACHING, "__main__"}
    assert len(units) <= 8


def test_import_rules_hold():
    """Stages import only the base, never each other or the teaching layer; the base imports
    nothing of the package; teaching may import any stage."""
    problems = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        unit = unit_of(path)
        other = imported_units(path) - {unit}
        if unit in BASE:
            allowed = BASE - {unit} if unit == "stats" else set()
        elif unit in STAGES:
            allowed = BASE
        else:  # the teaching layer and the command line
            allowed = BASE | STAGES | {TEACHING}
        problems += [f"{path.relative_to(PACKAGE)} imports {u}" for u in sorted(other - allowed)]
    assert not problems, problems


def test_the_import_check_can_see_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from tpo_core.tokens.train import train\nfrom tpo_core import viz\n")
    assert imported_units(bad) == {"tokens", "viz"}


def test_no_import_cycle_between_units():
    graph = {
        u: set().union(*(imported_units(p) for p in PACKAGE.rglob("*.py") if unit_of(p) == u)) - {u}
        for u in top_level_units()
    }

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n)))
                   for n in graph.get(start, ()))  # fmt: skip

    assert not [u for u in graph if reaches(u, u)]


@pytest.mark.parametrize(("old", "new"), sorted(tpo_core.MOVED_MODULES.items()))
def test_old_module_paths_still_import_with_a_warning(old, new):
    if "trl" in old:
        pytest.importorskip("trl")
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} has moved to {new}"):
        module = importlib.import_module(old)
    target = importlib.import_module(new)
    public = [k for k in vars(target) if not k.startswith("_")]
    assert public and all(getattr(module, k) is getattr(target, k) for k in public)


def test_old_from_import_form_works_in_a_fresh_interpreter():
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n    from tpo_core import viz\nexcept DeprecationWarning as w:\n    print(w)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "tpo_core.viz has moved to tpo_core.teaching.viz" in out.stdout


def test_new_paths_and_top_level_api_import_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for name in ("tpo_core.tokens.train", "tpo_core.bandits", "tpo_core.llm",
                     "tpo_core.teaching.viz", "tpo_core.stats"):  # fmt: skip
            importlib.import_module(name)
    assert tpo_core.tpo_target is importlib.import_module("tpo_core.objectives").tpo_target


def test_no_citations_of_documents_outside_the_repository():
    """Docs cite the paper or a notebook; the brief the project was built from is not shipped."""
    root, word = PACKAGE.parent, "SP" + "EC"
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    hits = [
        name
        for name in tracked.stdout.split()
        if not name.endswith(".json") and word in (root / name).read_text(errors="ignore")
    ]
    assert not hits


def test_glossary_defines_every_method_name_and_is_linked():
    from tpo_core.bandits import MULTI_CONTEXT_METHODS, SINGLE_CONTEXT_METHODS
    from tpo_core.bandits.neural import NEURAL_BANDIT_METHODS
    from tpo_core.group import DESCENT_METHODS
    from tpo_core.llm import LOSSES
    from tpo_core.tokens import ALGORITHMS

    root = PACKAGE.parent
    glossary = (root / "docs" / "GLOSSARY.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in glossary.splitlines()
            if line.startswith("| `")}  # fmt: skip
    names = {*ALGORITHMS, *SINGLE_CONTEXT_METHODS, *MULTI_CONTEXT_METHODS,
             *NEURAL_BANDIT_METHODS, *DESCENT_METHODS, *LOSSES}  # fmt: skip
    assert names <= rows, f"glossary lacks {sorted(names - rows)}"
    assert rows <= names, f"glossary names methods nothing runs: {sorted(rows - names)}"
    for term in ("snapshot", "group policy", "all-fail group", "prompt-matched",
                 "interaction-matched", "misalignment", "k3 KL", "Muon"):  # fmt: skip
        assert f"**{term}**" in glossary, term
    linked = [root / "README.md", *sorted((root / "notebooks").glob("*.ipynb"))]
    assert [p.name for p in linked if "GLOSSARY.md" not in p.read_text()] == []
