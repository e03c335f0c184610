"""The package's shape: stages on a shared base, a teaching layer on top sorted by stage."""

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

import tpo_core

PACKAGE = Path(tpo_core.__file__).parent
BASE = {"methods", "objectives", "stats"}  # what every stage may import
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


def test_at_most_nine_top_level_units():
    units = top_level_units()
    assert units == BASE | STAGES | {TEACHING, "__main__"}
    assert len(units) <= 9


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
        return any(
            n == goal or (n not in seen and reaches(n, goal, (*seen, n)))
            for n in graph.get(start, ())
        )

    assert not [u for u in graph if reaches(u, u)]


def teaching_part(path: Path) -> tuple[str, str]:
    """(kind, name) of a teaching module: ("figures", "group"), ("style", ""), ..."""
    parts = path.relative_to(PACKAGE / TEACHING).with_suffix("").parts
    return (parts[0], parts[1] if len(parts) > 1 else "")


def teaching_imports(path: Path) -> set[tuple[str, str]]:
    """The teaching modules ``path`` imports, as (kind, name)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["tpo_core", TEACHING] and len(parts) > 2:
                found.add((parts[2], parts[3] if len(parts) > 3 else ""))
    return found


def test_teaching_is_sorted_by_stage_and_by_kind():
    """Figures and explorers have one module per course stage, named after it, which imports
    no other stage (the base and the one-group stage, whose picture every stage reuses, aside;
    a shared module such as the learning curves imports no stage but that one);
    figures never import explorers or exercises; exercises import neither; style imports
    nothing of the package. Each teaching module stays under 300 lines."""
    problems = []
    for path in sorted((PACKAGE / TEACHING).rglob("*.py")):
        if path.name == "__init__.py":
            continue
        kind, name = teaching_part(path)
        stages = imported_units(path) & STAGES
        teaching = {k for k, _ in teaching_imports(path)}
        if kind in ("figures", "explorers"):  # shared modules (curves, twins) count as "group"
            own = name if name in STAGES else "group"
            problems += [f"{kind}/{name} imports {s}" for s in stages - {own, "group"}]
        if kind == "figures":
            problems += [
                f"figures/{name} imports {k}" for k in teaching & {"explorers", "exercises"}
            ]
        if kind == "exercises":
            problems += [f"exercises/{name} imports {k}" for k in teaching - {"exercises"}]
        if kind == "style":
            allowed = {TEACHING, "methods"}  # the catalogue's colours and labels
            problems += [f"style imports {u}" for u in imported_units(path) - allowed]
        lines = len(path.read_text().splitlines())
        if lines > 300:
            problems.append(f"{path.relative_to(PACKAGE)} has {lines} lines")
    assert not problems, problems
    for kind in ("figures", "explorers"):
        names = {p.stem for p in (PACKAGE / TEACHING / kind).glob("*.py")}
        assert STAGES <= names, f"{kind}/ lacks a module for {sorted(STAGES - names)}"


def test_the_teaching_check_can_see_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from tpo_core.teaching.explorers.group import GroupExplorer\n")
    assert teaching_imports(bad) == {("explorers", "group")}


def test_no_package_file_over_400_lines_but_the_objectives():
    long = [
        f"{p.relative_to(PACKAGE)} ({n})"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400 and p.name != "objectives.py"
    ]
    assert not long, long


def test_notebooks_import_the_teaching_layer_from_its_top_level():
    """The teaching API is what ``tpo_core.teaching`` exports; notebooks use nothing deeper."""
    import tpo_core.teaching as tt

    root = PACKAGE.parent
    deep = re.compile(r"from tpo_core\.teaching\.\w+|import tpo_core\.teaching\.\w+")
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        assert not deep.search(nb.read_text()), f"{nb.name} reaches into tpo_core.teaching"
    assert set(tt.__all__) <= set(vars(tt)), "teaching.__all__ names something it lacks"


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
    """The glossary's table of methods is the catalogue's, row for row; every stage's list of
    methods is the catalogue's for that stage."""
    from tpo_core.bandits import MULTI_CONTEXT_METHODS, SINGLE_CONTEXT_METHODS
    from tpo_core.bandits.mechanism import FAILED_SAMPLE_METHODS
    from tpo_core.bandits.neural import NEURAL_BANDIT_METHODS
    from tpo_core.group import DESCENT_METHODS
    from tpo_core.llm import LLM_METHODS
    from tpo_core.methods import glossary_rows, implemented
    from tpo_core.tokens import ALGORITHMS

    root = PACKAGE.parent
    glossary = (root / "docs" / "GLOSSARY.md").read_text()
    rows = [line for line in glossary.splitlines() if line.startswith("| `")]
    missing = [row for row in glossary_rows() if row not in rows]
    assert not missing, "docs/GLOSSARY.md's table lacks these catalogue rows:\n" + "\n".join(
        missing
    )
    assert len(rows) == len(glossary_rows()), "the glossary names methods the catalogue lacks"
    stages = dict(
        one_group=DESCENT_METHODS,
        single_context=SINGLE_CONTEXT_METHODS,
        multi_context=MULTI_CONTEXT_METHODS,
        neural_bandit=NEURAL_BANDIT_METHODS,
        failed_sample=FAILED_SAMPLE_METHODS,
        tokens=tuple(ALGORITHMS),
        llm=LLM_METHODS,
    )
    for stage, names in stages.items():
        assert tuple(names) == implemented(stage), stage
    for term in (
        "snapshot",
        "group policy",
        "all-fail group",
        "prompt-matched",
        "interaction-matched",
        "misalignment",
        "k3 KL",
        "Muon",
    ):
        assert f"**{term}**" in glossary, term
    linked = [root / "README.md", *sorted((root / "notebooks").glob("*.ipynb"))]
    assert [p.name for p in linked if not re.search(r"GLOSSARY\.(md|html)", p.read_text())] == []


