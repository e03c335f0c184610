"""Exercises of notebook 03 (the neural bandit): each graded from the library."""

from __future__ import annotations

import torch

from tpo_core.bandits.neural import tpo_gain_over_one_vs_rest
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


@exercise(
    "03-concentration",
    "Two examples with the same p(label) = 0.5. In one the wrong mass is spread over nine "
    "classes; in the other most of it sits on one confusable class. For which is TPO's "
    "extra gain over the one-vs-rest update larger: 'spread' or 'concentrated'?",
    "A failed sample of class a lowers a alone, with a weight that grows with pi_a; the "
    "expectation over a therefore hits the dominant wrong class hardest. When one class "
    "holds most of the wrong mass, that is exactly where p(label) gains: 'concentrated'.",
)
def _grade_concentration(answer):
    a = as_choice(answer, ("spread", "concentrated"))
    spread = torch.tensor([0.5] + [0.5 / 9] * 9, dtype=torch.float64)
    concentrated = torch.tensor([0.5, 0.45] + [0.05 / 8] * 8, dtype=torch.float64)
    _, extra = tpo_gain_over_one_vs_rest(
        torch.stack([spread, concentrated]).log(), torch.tensor([0, 0])
    )
    truth = "concentrated" if extra[1] > extra[0] else "spread"
    why = f"extra gain: spread {extra[0]:.4f}, concentrated {extra[1]:.4f}"
    return (a == truth), why + (
        "." if a == truth else "; which class does a failed sample push down?"
    )


multiple_choice(
    "03-failed-sample",
    "In the neural bandit a sampled class earns 0. What does that failure tell TPO's target?",
    {
        "a": (
            "nothing: only successes carry signal",
            "that is single-sample PG with a zero "
            "reward; TPO's group compares the failure with the other candidates.",
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
