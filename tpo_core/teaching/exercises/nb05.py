"""Exercises of notebook 05 (sparse reward): each graded from the library."""

from __future__ import annotations

import math

import torch

from tpo_core.objectives import tpo_target
from tpo_core.teaching.exercises.engine import (
    call_answer,
    close,
    diagnose,
    exercise,
    multiple_choice,
    sample_groups,
)


@exercise(
    "05-one-success-mass",
    "K = 8 answers, p_old uniform over them (1/8 each), exactly one is right (exact match). "
    "What mass does TPO's target q put on the right answer, at eta = 1?",
    "u = sqrt(7) ≈ 2.65 for the success and -1/sqrt(7) ≈ -0.38 for each failure, so "
    "q = e^2.65 / (e^2.65 + 7 e^-0.38) ≈ 14.1 / (14.1 + 4.8) ≈ 0.746: three quarters of the "
    "group's mass, from an eighth. A finite, fitted target: no step can overshoot it.",
)
def _grade_one_success_mass(answer):
    scores = torch.tensor([1.0] + [0.0] * 7, dtype=torch.float64)
    q = float(tpo_target(torch.full((8,), -math.log(8), dtype=torch.float64), scores)[0])
    if abs(float(answer) - q) <= 0.01:
        return True, f"q = {q:.3f}: from 1/8 to about 3/4 in one target."
    return False, "u = z-score of (1, 0, ..., 0); then q ∝ p_old · e^u, normalised over the 8."


@exercise(
    "05-masked-step",
    "GRPO's loss averages over the B = 100 groups of an episode; 90 of them are all-fail. "
    "Masking the flat groups out of the average multiplies each informative group's weight in "
    "the loss, and so its gradient, by what factor?",
    "The average runs over 10 groups instead of 100, so each informative group's gradient "
    "grows tenfold, most when successes are rarest: early, and on the hardest prompts. With "
    "plain SGD the step would grow tenfold too; Adam and Muon normalise their steps, so what "
    "changes is the balance inside the loss: the informative groups now outweigh everything "
    "else, the flat groups' KL pull included. The paper measures the effect (its §4.2, at "
    "K = 32 and H = 8): masking takes GRPO from 6.3% to 29.7% final error, and leaves TPO "
    "at 0.05%. On the snapshot "
    "TPO's flat groups give exactly zero gradient (q = p_old), so masking only rescales TPO's "
    "first epoch; in later epochs they pull back towards p_old through shared weights, so even "
    "for TPO masking is not quite a no-op.",
)
def _grade_masked_step(answer):
    if abs(float(answer) - 10) <= 0.01:
        return True, "100 / 10 = 10: a tenfold larger gradient on the few groups with a success."
    return False, "the loss is a mean over groups: over how many groups after masking?"


@exercise(
    "05-my-grpo-advantages",
    "Write my_grpo_advantages(rewards) for a batch of groups (B, K): GRPO's advantages "
    "(r - mean) / (std + 1e-8) within each group, with the population std.",
    "def my_grpo_advantages(rewards):\n"
    "    centred = rewards - rewards.mean(-1, keepdim=True)\n"
    "    return centred / (rewards.std(-1, unbiased=False, keepdim=True) + 1e-8)",
    kind="implement it",
)
def _grade_my_grpo_advantages(fn):
    from tpo_core.objectives import grpo_advantages

    _, rewards = sample_groups(5)
    got = call_answer(fn, rewards)
    want = grpo_advantages(rewards)
    if close(got, want):
        return True, "equal to grpo_advantages, the zero-variance group included (all zeros)."
    centred = rewards - rewards.mean(-1, keepdim=True)
    mistakes = [
        (
            "you used the sample (Bessel-corrected) std; use the population std",
            centred / (rewards.std(-1, keepdim=True) + 1e-8),
        ),
        ("you did not subtract the group mean", rewards / (rewards.std(-1, False, True) + 1e-8)),
        ("you centred but did not divide by the std", centred),
        (
            "you z-scored over the whole batch; GRPO z-scores within each group",
            (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-8),
        ),
    ]
    if torch.isnan(got).any():
        return False, "NaN: a group of equal rewards has std 0; GRPO adds 1e-8 to it"
    return False, diagnose(got, mistakes, "the advantages differ from grpo_advantages")


multiple_choice(
    "05-ratio-box",
    "Whole-answer GRPO clips the ratio pi(y|x) / pi_old(y|x) to [0.8, 1.2]. Within one batch, a "
    "right answer's ratio passes 1.2. From then on, the clipped surrogate",
    {
        "a": (
            "holds the ratio at 1.2",
            "the clip caps nothing: it zeroes the surrogate's gradient. The step that crossed "
            "1.2, shared weights and the optimisers' momentum can carry the ratio further "
            "(notebook 01's clipped descent ends above 1.2).",
        ),
        "b": (
            "stops pushing that answer up",
            "right: past 1.2 in its advantage's direction the answer's surrogate term is "
            "constant, so its gradient is zero; nothing pushes it further, and only the KL "
            "term pulls it back.",
        ),
        "c": (
            "pushes it back to 1.2",
            "the clipped term is flat past the box: it has no gradient back. Only the KL term "
            "pulls towards the snapshot.",
        ),
    },
    "b",
)


multiple_choice(
    "05-stuck-group",
    "On a stuck prompt all 8 answers are wrong, each a different wrong answer. TPO's target for "
    "that group is",
    {
        "a": (
            "q = p_old: no push",
            "right: equal scores give u = 0. Neither TPO nor GRPO can "
            "learn from a group that holds no success.",
        ),
        "b": (
            "the wrong answer pushed down",
            "the scores are all equal: nothing ranks it below anything.",
        ),
        "c": (
            "uniform over the answers",
            "TPO never forgets p_old; with u = 0 it returns it (uniform only if the 8 "
            "answers were one and the same).",
        ),
    },
    "a",
)
