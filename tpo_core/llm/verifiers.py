"""Verifiable tasks for LLM RLVR: problems with a checkable answer, and their rewards.

A :class:`Problem` is a prompt and what a right answer must match. A task
draws problems (:func:`make_problems`) and scores a completion with 1 or 0
(:func:`reward`). Everything here works offline:

* ``sums``: single-digit sums ``a + b`` (a task a tiny model can learn on a CPU);
* ``arithmetic``: two-digit ``+``, ``-`` and ``*`` problems;
* ``gsm8k``: grade-school word problems, loaded through ``datasets`` from the
  hub when it can be reached, or from a local JSON-lines file in its format
  (``question``, and ``answer`` ending in ``#### <number>``);
* ``graph_color`` and ``knights_knaves``: Reasoning Gym tasks (as in the
  paper), generated locally by the ``reasoning-gym`` package when it is
  installed and scored by its own checker.

Numeric answers are read with :func:`extract_answer`: the last ``\\boxed{}``
that holds a number, else the number after the last ``####``, else the last
number in the text, compared by exact value.
"""

from __future__ import annotations

import itertools
import random
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction

# a number: digits with optional thousands commas, or a leading-dot decimal; optional exponent
NUMBER = re.compile(r"-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")
FRACTION = re.compile(r"(-?)\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")  # \frac{a}{b}, \dfrac, \tfrac
MAX_EXPONENT = 1000  # numbers beyond 10^(+-1000) are not read (their exact value is huge)
REASONING_GYM_TASKS = ("graph_color", "knights_knaves")
LLM_TASKS = ("sums", "arithmetic", "gsm8k", *REASONING_GYM_TASKS)


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str | None  # None where the checker decides (several right answers)
    task: str
    entry: dict = field(default_factory=dict, compare=False, repr=False)  # Reasoning Gym's record


def _value(number: str) -> Fraction | None:
    """The exact value of a number as written (``1,234``, ``.5``, ``1e3``, Unicode digits)."""
    try:
        value = Decimal(number.replace(",", ""))
    except InvalidOperation:
        return None
    if not value.is_finite() or abs(value.adjusted()) > MAX_EXPONENT:
        return None
    return Fraction(value)


def _canonical(value: Fraction) -> str:
    """One spelling per value: ``42``, ``-0.5``, ``1/3`` (a decimal only where it terminates)."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for prime in (2, 5):
        while den % prime == 0:
            den //= prime
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    with localcontext() as context:
        context.prec = 2 * MAX_EXPONENT + 10  # enough for any terminating value read here
        decimal = Decimal(value.numerator) / Decimal(value.denominator)
    return f"{decimal.normalize():f}"


def _read_number(fragment: str) -> str | None:
    """The first number of ``fragment``, or its ``\\frac{a}{b}`` if that comes first, canonical."""
    fragment = fragment.replace("$", "")
    number, fraction = NUMBER.search(fragment), FRACTION.search(fragment)
    if fraction is not None and (number is None or fraction.start() <= number.start()):
        top, bottom = _read_number(fraction[2]), _read_number(fraction[3])
        if top is None or bottom is None or Fraction(bottom) == 0:
            return None
        value = Fraction(top) / Fraction(bottom)
        return _canonical(-value if fraction[1] else value)
    value = None if number is None else _value(number.group())
    return None if value is None else _canonical(value)


def _normalise_number(text: str) -> str | None:
    """The first number of ``text`` in canonical form (``"42.0"`` and ``"4.2e1"`` give ``"42"``)."""
    return _read_number(unicodedata.normalize("NFKC", text))


def boxed_contents(text: str) -> list[str]:
    """What every ``\\boxed{...}`` holds, nested braces included, in one pass over the text."""
    closing, opened = {}, []
    for brace in re.finditer(r"[{}]", text):
        if brace.group() == "{":
            opened.append(brace.start())
        elif opened:
            closing[opened.pop()] = brace.start()
    starts = (m.end() - 1 for m in re.finditer(r"\\boxed\{", text))
    return [text[i + 1 : closing[i]] for i in starts if i in closing]


def extract_answer(text: str) -> str | None:
    """A completion's final number: the last non-empty ``\\boxed{}``, then ``#### x``, then the
    last number; in canonical form (exact values: ``1e3`` is 1000, ``\\frac{1}{2}`` 0.5).
    None where the one that decides holds no number."""
    text = unicodedata.normalize("NFKC", text)  # full-width digits and signs as ASCII
    boxed = [content for content in boxed_contents(text) if content.strip()]
    if boxed:
        return _read_number(boxed[-1])
    if "####" in text:
        return _read_number(text.rsplit("####", 1)[1])
    numbers = NUMBER.findall(text)
    return _read_number(numbers[-1]) if numbers else None


def extract_tagged(text: str) -> str:
    """The text between the last ``</answer>`` and the ``<answer>`` before it, else the whole
    completion; stripped. Two searches from the end: linear in the text's length."""
    end = text.rfind("</answer>")
    start = -1 if end < 0 else text.rfind("<answer>", 0, end)
    return (text[start + len("<answer>") : end] if start >= 0 else text).strip()


