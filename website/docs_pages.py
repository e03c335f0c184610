"""The pages of ``docs/`` that the exercises write: the solutions page and the exercise map.

    python -m website.docs_pages     # from the repository root

rewrites ``docs/SOLUTIONS.md`` and the map between the markers of
``docs/INSTRUCTORS.md`` from the exercise registry; a test keeps both current.
"""

from __future__ import annotations

from pathlib import Path

from tpo_core.teaching.exercises import EXERCISES, KINDS

DOCS = Path(__file__).resolve().parents[1] / "docs"
MAP_START, MAP_END = "<!-- exercise map: start -->", "<!-- exercise map: end -->"


def solutions_markdown() -> str:
    """Every exercise's question and worked solution, each solution folded behind a toggle."""
    parts = [
        "# Worked solutions\n",
        "Every exercise of the notebooks, by notebook. Each solution is folded: open it after",
        "you have tried. In a notebook, `solution(name)` prints the same text.\n",
    ]
    for name in sorted(EXERCISES):
        ex = EXERCISES[name]
        question = ex.question.replace("\n", "  \n")
        solution = ex.solution
        body = f"```python\n{solution}\n```" if solution.startswith("def ") else solution
        parts.append(f"## `{name}` (notebook {name[:2]})\n\n{question}\n")
        parts.append(f"<details>\n<summary>show the solution</summary>\n\n{body}\n\n</details>\n")
    return "\n".join(parts)


def exercise_map_markdown() -> str:
    """A table of every notebook's exercises by kind, for the instructors' page."""
    notebooks = sorted({name[:2] for name in EXERCISES})
    rows = ["| notebook | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for nb in notebooks:
        cells = [
            ", ".join(
                f"`{n}`" for n in sorted(EXERCISES) if n[:2] == nb and EXERCISES[n].kind == kind
            )
            or "-"
            for kind in KINDS
        ]
        rows.append(f"| {nb} | " + " | ".join(cells) + " |")
    return "\n".join([MAP_START, *rows, MAP_END])


def with_exercise_map(page: str) -> str:
    """``page`` with the table between its map markers replaced by the current one."""
    if MAP_START not in page or MAP_END not in page:
        raise ValueError(f"the page has no exercise map markers ({MAP_START} ... {MAP_END})")
    start, end = page.index(MAP_START), page.index(MAP_END) + len(MAP_END)
    return page[:start] + exercise_map_markdown() + page[end:]


def main() -> None:
    (DOCS / "SOLUTIONS.md").write_text(solutions_markdown(), encoding="utf-8")
    instructors = DOCS / "INSTRUCTORS.md"
    instructors.write_text(with_exercise_map(instructors.read_text(encoding="utf-8")), "utf-8")
    print(f"wrote SOLUTIONS.md and the map in INSTRUCTORS.md: {len(EXERCISES)} exercises")


if __name__ == "__main__":
    main()
