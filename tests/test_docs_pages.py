"""The pages of docs/ that the exercise registry writes stay current (website/docs_pages.py)."""

from pathlib import Path

import pytest

from tpo_core.teaching.exercises import EXERCISES, KINDS
from website import docs_pages

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "run python -m website.docs_pages from the repository root"


def test_the_instructors_exercise_map_is_current():
    page = (ROOT / "docs" / "INSTRUCTORS.md").read_text(encoding="utf-8")
    assert docs_pages.exercise_map_markdown() in page, (
        f"docs/INSTRUCTORS.md: the exercise map is stale; {REGENERATE}"
    )


def test_the_map_lists_every_exercise_once_under_its_kind():
    rows = docs_pages.exercise_map_markdown().splitlines()[3:-1]  # markers and header off
    listed = {}
    for row in rows:
        notebook, *cells = (c.strip() for c in row.strip("|").split("|"))
        for kind, cell in zip(KINDS, cells, strict=True):
            for name in cell.replace("`", "").split(", "):
                if name != "-":
                    assert name not in listed
                    listed[name] = (notebook, kind)
    assert listed == {name: (name[:2], ex.kind) for name, ex in EXERCISES.items()}


def test_solutions_page_is_current_and_folds_every_solution():
    page = (ROOT / "docs" / "SOLUTIONS.md").read_text(encoding="utf-8")
    assert page == docs_pages.solutions_markdown(), f"docs/SOLUTIONS.md is stale; {REGENERATE}"
    assert page.count("<summary>show the solution</summary>") == len(EXERCISES)


def test_a_page_without_map_markers_is_refused():
    with pytest.raises(ValueError, match="exercise map markers"):
        docs_pages.with_exercise_map("# Instructors\n\nno map here\n")
    page = f"before\n{docs_pages.MAP_START}\nold\n{docs_pages.MAP_END}\nafter\n"
    updated = docs_pages.with_exercise_map(page)
    assert updated.startswith("before\n") and updated.endswith("\nafter\n")
    assert "old" not in updated and docs_pages.exercise_map_markdown() in updated