def reward(completion: str, problem: Problem) -> float:
    """1.0 if ``completion`` answers ``problem`` correctly, else 0.0."""
    if problem.task in REASONING_GYM_TASKS:
        score = _reasoning_gym().get_score_answer_fn(problem.task)
        return float(score(answer=extract_tagged(completion), entry=problem.entry) >= 1.0)
    if problem.answer is None:
        raise ValueError(
            f"this {problem.task} problem has no answer to compare with; only Reasoning Gym "
            "tasks leave the answer to their own checker"
        )
    answer = _normalise_number(problem.answer)
    if answer is None:
        raise ValueError(f"the problem's answer {problem.answer!r} is not a number")
    return float(extract_answer(completion) == answer)


# ---------------------------------------------------------------- generators


SUM_PAIRS = [(a, b) for a in range(10) for b in range(10) if a + b < 10]


def sum_problem(rng: random.Random) -> Problem:
    """``a+b=`` with single-digit ``a``, ``b`` and sum: 55 problems in all."""
    a, b = rng.choice(SUM_PAIRS)
    return Problem(f"{a}+{b}=", str(a + b), "sums")


def arithmetic_problem(rng: random.Random) -> Problem:
    """A two-digit ``+``, ``-`` or ``*`` problem, answer after ``####``."""
    a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-*")
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return Problem(
        f"What is {a} {op} {b}? Give the final answer after ####.", str(value), "arithmetic"
    )


def gsm8k_answer(solution: str) -> str:
    """The number after ``####`` in a GSM8K solution."""
    if "####" not in solution:
        raise ValueError("a GSM8K answer ends in '#### <number>'; this one has no '####'")
    return _normalise_number(solution.rsplit("####", 1)[1])


def load_gsm8k(split: str = "train", path: str | None = None) -> list[Problem]:
    """GSM8K through ``datasets``: from the hub (``openai/gsm8k``), or from a local JSON-lines file.

    The prompt asks for the final answer after ``####``, as the data's own solutions do.
    """
    import datasets  # optional dependency: the "llm" extra

    if path is None:
        data = datasets.load_dataset("openai/gsm8k", "main", split=split)
    else:
        data = datasets.load_dataset("json", data_files={split: str(path)}, split=split)
    missing = {"question", "answer"} - set(data.column_names)
    if missing:
        raise ValueError(f"GSM8K data needs columns question and answer; missing {sorted(missing)}")
    return [
        Problem(
            f"{row['question']}\nGive the final answer after ####.",
            gsm8k_answer(row["answer"]),
            "gsm8k",
        )
        for row in data
    ]


def _reasoning_gym():
    try:
        import reasoning_gym
    except ImportError as err:
        raise ImportError(
            "the graph_color and knights_knaves tasks need the reasoning-gym package: "
            "pip install reasoning-gym"
        ) from err
    return reasoning_gym


def reasoning_gym_problems(task: str, n: int, seed: int) -> list[Problem]:
    """``n`` Reasoning Gym problems, generated locally; answers go in ``<answer>`` tags."""
    if task not in REASONING_GYM_TASKS:
        raise ValueError(f"unknown Reasoning Gym task {task!r}; choose {REASONING_GYM_TASKS}")
    dataset = _reasoning_gym().create_dataset(task, size=n, seed=seed)
    suffix = "\nPut your final answer inside <answer></answer> tags."
    return [Problem(e["question"] + suffix, e["answer"], task, dict(e)) for e in dataset]


def problem_stream(task: str, seed: int, gsm8k_path: str | None = None) -> Iterator[Problem]:
    """An endless, seeded stream of ``task``'s problems (GSM8K: its train split, shuffled)."""
    if task not in LLM_TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(LLM_TASKS)}")
    rng = random.Random(seed)
    if task in ("sums", "arithmetic"):
        make = sum_problem if task == "sums" else arithmetic_problem
        while True:
            yield make(rng)
    pool = load_gsm8k("train", gsm8k_path) if task == "gsm8k" else None
    for epoch in itertools.count():
        if pool is None:  # Reasoning Gym: a fresh block of generated problems each time
            yield from reasoning_gym_problems(task, 1000, seed * 1_000_003 + epoch)
        else:
            yield from rng.sample(pool, len(pool))


HELD_OUT_SEED = 2_147_483_647  # the stream evaluations draw from; runs train on their own seed


def held_out_problems(task: str, n: int, gsm8k_test_path: str | None = None) -> list[Problem]:
    """``n`` problems to evaluate on: GSM8K's test split (its first ``n``; from the hub, or a
    local JSON-lines file), else the first ``n`` of a fixed seed's stream."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if task == "gsm8k":
        return load_gsm8k("test", gsm8k_test_path)[:n]
    return make_problems(task, n, HELD_OUT_SEED)


def make_problems(task: str, n: int, seed: int, gsm8k_path: str | None = None) -> list[Problem]:
    """The first ``n`` problems of :func:`problem_stream`."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return list(itertools.islice(problem_stream(task, seed, gsm8k_path), n))
