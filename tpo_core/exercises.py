"""Exercises with automatic checks, one helper for every notebook.

A student calls ``check("01-predict-q", [0.8, 0.1, 0.1])`` and gets a short
verdict that says right or wrong and why; the cell shows it. Checkers compute
the right answer from the library, never from stored numbers. Instructors
read worked solutions with ``solution(name)``; nothing prints them by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape

import torch

from tpo_core.group import descend_group, group_view, random_group


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer; shows itself as a coloured line in a notebook."""

    exercise: str
    correct: bool
    message: str

    def __repr__(self) -> str:
        mark = "✅ correct" if self.correct else "❌ not yet"
        return f"[{self.exercise}] {mark}: {self.message}"

    def _repr_html_(self) -> str:
        color = "#1b7f3b" if self.correct else "#b3261e"
        mark = "✅ Correct" if self.correct else "❌ Not yet"
        return (
            f'<div style="border-left:4px solid {color};padding:4px 10px">'
            f"<b>{mark}</b> <code>{escape(self.exercise)}</code>: {escape(self.message)}</div>"
        )


@dataclass(frozen=True)
class Exercise:
    name: str
    question: str
    grade: Callable[[object], tuple[bool, str]]
    solution: str


EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, question: str, solution: str):
    """Register ``grade(answer) -> (correct, why)`` as the checker of exercise ``name``."""

    def register(grade):
        EXERCISES[name] = Exercise(name, question, grade, solution)
        return grade

    return register


def _lookup(name: str) -> Exercise:
    if name not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"no exercise named {name!r}; known exercises: {known}")
    return EXERCISES[name]


def check(name: str, answer) -> Feedback:
    """Grade ``answer`` to exercise ``name``; a malformed answer is graded wrong, with why."""
    ex = _lookup(name)
    if answer is None:
        return Feedback(name, False, "replace None with your answer, then run the cell again.")
    try:
        correct, why = ex.grade(answer)
    except (TypeError, ValueError) as err:
        correct, why = False, f"could not read the answer ({err})"
    return Feedback(name, bool(correct), why)


def question(name: str) -> str:
    return _lookup(name).question


def solution(name: str) -> str:
    """The worked solution, for instructors."""
    return _lookup(name).solution


def _vector(answer, k: int) -> torch.Tensor:
    x = torch.as_tensor(answer, dtype=torch.float64).flatten()
    if x.numel() != k:
        raise ValueError(f"expected {k} numbers, got {x.numel()}")
    return x


def _choice(answer, options: tuple[str, ...]) -> str:
    a = str(answer).strip().lower()
    if a not in options:
        raise ValueError(f"answer one of {', '.join(repr(o) for o in options)}")
    return a


# ---------------------------------------------------------------- notebook 01

PREDICT_Q = dict(p_old=[0.5, 0.25, 0.25], scores=[2.0, 1.0, 0.0], eta=1.0)


@exercise(
    "01-predict-q",
    "p_old = (0.5, 0.25, 0.25), scores = (2, 1, 0), eta = 1. Compute q by hand "
    "(two decimals are enough) and pass it as a list of three numbers.",
    "z-scores of (2, 1, 0): mean 1, population std sqrt(2/3), so u = (1.22, 0, -1.22). "
    "q ∝ p_old·exp(u) = (0.5·3.40, 0.25·1, 0.25·0.29) = (1.70, 0.25, 0.07); "
    "normalised q ≈ (0.84, 0.12, 0.04).",
)
def _grade_predict_q(answer):
    q = group_view(PREDICT_Q["p_old"], PREDICT_Q["scores"], PREDICT_Q["eta"]).q
    a = _vector(answer, 3)
    if (a - q).abs().max() <= 0.015:
        return True, f"q = ({', '.join(f'{v:.3f}' for v in q)}): the old policy, tilted by exp(u)."
    raw = group_view(PREDICT_Q["p_old"], PREDICT_Q["scores"], standardize=False).q
    if (a - raw).abs().max() <= 0.015:
        return False, "that tilts by the raw scores; standardise them first (population std)."
    no_anchor = torch.softmax(group_view(PREDICT_Q["p_old"], PREDICT_Q["scores"]).u, -1)
    if (a - no_anchor).abs().max() <= 0.015:
        return False, "that is softmax(u) alone; multiply by p_old before normalising."
    if abs(float(a.sum()) - 1) > 0.02:
        return False, f"your numbers sum to {float(a.sum()):.3f}; q is a distribution."
    return False, "compute u = z-scores of the scores, then q_i ∝ p_old_i · exp(u_i)."


