"""Every citation of the paper's sections names one the paper has, and the claims most often
cited name the right one (Table 3 is §3.6, the ablations §3.7, LLM RLVR §3.8).

A decimal section (``§3.6``, ``Section 3.6``) is always the paper's: the notebooks and the
refresher number their own sections with whole numbers. A whole-number section or an
appendix counts as the paper's when the paper is named just before it.
"""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Kaddour (2026), *Target Policy Optimization*: its sections and appendices.
PAPER_SECTIONS = {
    "2": "the method",
    "3": "experiments",
    "3.1": "single-context bandit",
    "3.2": "multi-context bandit",
    "3.3": "MNIST contextual bandit",
    "3.4": "dense reward, token-level grouping (Table 1)",
    "3.5": "generalisation across task and reward variants (Table 2)",
    "3.6": "sparse credit assignment, terminal reward (Table 3)",
    "3.7": "anchor and target-matching ablations",
    "3.8": "LLM RLVR",
    "4": "what explains the gains under sparse reward",
    "4.1": "does the gradient vanish",
    "4.2": "allocating signal when informative groups are rare",
    "4.3": "extracting more across epochs",
    "5": "related work",
    "6": "limitations",
    "7": "conclusion",
}
PAPER_APPENDICES = set("ABCDEFG")

CITATION = re.compile(
    r"(?:§\s?|Sections? )(\d+(?:\.\d+)?)(?:[–-](\d+(?:\.\d+)?))?|Appendix ([A-Z])\b"
)
PAPER_NAMED = re.compile(r"paper|Kaddour|Target Policy Optimization", re.I)
OTHER_WORKS = re.compile(r"Sutton|Barto")  # books cited by their own sections
# (what a line says, the section its citation must be)
TIED = [
    (re.compile(r"Table 3"), "3.6"),
    (re.compile(r"ablation", re.I), "3.7"),
    (re.compile(r"LLM|RLVR|Qwen|GSM8K"), "3.8"),
    (re.compile(r"Table 1\b"), "3.4"),
    (re.compile(r"MNIST"), "3.3"),
]


def texts():
    """(where, text) for every piece of prose and code the project ships."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            yield f"{path.name} cell {i}", "".join(cell["source"])
    for pattern in ("*.md", "docs/*.md", "tpo_core/**/*.py", "benchmarks/*.py", "website/*.py"):
        for path in sorted(ROOT.glob(pattern)):
            yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")


def paper_citations():
    """(where, line, sections cited) for every citation of the paper's sections."""
    found = []
    for where, text in texts():
        for line in text.splitlines():
            if OTHER_WORKS.search(line):
                continue
            for m in CITATION.finditer(line):
                before = line[max(0, m.start() - 80) : m.start()]
                first, last, appendix = m.groups()
                cited = [s for s in (first, last) if s]
                decimal = any("." in s for s in cited)
                if decimal or PAPER_NAMED.search(before):
                    found.append((where, line.strip(), cited or [appendix]))
    return found


def test_the_scan_finds_the_paper_citations():
    assert (
        len(paper_citations()) >= 20
    )  # the course cites the paper often; a broken scan finds none


def test_every_citation_names_a_section_the_paper_has():
    wrong = [
        (where, line, cited)
        for where, line, cited in paper_citations()
        for section in cited
        if section not in PAPER_SECTIONS and section not in PAPER_APPENDICES
    ]
    assert wrong == [], wrong


@pytest.mark.parametrize(("says", "section"), TIED, ids=[s for _, s in TIED])
def test_claims_cite_the_section_that_makes_them(says, section):
    """A line that cites one decimal section for a claim cites the section the claim is in."""
    wrong = []
    for where, line, cited in paper_citations():
        decimal = [s for s in cited if "." in s]
        if says.search(line) and len(decimal) == 1 and len(CITATION.findall(line)) == 1:
            if decimal[0] != section:
                wrong.append((where, line))
    assert wrong == [], wrong


def test_a_wrong_citation_would_be_found(monkeypatch):
    """The scan is not vacuous: a made-up section and a misplaced Table 3 are both caught."""
    made_up = [("x", "The paper's Table 3 (§3.5) and §9.9.")]
    monkeypatch.setattr(sys.modules[__name__], "texts", lambda: iter(made_up))
    cited = [c for _, _, c in paper_citations()]
    assert ["3.5"] in cited and ["9.9"] in cited
