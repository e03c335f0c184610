"""The grading engine: a registry of exercises, ``check``, and helpers for graders.

A student calls ``check("01-predict-q", [0.8, 0.1, 0.1])`` and gets a short
verdict that says right or wrong and why; the cell shows it. Graders compute
the right answer from the library, never from stored numbers. A question whose
answer is a function ("implement it") is graded by calling the function on
random inputs and comparing it with the library, values and gradients; when it
differs, the grader tries the usual mistakes to name the one that was made.
Multiple-choice options each carry their own explanation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape

import torch


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
    kind: str = "short answer"  # one of KINDS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"exercise {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}"
            )


KINDS = ("multiple choice", "short answer", "implement it")


EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, question: str, solution: str, kind: str = "short answer"):
    """Register ``grade(answer) -> (correct, why)`` as the checker of exercise ``name``."""

    def register(grade):
        EXERCISES[name] = Exercise(name, question, grade, solution, kind)
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
    except (TypeError, ValueError, RuntimeError, IndexError) as err:
        correct, why = False, f"could not read the answer ({err})"
    return Feedback(name, bool(correct), why)


def question(name: str) -> str:
    return _lookup(name).question


def solution(name: str) -> str:
    """The worked solution, for instructors."""
    return _lookup(name).solution


def as_vector(answer, k: int) -> torch.Tensor:
    x = torch.as_tensor(answer, dtype=torch.float64).flatten()
    if x.numel() != k:
        raise ValueError(f"expected {k} numbers, got {x.numel()}")
    return x


def as_choice(answer, options: tuple[str, ...]) -> str:
    a = str(answer).strip().lower()
    if a not in options:
        raise ValueError(f"answer one of {', '.join(repr(o) for o in options)}")
    return a


def sample_groups(seed: int, groups: int = 5, k: int = 6):
    g = torch.Generator().manual_seed(seed)
    old = torch.log_softmax(torch.randn(groups, k, generator=g, dtype=torch.float64), -1)
    scores = torch.randint(0, 4, (groups, k), generator=g).to(torch.float64)
    scores[0] = 1.0  # one zero-variance group, always
    return old, scores


def call_answer(fn, *args) -> torch.Tensor:
    if not callable(fn):
        raise TypeError("pass your function itself (its name, without calling it)")
    out = fn(*args)
    if out is None:
        raise ValueError("your function returned None: finish it with a return statement")
    return torch.as_tensor(out, dtype=torch.float64)


def close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return got.shape == want.shape and torch.allclose(got, want, atol=1e-6, rtol=1e-5)


def diagnose(got: torch.Tensor, mistakes: list[tuple[str, torch.Tensor]], default: str) -> str:
    """The first mistake ``(why, its result)`` whose result ``got`` reproduces, else ``default``."""
    return next((why for why, value in mistakes if close(got, value)), default)


def plain_zscores(scores: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """A deliberately plain z-score, for naming mistakes (population std unless ``unbiased``)."""
    centred = scores - scores.mean(-1, keepdim=True)
    std = scores.std(-1, unbiased=unbiased, keepdim=True)
    return torch.where(std > 1e-6, centred / std.clamp_min(1e-6), torch.zeros_like(centred))


def loss_and_grad(fn, logits, *rest):
    x = logits.clone().requires_grad_()
    loss = call_answer(fn, x, *rest)
    if loss.dim() != 0:
        raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise ValueError("the loss carries no gradient: do not detach the new log-probs")
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def multiple_choice(name: str, question: str, options: dict[str, tuple[str, str]], right: str):
    """Register a question whose options map a letter to ``(option text, why)``."""
    lines = [question] + [f"  ({key}) {text}" for key, (text, _) in options.items()]
    keys = tuple(options)

    def grade(answer):
        key = as_choice(answer, keys)
        return key == right, options[key][1]

    EXERCISES[name] = Exercise(
        name,
        "\n".join(lines) + f"\nAnswer {', '.join(repr(k) for k in keys)}.",
        grade,
        f"({right}) {options[right][0]}: {options[right][1].removeprefix('right: ')}",
        "multiple choice",
    )
