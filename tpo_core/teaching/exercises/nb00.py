"""Exercises of notebook 00 (quick start): each graded from the library."""

from __future__ import annotations

from tpo_core.teaching.exercises.engine import (
    multiple_choice,
)

multiple_choice(
    "00-gradient-sign",
    "TPO's gradient on candidate i's logit is p_i - q_i. Where q_i > p_i, a gradient-descent step",
    {
        "a": (
            "raises logit i",
            "right: the gradient is negative there, so descent raises the "
            "logit, moving p_i towards q_i.",
        ),
        "b": ("lowers logit i", "descent moves against the gradient; p_i - q_i < 0 here."),
        "c": ("leaves logit i alone", "only p_i = q_i gives a zero gradient."),
    },
    "a",
)


multiple_choice(
    "00-large-eta",
    "You raise TPO's temperature eta towards infinity, scores unchanged. The target q tends to",
    {
        "a": (
            "p_old",
            "right: q is proportional to p_old e^(u / eta), and u / eta goes to 0, so the tilt "
            "vanishes and the update asks for no change.",
        ),
        "b": ("all mass on the best-scored candidate", "that is the limit eta -> 0."),
        "c": (
            "the uniform distribution",
            "the tilt fades, so q returns to p_old, which is uniform only if p_old is.",
        ),
    },
    "a",
)


multiple_choice(
    "00-gradient-sum",
    "Summed over the group's K candidates, TPO's gradient p - q is",
    {
        "a": (
            "0",
            "right: p and q are both distributions, so each sums to 1; the step moves mass "
            "between candidates (adding a constant to every logit would change nothing).",
        ),
        "b": ("1", "that is the sum of p (or of q) alone."),
        "c": (
            "KL(q || p_old)",
            "the KL measures how far the target moved; the gradient's entries sum to 0 however "
            "far that is.",
        ),
    },
    "a",
)