def test_shipped_runs_name_no_path_of_the_machine_that_ran_them():
    """Every shipped run's provenance is the command as run from the repository's root: an
    absolute path would name a machine a reader does not have."""
    results = sorted(PACKAGE.glob("*/results/*/*.json"))
    assert results
    absolute = re.compile(r"(?:^|\s)/\w")
    for path in results:
        command = json.loads(path.read_text())["provenance"]["command"]
        assert not absolute.search(command), f"{path.name}: {command}"


REVEAL = "<summary><b>Reveal</b>"


def unfolded_predictions(cells: list[dict]) -> list[int]:
    """Markdown cells holding a **Predict** prompt that no folded reveal answers.

    A prompt is answered by the next ``<details>`` block whose summary starts with "Reveal",
    later in the same cell or in a later cell, before the notebook's next prompt; and no
    "What you should have found" may stand outside such a block.
    """
    texts = [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "markdown"]
    events = []  # (cell, position, kind) in reading order
    for i, text in texts:
        events += [(i, m.start(), "prompt") for m in re.finditer(r"\*\*Predict", text)]
        events += [(i, m.start(), "reveal") for m in re.finditer(re.escape(REVEAL), text)]
        outside = re.sub(r"<details>.*?</details>", "", text, flags=re.S)
        if "What you should have found" in outside:
            events.append((i, 0, "unfolded"))
    events.sort()
    missing, open_prompt = [], None
    for i, _, kind in events:
        if kind == "unfolded":
            missing.append(i)
        elif kind == "prompt":
            if open_prompt is not None:
                missing.append(open_prompt)
            open_prompt = i
        else:
            open_prompt = None
    return missing + ([open_prompt] if open_prompt is not None else [])


@pytest.mark.parametrize("path", sorted((PACKAGE.parent / "notebooks").glob("*.ipynb")), ids=str)
def test_every_prediction_is_asked_before_its_answer_is_shown(path):
    """Predict, then reveal: each prompt's answer stays folded until the student opens it."""
    cells = json.loads(path.read_text())["cells"]
    assert unfolded_predictions(cells) == [], f"{path.name}: prompts without a folded reveal"


def test_the_prediction_check_can_see_an_answer_in_plain_sight():
    md = lambda text: {"cell_type": "markdown", "source": [text]}  # noqa: E731
    answer = "<details>\n" + REVEAL + " (open it)</summary>\n\nTPO.\n</details>"
    assert unfolded_predictions([md("**Predict.** Who wins?"), md(answer)]) == []
    assert unfolded_predictions([md("**Predict.** Who wins?"), md("TPO wins.")]) == [0]
    assert unfolded_predictions([md("**Predict.** a"), md("**Predict.** b"), md(answer)]) == [0]
    assert unfolded_predictions([md("What you should have found: TPO.")]) == [0]
