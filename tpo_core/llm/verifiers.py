"""Verifiable tasks for LLM RLVR: problems with a checkable answer, and their rewards.

A :class:`Problem` is a prompt and what a right answer must match. A task
draws problems (:func:`make_problems`) and scores a completion with 1 or 0
(:func:`reward`). Everything here works offline:

* ``sums``: single-digit sums written ``a+b=`` (a task a tiny model can learn on a CPU);
* ``sum_questions``: the same sums asked as an instruct model is asked ("What is 3 + 4?
  Reply with only the number."), the task of the real model on a CPU;
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
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction

# One number as written: a LaTeX fraction, or digits (thousands grouped by commas or single
# spaces, or none) with an optional decimal part, exponent, power and denominator. Every
# part is a run of one character class, so a search is linear in the text's length; the
# value is checked afterwards (:func:`_value`), so ``3.14.15`` is read as one malformed number.
NUMBER = re.compile(
    r"(?P<frac_sign>-?)\\[dt]?frac\{(?P<top>[^{}]*)\}\{(?P<bottom>[^{}]*)\}"
    r"|(?P<number>-?(?:(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?: \d{3})+)(?![\d,])|\d+|(?=\.\d)))"
    r"(?P<decimals>(?:\.\d+)*)(?P<exponent>[eE][+-]?\d+)?(?:\^(?P<power>\d+))?(?:/(?P<den>\d+))?"
)
MAX_EXPONENT = 1000  # numbers beyond 10^(+-1000) are not read (their exact value is huge)
MAX_DIGITS = 1000  # nor numbers written with more digits (exact arithmetic on them is slow)
SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")
SUPERSCRIPT_RUN = re.compile("([0-9])?([⁰¹²³⁴⁵⁶⁷⁸⁹]+)")
# Signs and separators NFKC leaves alone: the minus sign and the en dash as minus, the fraction
# slash, and LaTeX's braced comma (``1{,}234``).
SPELLINGS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2044": "/"})
REASONING_GYM_TASKS = ("graph_color", "knights_knaves")
LLM_TASKS = ("sums", "sum_questions", "arithmetic", "gsm8k", *REASONING_GYM_TASKS)


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str | None  # None where the checker decides (several right answers)
    task: str
    entry: dict = field(default_factory=dict, compare=False, repr=False)  # Reasoning Gym's record


def _prepared(text: str) -> str:
    """``text`` with one spelling per sign and digit: a superscript after a digit is a power
    (``4²`` is ``4^2``; elsewhere, as in ``m²``, it is dropped), then NFKC (full-width and
    other Unicode digits as ASCII), the minus sign and en dash as ``-``, ``{,}`` as ``,``."""
    powers = SUPERSCRIPT_RUN.sub(
        lambda m: f"{m[1]}^{m[2].translate(SUPERSCRIPTS)}" if m[1] else "", text
    )
    normal = unicodedata.normalize("NFKC", powers).translate(SPELLINGS)
    return normal.replace("{,}", ",")


def _value(match: re.Match) -> Fraction | None:
    """The exact value of one :data:`NUMBER` match, or None if it is malformed (two decimal
    points), divides by zero, or is too long or too large to read exactly."""
    if match["number"] is None:
        top, bottom = _first_value(match["top"]), _first_value(match["bottom"])
        if top is None or bottom is None or bottom == 0:
            return None
        return -top / bottom if match["frac_sign"] else top / bottom
    decimals = match["decimals"]
    if decimals.count(".") > 1 or len(match[0]) > MAX_DIGITS:
        return None
    number = match["number"].replace(",", "").replace(" ", "") or "0"
    try:
        value = Decimal(number + decimals + (match["exponent"] or ""))
    except InvalidOperation:
        return None
    if not value.is_finite() or abs(value.adjusted()) > MAX_EXPONENT:
        return None
    value = Fraction(value)
    if match["power"] is not None:
        power = int(match["power"])
        if power * max(1, value.numerator.bit_length()) > 4 * MAX_EXPONENT:
            return None
        value **= power
    if match["den"] is not None:
        if int(match["den"]) == 0:
            return None
        value /= int(match["den"])
    return value


def _first_value(text: str) -> Fraction | None:
    match = NUMBER.search(text)
    return None if match is None else _value(match)


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
    """The first number of ``fragment`` (prepared), canonical; dollar signs are ignored."""
    value = _first_value(fragment.replace("$", ""))
    return None if value is None else _canonical(value)


def _normalise_number(text: str) -> str | None:
    """The first number of ``text`` in canonical form (``"42.0"`` and ``"4.2e1"`` give ``"42"``)."""
    return _read_number(_prepared(text))


BLANK = re.compile(r"\s*")


def last_boxed(text: str) -> str | None:
    """What the last non-blank ``\\boxed{...}`` holds (nested braces included), or None.

    One pass matches the braces; boxes are then tried from the last, and a blank box can hold
    no other box, so the blank ones are disjoint: linear in the text's length."""
    closing, opened = {}, []
    for brace in re.finditer(r"[{}]", text):
        if brace.group() == "{":
            opened.append(brace.start())
        elif opened:
            closing[opened.pop()] = brace.start()
    starts = [m.end() - 1 for m in re.finditer(r"\\boxed\{", text)]
    for i in reversed(starts):
        if i in closing and BLANK.match(text, i + 1).end() < closing[i]:
            return text[i + 1 : closing[i]]
    return None


def extract_answer(text: str) -> str | None:
    """A completion's final number: the last non-empty ``\\boxed{}``, then ``#### x``, then the
    last number; in canonical form (exact values: ``1e3`` is 1000, ``\\frac{1}{2}`` and ``1/2``
    0.5, ``4²`` 16, ``−3`` -3). None where the one that decides holds no number, or a
    malformed one (``3.14.15``). Linear in the text's length."""
    text = _prepared(text)
    boxed = last_boxed(text)
    if boxed is not None:
        return _read_number(boxed)
    if "####" in text:
        return _read_number(text.rsplit("####", 1)[1])
    last = deque(NUMBER.finditer(text), maxlen=1)  # the last number, in one pass
    value = _value(last[0]) if last else None
    return None if value is None else _canonical(value)


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


def sum_question(rng: random.Random) -> Problem:
    """The sums of :func:`sum_problem`, asked in words, for an instruct model."""
    a, b = rng.choice(SUM_PAIRS)
    return Problem(f"What is {a} + {b}? Reply with only the number.", str(a + b), "sum_questions")


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
    generators = {
        "sums": sum_problem,
        "sum_questions": sum_question,
        "arithmetic": arithmetic_problem,
    }
    if task in generators:
        make = generators[task]
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
