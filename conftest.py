"""Keep what nbval's run of each notebook printed, so the site needs no second run.

When every code cell of a notebook passes, the notebook with those outputs is
written to ``build/executed/`` by :func:`website.pages.record`;
``.ci/build-site`` uses it while the fingerprint still matches and executes the
notebook itself otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
EXECUTED = ROOT / "build" / "executed"
_cells: dict[Path, list] = defaultdict(list)  # notebook -> its cell items that ran and passed
_failed: set[Path] = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.when != "call" or type(item).__name__ != "IPyNbCell":
        return
    notebook = Path(item.parent.path)
    if report.passed:
        _cells[notebook].append(item)
    else:
        _failed.add(notebook)


def pytest_sessionfinish(session):
    if not _cells:  # no notebook ran: nothing to record
        return
    from website.pages import record

    for notebook, items in _cells.items():
        nb = items[0].parent.nb
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        if notebook in _failed or len(items) != len(code_cells):
            continue
        for item in items:
            item.cell.outputs = item.test_outputs
        record(nb, notebook, EXECUTED)
