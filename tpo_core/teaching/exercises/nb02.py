"""Exercises of notebook 02 (tabular bandits): each graded from the library."""

from __future__ import annotations

import math

import torch

from tpo_core.bandits.tabular import beta_coefficient, step_budget
from tpo_core.teaching.exercises.engine import (
    as_choice,
    call_answer,
    close,
    diagnose,
    exercise,
    multiple_choice,
)


@exercise(
    "02-beta-tpo",
    "K = 10 actions, one correct, p = pi(correct) = 0.1. What is TPO's exact-update "
    "weight beta(p)? (Two decimals.)",
    "The one-hot score vector standardises to u = 3 on the correct action and -1/3 "
    "elsewhere, so lambda = exp(3 + 1/3) = exp(10/3) ≈ 28.0. Then "
    "beta = p (lambda - 1) / (1 - p + lambda p) = 0.1 · 27.0 / (0.9 + 2.80) ≈ 0.73.",
)
def _grade_beta_tpo(answer):
    beta = float(beta_coefficient("tpo", 0.1, 10))
    if abs(float(answer) - beta) <= 0.01:
        return True, f"beta = {beta:.3f}: TPO still gives this hard context a large weight."
    grpo, dg = float(beta_coefficient("grpo", 0.1, 10)), float(beta_coefficient("dg", 0.1, 10))
    if abs(float(answer) - grpo) <= 0.01 or abs(float(answer) - dg) <= 0.01:
        return False, "that is another method's beta; use lambda = exp(K / sqrt(K - 1))."
    return False, "lambda = exp(K / sqrt(K - 1)); beta = p (lambda - 1) / (1 - p + lambda p)."


HARD_SHARE = dict(p=[0.05, 0.5, 0.95], k=10)


@exercise(
    "02-hard-share",
    "Three contexts with p = 0.05 (hard), 0.5 and 0.95 (easy), K = 10. Of the RL updates "
    "'pg', 'dg', 'grpo' and 'tpo', which gives the hard context the largest share of a "
    "normalised step? (Set the explorer's sliders to these values.)",
    "Shares of ||g||² for the hard context: PG 3.4%, DG 6.7%, GRPO 13.8%, TPO 57.6% "
    "(CE 78.1%). PG's and DG's beta vanish like p as p -> 0 and GRPO's like sqrt(p), TPO's "
    "like (lambda - 1) p with lambda ≈ 28, so TPO keeps paying attention to contexts it has "
    "not solved yet.",
)
def _grade_hard_share(answer):
    methods = ("pg", "dg", "grpo", "tpo")
    a = as_choice(answer, methods)
    shares = {m: float(step_budget(m, HARD_SHARE["p"], HARD_SHARE["k"])[0]) for m in methods}
    best = max(shares, key=shares.get)
    listing = ", ".join(f"{m} {v:.1%}" for m, v in shares.items())
    if a == best:
        return True, f"hard-context shares: {listing}."
    return False, f"{a} gives it {shares[a]:.1%}; look at beta(p) as p -> 0 in the explorer."


@exercise(
    "02-my-beta-tpo",
    "Write my_beta_tpo(p, k): the weight beta(p) of TPO's exact update beta(p) (e_y - pi) on a "
    "one-hot reward with K actions (notebook 02's derivation; p is a tensor).",
    "def my_beta_tpo(p, k):\n"
    "    lam = math.exp(k / math.sqrt(k - 1))\n"
    "    return p * (lam - 1) / (1 - p + lam * p)",
    kind="implement it",
)
def _grade_my_beta_tpo(fn):
    p = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)
    for k in (3, 10, 37):
        got = call_answer(fn, p, k)
        want = beta_coefficient("tpo", p, k)
        if close(got, want):
            continue
        lam = math.exp(k / math.sqrt(k - 1))
        naive = math.exp(math.sqrt(k - 1))  # the success's z-score alone, without 1/sqrt(K-1)
        mistakes = [
            ("that is GRPO's beta, sqrt(p / (1 - p))", beta_coefficient("grpo", p, k)),
            ("that is PG's beta, p", p),
            (
                "the tilt of the success is lambda = exp(sqrt(K-1) + 1/sqrt(K-1)) "
                "= exp(K/sqrt(K-1)), not exp(sqrt(K-1))",
                p * (naive - 1) / (1 - p + naive * p),
            ),
            ("you forgot to normalise q: divide by Z = 1 - p + lambda p", p * (lam - 1)),
        ]
        return False, diagnose(got, mistakes, f"beta differs from the library's at K = {k}")
    return True, "equal to beta_coefficient('tpo', p, K) for K = 3, 10 and 37."


multiple_choice(
    "02-pg-baseline",
    "Changing PG's constant baseline b changes its expected (exact) update by",
    {
        "a": (
            "nothing",
            "right: sum_a pi_a b (e_a - pi) = b (pi - pi) = 0; a baseline only "
            "changes the variance of the sampled update.",
        ),
        "b": (
            "b (e_y - pi)",
            "the baseline multiplies every action's score term, and those sum to zero under pi.",
        ),
        "c": ("a factor (1 - b)", "the expectation over actions cancels b entirely."),
    },
    "a",
)


multiple_choice(
    "02-what-differs",
    "In section 2 every method's exact update on context c points along e_y - pi_c, scaled by "
    "beta(p_c), and the whole step is normalised. What then tells the methods apart?",
    {
        "a": ("the direction within each context", "all of them share e_y - pi_c there."),
        "b": (
            "how the step is shared among the contexts, through beta(p)",
            "right: with the "
            "direction per context fixed and the total length normalised, beta(p) decides which "
            "contexts get the step.",
        ),
        "c": ("the total length of the step", "every step is normalised to the same length."),
    },
    "b",
)
