"""Exercises of notebook 04 (token tasks, dense reward): each graded from the library."""

from __future__ import annotations

import torch

from tpo_core.objectives import standardize_scores
from tpo_core.teaching.exercises.engine import (
    as_choice,
    exercise,
    multiple_choice,
)

STATE_REWARDS = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


@exercise(
    "04-state-u",
    "At one prefix state the K = 8 candidates' token rewards are (1, 0, 0, 1, 0, 0, 0, 0). "
    "What is u for a correct candidate?",
    "Mean 0.25, population std sqrt(0.25 · 0.75) = 0.433, so a correct candidate has "
    "u = 0.75 / 0.433 = sqrt(3) ≈ 1.73 and a wrong one -0.25 / 0.433 ≈ -0.58.",
)
def _grade_state_u(answer):
    u = float(standardize_scores(torch.tensor(STATE_REWARDS, dtype=torch.float64))[0])
    if abs(float(answer) - u) <= 0.01:
        return True, f"u = {u:.3f}; q then multiplies p_old by e^{u:.2f} on the correct candidates."
    return False, "z-score the eight rewards with the population standard deviation."


@exercise(
    "04-dead-state",
    "Sequential reward; the behaviour answer got position 1 wrong. At position 3, what is "
    "TPO's target q for that state's group: 'p_old', 'uniform' or 'correct token'?",
    "Every candidate at a later state scores 0 (the answer is already dead), so the group "
    "has zero variance: u = 0 and q = p_old. The state contributes no gradient on the "
    "snapshot, instead of pushing on tokens whose reward says nothing.",
)
def _grade_dead_state(answer):
    a = as_choice(answer, ("p_old", "uniform", "correct token"))
    if a == "p_old":
        return True, "all candidates score 0, u = 0, so q = p_old: no push either way."
    return False, "what are the candidates' rewards once an earlier token was wrong?"


multiple_choice(
    "04-unanimous",
    "With V = 2 and K = 8, why are token-level groups so often unanimous (all 8 the same token)?",
    {
        "a": (
            "two tokens, and a confident policy samples the same one 8 times",
            "right: then every candidate scores the same, u = 0 and q = p_old.",
        ),
        "b": ("the reward is terminal", "notebook 04 rewards every token (bag-of-tokens)."),
        "c": ("candidate 0 is always the behaviour token", "the other 7 are sampled afresh."),
    },
    "a",
)


multiple_choice(
    "04-sequential-mistake",
    "Under the sequential reward a token scores 1 only if it and every earlier token are right. "
    "Compared with the bag reward, one wrong token at position 2",
    {
        "a": ("lowers the score of that token only", "that is the bag reward."),
        "b": (
            "zeroes the scores of that token and of every later token of the answer",
            "right: "
            "every later token has a wrong token before it, so the later states get no credit "
            "even where they are right.",
        ),
        "c": (
            "zeroes the scores of the earlier tokens",
            "the earlier tokens have no wrong token before them; they keep their credit.",
        ),
    },
    "b",
)
