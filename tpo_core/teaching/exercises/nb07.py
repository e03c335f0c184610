"""Exercises of notebook 07 (the capstone): each graded from the library."""

from __future__ import annotations

from tpo_core.teaching.exercises.engine import (
    multiple_choice,
)

multiple_choice(
    "07-final-error",
    "The paper's final error for a method, at one setting, is",
    {
        "a": (
            "the lowest error any run reached",
            "that picks each run's luckiest moment; a run can relapse after it.",
        ),
        "b": (
            "the last episode's error, averaged over seeds",
            "right: one number per seed, taken at the end of training, then the mean over seeds "
            "(report its interval beside it).",
        ),
        "c": (
            "the best seed's mean error over its last 20 episodes",
            "choosing the best seed selects on the outcome; the mean must be over all seeds.",
        ),
    },
    "b",
)


multiple_choice(
    "07-overlap",
    "TPO's mean final error is below GRPO's, but their 95% bootstrap intervals over seeds "
    "overlap almost entirely. You write",
    {
        "a": ("TPO beats GRPO", "the difference is well inside the uncertainty over seeds."),
        "b": (
            "the means fall in TPO's favour, not separated at this number of seeds",
            "right: "
            "and say how many seeds would separate them (stats.seeds_to_separate), or which other "
            "measure, such as episodes to 5%, does separate them.",
        ),
        "c": (
            "TPO and GRPO perform the same",
            "overlapping intervals do not show equality either; the test lacks the power to tell.",
        ),
    },
    "b",
)