HALF_MASS = dict(p_old=[0.25, 0.25, 0.25, 0.25], scores=[3.0, 1.0, 0.0, 0.0])


@exercise(
    "01-half-mass-eta",
    "p_old uniform over 4 candidates, scores (3, 1, 0, 0). Find eta that puts half "
    "of the target's mass on the best candidate (within ±0.01 of 0.5).",
    "u = (1.633, 0, -0.816, -0.816); with uniform p_old, q_best = e^(1.633/eta) / "
    "(e^(1.633/eta) + 1 + 2 e^(-0.816/eta)). Setting it to 1/2 and bisecting on eta "
    "gives eta ≈ 1.95.",
)
def _grade_half_mass(answer):
    eta = float(answer)
    if not eta > 0:
        return False, "eta must be positive."
    q_best = float(group_view(HALF_MASS["p_old"], HALF_MASS["scores"], eta).q[0])
    if abs(q_best - 0.5) <= 0.01:
        return True, f"at eta = {eta:.3g} the best candidate gets {q_best:.3f}."
    direction = "raise" if q_best > 0.5 else "lower"
    return False, f"at eta = {eta:.3g} the best candidate gets {q_best:.3f}; {direction} eta."


OVERSHOOT = dict(k=5, seed=0, lr=1.0, epochs=50)


@exercise(
    "01-pg-overshoot",
    "On the OvershootExplorer's default group (k=5, seed=0), run 50 epochs at lr = 1. "
    "Predict before you look: does PG end 'above' or 'below' the target's p(best)?",
    "PG's gradient is -A/K at every step, so the best candidate's logit grows linearly "
    "forever: after 50 epochs it has passed the target and collapsed onto the best "
    "candidate, 'above'. TPO's gradient p - q vanishes at the target.",
)
def _grade_pg_overshoot(answer):
    a = _choice(answer, ("above", "below"))
    p_old, scores = random_group(OVERSHOOT["k"], OVERSHOOT["seed"])
    traj = descend_group(p_old, scores, "pg", OVERSHOOT["lr"], OVERSHOOT["epochs"])
    view = group_view(p_old, scores)
    best = int(view.u.argmax())
    end, target = float(traj.probs[-1, best]), float(view.q[best])
    truth = "above" if end > target else "below"
    why = f"PG ends at p(best) = {end:.3f}, the target is {target:.3f}"
    if a == truth:
        return True, why + ": its gradient -A/K never shrinks, so it keeps going."
    return False, why + ". What happens to PG's gradient as p(best) grows?"


@exercise(
    "01-tiny-variance",
    "Scores (0.001, 0, 0, 0). What is the first candidate's standardised score u_1?",
    "The mean is 0.00025 and the population std 0.000433, so u_1 = 0.00075 / 0.000433 "
    "= sqrt(3) ≈ 1.732, exactly what (1, 0, 0, 0) gives: z-scores ignore scale, so a "
    "negligible difference becomes a full-strength preference (SPEC's difficulty bias).",
)
def _grade_tiny_variance(answer):
    u1 = float(group_view([0.25] * 4, [0.001, 0.0, 0.0, 0.0]).u[0])
    if abs(float(answer) - u1) <= 0.01:
        return True, f"u_1 = {u1:.3f}, the same as for scores (1, 0, 0, 0): scale is gone."
    return False, "z-scores divide by the spread, however small it is; try it for (1, 0, 0, 0)."
