"""Exercises of notebook 03 (the neural bandit): each graded from the library."""

from __future__ import annotations

import torch

from tpo_core.bandits.mechanism import (
    FAILED_SAMPLE_METHODS,
    expected_updates,
    failed_sample_weight,
    step_shares,
)
from tpo_core.objectives import standardize_scores
from tpo_core.teaching.exercises.engine import (
    as_choice,
    exercise,
    multiple_choice,
)


@exercise(
    "03-wrong-sample-u",
    "K = 10 classes. The model samples class 4 and is told it is wrong. After "
    "standardising the score vector A·e_4 over the classes, what is u for class 4?",
    "A = r - sum pi^2 < 0 sits on class 4 alone; the z-scores of a one-hot vector with a "
    "negative entry are -sqrt(K - 1) = -3 there and +1/sqrt(K - 1) = +1/3 on the other nine "
    "classes, whatever the size of A.",
)
def _grade_wrong_sample_u(answer):
    scores = torch.zeros(10, dtype=torch.float64)
    scores[4] = -0.3
    u4 = float(standardize_scores(scores)[4])
    if abs(float(answer) - u4) <= 0.01:
        return True, f"u = {u4:.3f} on the sampled class and +1/3 on every other class."
    if abs(float(answer) + u4) <= 0.01:
        return False, "right size, wrong sign: the sample failed."
    return False, "z-score a vector that is zero except one negative entry (K = 10)."


CONDITIONING_EXAMPLE = [0.2, 0.6] + [0.025] * 8  # label 0, confusable class 1, eight rare ones


@exercise(
    "03-conditioning",
    "p(label) = 0.2, one confusable wrong class holds 0.6 and eight rare ones 0.025 each. "
    "Which of 'pg', 'dg', 'grpo' and 'tpo' give a failed sample a larger weight when the "
    "sampled wrong class is the confusable one than when it is a rare one? Answer a list "
    "of names.",
    "['dg', 'tpo']. Every one of them moves a failed sample a along -(e_a - pi). PG's weight "
    "is the baseline b = sum pi^2 and GRPO's the batch's mean over std of the reward, the "
    "same whichever wrong class was sampled. DG's gate sigmoid(-b surprisal) is larger for a "
    "likely class, and TPO's target takes mass off a in proportion to how much it had: both "
    "condition on the sampled wrong class, TPO far more strongly (its two weights are about "
    "56 times apart here, DG's about 2.5 times).",
)
def _grade_conditioning(answer):
    names = [answer] if isinstance(answer, str) else list(answer)
    chosen = {as_choice(n, FAILED_SAMPLE_METHODS) for n in names}
    logits = torch.tensor([CONDITIONING_EXAMPLE], dtype=torch.float64).log()
    ratio = {}
    for m in FAILED_SAMPLE_METHODS:
        w = failed_sample_weight(m, logits, torch.tensor([0]))[0]
        ratio[m] = float(w[1] / w[2])
    truth = {m for m, r in ratio.items() if r > 1 + 1e-6}
    listing = ", ".join(f"{m} {r:.2f}" for m, r in ratio.items())
    why = f"weight on the confusable class over a rare one: {listing}."
    return chosen == truth, why if chosen == truth else why + " Which ratios differ from 1?"


SHARE_PAIR = ([0.5] + [0.5 / 9] * 9, [0.5, 0.45] + [0.05 / 8] * 8)  # spread, concentrated


@exercise(
    "03-concentration",
    "Two examples with the same p(label) = 0.5. In one the wrong mass is spread over nine "
    "classes; in the other 0.45 of it sits on one confusable class. One normalised step is "
    "shared between them. Which method gives the concentrated example the larger share of "
    "it: 'pg' or 'tpo'?",
    "'tpo'. PG's expected update p_y (e_y - pi) is only a little longer on the concentrated "
    "example. A failed TPO sample takes mass off the sampled class in proportion to how much "
    "it had, so the likely confusable class is pushed down hard and TPO's expected update on "
    "that example is more than twice as long: it gets most of the step.",
)
def _grade_concentration(answer):
    a = as_choice(answer, ("pg", "tpo"))
    logits = torch.tensor(SHARE_PAIR, dtype=torch.float64).log()
    labels = torch.tensor([0, 0])
    share = {m: float(step_shares(expected_updates(m, logits, labels))[1]) for m in ("pg", "tpo")}
    truth = max(share, key=share.get)
    why = f"the concentrated example's share: PG {share['pg']:.0%}, TPO {share['tpo']:.0%}"
    return a == truth, why + ("." if a == truth else "; which method hits the likely class?")


multiple_choice(
    "03-failed-sample",
    "In the neural bandit a sampled class earns 0. What does that failure tell TPO's target?",
    {
        "a": (
            "nothing: only successes carry signal",
            "that holds for REINFORCE without a baseline (A = r = 0); with the baseline "
            "sum pi^2 a failure's advantage is negative, and TPO's group compares the failed "
            "class with the other classes.",
        ),
        "b": (
            "move mass off that class, to the others in proportion to their p_old",
            "right: the failure scores below the group's mean, so q lowers it and renormalises.",
        ),
        "c": (
            "raise the correct class directly",
            "TPO never sees the correct class unless it was sampled.",
        ),
    },
    "b",
)


multiple_choice(
    "03-shared-weights",
    "Unlike notebook 02's table of logits, the classifier shares its weights across inputs. A "
    "TPO step on one input's group",
    {
        "a": (
            "changes that input's probabilities only",
            "that holds for a table, where each context owns its logits.",
        ),
        "b": (
            "also moves the probabilities of other inputs, most of all similar ones",
            "right: "
            "the step changes shared weights, which moves inputs of the same class along with "
            "it, and can move a confusable class's inputs the wrong way.",
        ),
        "c": (
            "cannot affect other inputs, because the loss involves only this one",
            "the loss does, but its gradient flows into weights that every input uses.",
        ),
    },
    "b",
)
