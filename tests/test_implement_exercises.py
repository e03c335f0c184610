"""Implement-it exercises: the worked solution passes, and each usual mistake is named."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from tpo_core.objectives import tpo_target
from tpo_core.teaching import exercises
from tpo_core.teaching.exercises.engine import Exercise
from website import docs_pages

ROOT = Path(__file__).resolve().parents[1]

IMPLEMENT = {
    "01-my-tpo-target": "my_tpo_target",
    "01-my-tpo-loss": "my_tpo_loss",
    "05-my-grpo-advantages": "my_grpo_advantages",
    "02-my-beta-tpo": "my_beta_tpo",
    "06-my-rlvr-loss": "my_rlvr_loss",
}


def solved(name):
    namespace = {"torch": torch, "math": math}
    exec(exercises.solution(name), namespace)
    return namespace[IMPLEMENT[name]]


@pytest.mark.parametrize("name", sorted(IMPLEMENT))
def test_worked_solution_passes_and_a_stub_is_told_what_is_missing(name):
    assert exercises.check(name, solved(name)).correct, exercises.check(name, solved(name))
    stub = exercises.check(name, lambda *args: None)
    assert not stub.correct and "returned None" in stub.message
    assert "function itself" in exercises.check(name, 0.5).message


def _zscore(s, unbiased=False):
    std = s.std(-1, unbiased=unbiased, keepdim=True)
    centred = s - s.mean(-1, keepdim=True)
    return torch.where(std > 1e-6, centred / std.clamp_min(1e-6), torch.zeros_like(s))


@pytest.mark.parametrize(
    ("mistake", "named"),
    [
        (lambda old, s, eta: torch.softmax(_zscore(s) / eta, -1), "anchor"),
        (lambda old, s, eta: torch.softmax(torch.log_softmax(old, -1) + s / eta, -1), "raw scores"),
        (lambda old, s, eta: torch.softmax(old + _zscore(s, True) / eta, -1), "Bessel"),
        (lambda old, s, eta: torch.softmax(old + _zscore(s) * eta, -1), "u / eta"),
        (lambda old, s, eta: old.exp() * torch.exp(_zscore(s) / eta), "normalised"),
    ],
)
def test_tpo_target_mistakes_are_named(mistake, named):
    feedback = exercises.check("01-my-tpo-target", mistake)
    assert not feedback.correct and named in feedback.message


def test_loss_mistakes_are_named():
    def summed(logits, q):
        return -(q * torch.log_softmax(logits, -1)).sum()

    def detached(logits, q):
        return -(q * torch.log_softmax(logits.detach(), -1)).sum(-1).mean()

    assert "average them" in exercises.check("01-my-tpo-loss", summed).message
    assert "no gradient" in exercises.check("01-my-tpo-loss", detached).message

    def token_mean(new, old, rewards, mask, eta):
        g, k = rewards.shape
        mean = lambda x: (x.masked_fill(~mask, 0).sum(-1) / mask.sum(-1)).view(g, k)  # noqa: E731
        q = tpo_target(mean(old), rewards, eta)
        return -(q * torch.log_softmax(mean(new), -1)).sum(-1).mean()

    def target_from_new(new, old, rewards, mask, eta):
        return solved("06-my-rlvr-loss")(new, new.detach(), rewards, mask, eta)

    assert "sum" in exercises.check("06-my-rlvr-loss", token_mean).message
    assert "snapshot" in exercises.check("06-my-rlvr-loss", target_from_new).message


def test_advantage_and_beta_mistakes_are_named():
    def bessel(r):
        return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-8)

    def no_epsilon(r):
        return (r - r.mean(-1, keepdim=True)) / r.std(-1, unbiased=False, keepdim=True)

    assert "population" in exercises.check("05-my-grpo-advantages", bessel).message
    assert "NaN" in exercises.check("05-my-grpo-advantages", no_epsilon).message
    grpo = exercises.check("02-my-beta-tpo", lambda p, k: torch.sqrt(p / (1 - p)))
    assert not grpo.correct and "GRPO" in grpo.message


MULTIPLE_CHOICE = {
    "00-gradient-sign": "a",
    "01-double-epochs": "b",
    "01-panel-lr": "b",
    "02-pg-baseline": "a",
    "03-failed-sample": "b",
    "04-unanimous": "a",
    "05-ratio-box": "b",
    "05-stuck-group": "a",
    "06-unlikely-right": "a",
    "06-one-epoch": "a",
    "00-large-eta": "a",
    "00-gradient-sum": "a",
    "02-what-differs": "b",
    "03-shared-weights": "b",
    "04-sequential-mistake": "b",
    "07-final-error": "b",
    "07-overlap": "b",
}


@pytest.mark.parametrize(("name", "right"), sorted(MULTIPLE_CHOICE.items()))
def test_multiple_choice_explains_every_option(name, right):
    text = exercises.question(name)
    options = [key for key in "abc" if f"  ({key}) " in text]
    assert len(options) == 3
    messages = set()
    for key in options:
        feedback = exercises.check(name, key.upper())
        assert feedback.correct == (key == right)
        messages.add(feedback.message)
    assert len(messages) == 3  # one explanation per option
    assert exercises.solution(name).startswith(f"({right})")
    assert not exercises.check(name, "d").correct


def test_every_exercise_is_asked_in_the_notebook_its_name_gives():
    asked = {}
    for path in sorted(ROOT.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for c in cells:
            for name in re.findall(r'check\("([\w-]+)"', "".join(c["source"])):
                asked[name] = path.name[:2]
    assert {name: name[:2] for name in exercises.EXERCISES} == asked


def test_the_instructors_exercise_map_is_current_and_sorts_by_kind():
    page = (ROOT / "docs" / "INSTRUCTORS.md").read_text()
    assert docs_pages.exercise_map_markdown() in page, (
        "docs/INSTRUCTORS.md: the exercise map is stale; run python -m website.docs_pages"
    )
    kinds = {name: ex.kind for name, ex in exercises.EXERCISES.items()}
    assert {n for n, k in kinds.items() if k == "multiple choice"} == set(MULTIPLE_CHOICE)
    assert {n for n, k in kinds.items() if k == "implement it"} == {n for n in kinds if "-my-" in n}


def test_every_notebook_asks_two_or_more_multiple_choice_questions():
    for path in sorted(ROOT.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        asked = {m for c in cells for m in re.findall(r'check\("([\w-]+)"', "".join(c["source"]))}
        assert len(asked & set(MULTIPLE_CHOICE)) >= 2, path.name


def test_the_quickstart_questions_match_the_library():
    """00-large-eta: q -> p_old as eta grows; 00-gradient-sum: p - q sums to 0."""
    from tpo_core.group import group_view, random_group

    p_old, scores = random_group(6, seed=4)
    hot = group_view(p_old, scores, eta=1e6)
    torch.testing.assert_close(hot.q, hot.p_old, rtol=0, atol=1e-5)
    assert float(group_view(p_old, scores, eta=0.3).gradient.sum()) == pytest.approx(0, abs=1e-12)


def test_the_sequential_reward_question_matches_the_reward():
    """04-sequential-mistake: one wrong token zeroes it and every later token, not earlier ones."""
    from tpo_core.tokens.tasks import token_rewards

    targets = torch.tensor([[0, 1, 1, 0, 1]])
    answers = targets.clone()
    answers[0, 2] = 0  # wrong at position 2
    assert token_rewards("sequential", answers, targets).tolist() == [[1, 1, 0, 0, 0]]
    assert token_rewards("bag", answers, targets).tolist() == [[1, 1, 0, 1, 1]]


def test_the_lr_times_epochs_question_matches_the_closed_form():
    """01-double-epochs: doubling E from K / (lr eta) lands on the target at eta / 2."""
    from tpo_core.group import group_view, pg_endpoint, random_group

    p_old, scores = random_group(5, seed=2)
    lr, eta = 0.25, 1.0
    epochs = round(5 / (lr * eta))
    doubled = pg_endpoint(p_old, scores, lr, 2 * epochs)
    torch.testing.assert_close(doubled, group_view(p_old, scores, eta / 2).q)


def test_the_unlikely_completion_question_matches_the_target():
    """06-unlikely-right: q / p_old for the lone success is e^(K / sqrt(K - 1)) / Z-ish, ~ 20."""
    p_old = torch.tensor([1e-6, 0.99] + [(0.01 - 1e-6) / 6] * 6, dtype=torch.float64)
    q = tpo_target(p_old.log(), torch.tensor([1.0] + [0.0] * 7, dtype=torch.float64))
    assert 1.5e-5 < q[0] < 2.5e-5
    assert float(q[0] / p_old[0]) == pytest.approx(math.exp(8 / math.sqrt(7)), rel=1e-3)


def test_solutions_page_is_current_and_folds_every_solution():
    page = ROOT / "docs" / "SOLUTIONS.md"
    assert page.read_text(encoding="utf-8") == docs_pages.solutions_markdown(), (
        "docs/SOLUTIONS.md is stale: run python -m website.docs_pages"
    )
    text = page.read_text(encoding="utf-8")
    assert text.count("<summary>show the solution</summary>") == len(exercises.EXERCISES)


def test_an_exercise_of_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        Exercise("xx-typo", "?", lambda a: (True, ""), "", kind="multiple-choice")


def test_the_capstone_rubric_and_the_instructors_page_give_the_same_points():
    capstone = json.loads((ROOT / "notebooks" / "07_capstone.ipynb").read_text())["cells"]
    rubric = next("".join(c["source"]) for c in capstone if "**Rubric**" in "".join(c["source"]))
    in_notebook = [int(n) for n in re.findall(r"\((\d+)(?: points?)?\)", rubric)]
    page = (ROOT / "docs" / "INSTRUCTORS.md").read_text()
    table = page[page.index("## The capstone's rubric") :].split("\n## ")[0]
    on_page = [int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert in_notebook == on_page and sum(on_page) == 10
