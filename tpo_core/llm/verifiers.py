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

Numeric answers are read with :func:`extract_answer`: the last ``\\boxed{}``,
else the number after the last ``####``, else the last number in the text.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
REASONING_GYM_TASKS = ("graph_color", "knights_knaves")
LLM_TASKS = ("sums", "arithmetic", "gsm8k", *REASONING_GYM_TASKS)


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str | None  # None where the checker decides (several right answers)
    task: str
    entry: dict = field(default_factory=dict, compare=False, repr=False)  # Reasoning Gym's record


def _normalise_number(text: str) -> str | None:
    match = NUMBER.search(text.replace("$", ""))
    if match is None:
        return None
    number = match.group().replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return "0" if number in ("-0", "") else number


def extract_answer(text: str) -> str | None:
    """A completion's final number: ``\\boxed{x}``, then ``#### x``, then the last number."""
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    if boxed:
        return _normalise_number(boxed[-1])
    if "####" in text:
        return _normalise_number(text.rsplit("####", 1)[1])
    numbers = NUMBER.findall(text)
    return _normalise_number(numbers[-1]) if numbers else None


def extract_tagged(text: str) -> str:
    """The text inside the last ``<answer>...</answer>``, else the whole completion, stripped."""
    tagged = re.findall(r"<answer>(.*?)</answer>", text, flags=re.DOTALL)
    return (tagged[-1] if tagged else text).strip()


def reward(completion: str, problem: Problem) -> float:
    """1.0 if ``completion`` answers ``problem`` correctly, else 0.0."""
    if problem.task in REASONING_GYM_TASKS:
        score = _reasoning_gym().get_score_answer_fn(problem.task)
        return float(score(answer=extract_tagged(completion), entry=problem.entry) >= 1.0)
    return float(extract_answer(completion) == _normalise_number(problem.answer))


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
