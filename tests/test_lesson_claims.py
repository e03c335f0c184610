"""Every measured number a lesson's prose states is printed by a cell above it, or quoted from
the paper.

A *claim* is a percentage, a decimal number, or a ratio ("3×", "2 times") in a markdown cell,
outside code spans and math (a setting such as ``lr = 0.5`` is written as code or math, and
section and table numbers are references, not claims). It passes when

* an output of a code cell above it prints a number that rounds to it (a fraction printed as
  0.029 supports "2.9%"), or
* its sentence names the paper, or its paragraph names the paper and cites the paper's
  section or table ("§3.5", "Table 3", "Section 3.2"): a quoted figure, not a measured one, or
* it is one of the few thresholds the course defines rather than measures (:data:`DEFINED`).

The outputs are those of the notebooks as the test suite last ran them (``build/executed/``,
recorded after every cell passed, for the current notebook and library only). Without such a
recording the notebook's check is skipped, unless ``TPO_CLAIMS_TESTS`` is set (``.ci/run``
sets it after the suite has run every notebook), in which case it fails.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from website.pages import recorded

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "build" / "executed"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

DEFINED = {"1%", "5%", "10%", "50%", "80%", "95%", "100%"}
"""Thresholds and levels the lessons define (steps to 1% error, 95% intervals, 80% power)."""

CLAIM = re.compile(r"(?<![\w.$^_\\/#-])(\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)(\s?(?:%|×|times\b))?")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")
SOURCED = re.compile(r"§\s?\d|\bTable\s\d|\bSection\s\d|\bSec\.\s?\d")
PAPER = re.compile(r"\bpaper", re.I)


def prose(cell_source: str) -> str:
    """A markdown cell without its math, code spans, links' targets and HTML tags."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$", " ", cell_source, flags=re.S)
    text = re.sub(r"```.*?```|`[^`]*`", " ", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"(§|\bSection|\bTable|\bSec\.)\s?[\d.–-]*\d", " ", text)  # references
    return re.sub(r"<[^>]+>", " ", text)


def claims(cell_source: str) -> list[tuple[str, str, bool]]:
    """The claims of a markdown cell: ``(claim as written, its sentence, quoted)``; ``quoted``
    when the sentence names the paper, or its paragraph names the paper and cites its section
    or table."""
    found = []
    for paragraph in re.split(r"\n\s*\n|\n(?=\s*[-*] |\s*\d+\. )", cell_source):
        cited = bool(SOURCED.search(paragraph)) and bool(PAPER.search(paragraph))
        for sentence in re.split(r"(?<=[.!?:;])\s+", prose(paragraph)):
            for m in CLAIM.finditer(sentence):
                number, unit = m.groups()
                if unit or "." in number:  # a percentage, a ratio or a decimal: measured
                    quoted = cited or bool(PAPER.search(sentence))
                    found.append((m.group(0).strip(), sentence, quoted))
    return found


def printed_numbers(cell) -> list[float]:
    """Every number in a code cell's text outputs, and in its figures' titles (not their data)."""
    texts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            texts.append(out.get("text", ""))
        for mime, value in out.get("data", {}).items():
            if mime in ("text/plain", "text/markdown", "text/html", "text/latex"):
                texts.append(value if isinstance(value, str) else "".join(value))
            elif mime == "application/vnd.plotly.v1+json":
                spec = json.loads(value) if isinstance(value, str) else value
                layout = spec.get("layout", {})
                texts.append(json.dumps(layout.get("title", "")))
                texts += [json.dumps(a.get("text", "")) for a in layout.get("annotations", [])]
    return [float(n.replace(",", "")) for t in texts for n in NUMBER.findall(t)]


def supported(claim: str, numbers: list[float]) -> bool:
    """Does a printed number round to ``claim``? Percentages may be printed as fractions."""
    percent = claim.endswith("%")
    digits = re.sub(r"\s?(%|×|times)$", "", claim).replace(",", "")
    value = float(digits)
    if "e" in digits:  # scientific notation: the same digits in the same notation
        places = len(digits.split("e")[0].partition(".")[2])
        return any(f"{x:.{places}e}" == f"{value:.{places}e}" for x in numbers)
    places = len(digits.split(".")[1]) if "." in digits else 0
    scales = (1.0, 100.0) if percent else (1.0,)
    return any(round(x * s, places) == value for x in numbers for s in scales)


def unsupported_claims(nb) -> list[str]:
    """Claims of ``nb``'s prose that no output above them supports and no paper citation covers."""
    numbers: list[float] = []
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            numbers += printed_numbers(cell)
        elif cell.cell_type == "markdown":
            for claim, sentence, quoted in claims(cell.source):
                if quoted or claim.replace(" ", "") in DEFINED or supported(claim, numbers):
                    continue
                problems.append(f"cell {index}: {claim!r} in “{' '.join(sentence.split())[:120]}”")
    return problems


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_measured_number_in_a_lesson_is_printed_above_it(notebook):
    nb = recorded(notebook, EXECUTED)
    if nb is None:
        if os.environ.get("TPO_CLAIMS_TESTS"):
            pytest.fail(f"{notebook.name}: no current recording in build/executed/ (run the suite)")
        pytest.skip("no current recording of this notebook's run (run the notebook tests first)")
    assert unsupported_claims(nb) == []


def _notebook(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for kind, source, printed in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source)
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
            nb.cells.append(cell)
    return nb


def test_the_check_flags_a_number_no_cell_printed_and_passes_printed_or_quoted_ones():
    nb = _notebook(
        ("code", "print(err)", "TPO 0.0291, GRPO 4.37%\n"),
        ("md", "TPO ends at 2.9% and GRPO at 4.4%; GRPO is 1.5× slower.", None),
        ("md", "The paper's Table 3 gives TPO 6.9% at H = 7.", None),
        ("md", "Steps to 1% error; math $0.73$ and `0.5` are not claims.", None),
    )
    assert unsupported_claims(nb) == ["cell 1: '1.5×' in “GRPO is 1.5× slower.”"]
    # a claim must be printed *above* it: move the output below and both numbers fail
    nb.cells = nb.cells[1:2] + nb.cells[:1]
    assert len(unsupported_claims(nb)) == 3
    # scientific notation is one claim, supported by a number that prints the same digits
    norms = _notebook(
        ("code", "print(norm)", "0.4472\n"), ("md", "a norm of 4.47e-01, then 4.48e-01", None)
    )
    assert unsupported_claims(norms) == [
        "cell 1: '4.48e-01' in “a norm of 4.47e-01, then 4.48e-01”"
    ]
    # our numbers in a paragraph with no citation are not quoted, even beside the paper's
    ours = _notebook(
        ("md", "We measure 3.2%.\n\nThe paper (Table 3) reports 6.9%; we found 2.1%.", None)
    )
    assert unsupported_claims(ours) == ["cell 0: '3.2%' in “We measure 3.2%.”"]
