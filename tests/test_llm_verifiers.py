"""Verifiers: problems with a checkable answer, and how a completion's answer is read."""

import json
import time

import pytest

from tpo_core.llm import verifiers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{1,234}.", "1234"),
        ("48 / 2 = 24 apples\n#### 24", "24"),
        ("#### 42.0", "42"),
        ("first 3, then 7", "7"),
        ("it is -5", "-5"),
        ("\\boxed{3} but later 9", "3"),  # boxed wins over later numbers
        ("no number here", None),
        # exact values, whatever the spelling
        ("1e3", "1000"),
        ("1e309", "1" + "0" * 309),
        ("4.2e1 apples", "42"),
        (".5", "0.5"),
        ("it is -.25", "-0.25"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{-\\dfrac{2}{6}}", "-1/3"),
        ("\\boxed{\\frac{1}{0}}", None),
        ("٣", "3"),  # Arabic-Indic three
        ("#### ３６", "36"),  # full-width digits
        ("\\boxed{} so #### 7", "7"),  # an empty box does not decide
        ("\\boxed{7} and \\boxed{ }", "7"),
        ("1,2", "2"),  # a list, not a thousands separator
        # signs, fractions, powers and separators as people write them
        ("\u22123", "-3"),  # the minus sign
        ("\u20133", "-3"),  # the en dash
        ("#### \u22125", "-5"),
        ("3/4", "0.75"),
        ("\\frac{1}{2}", "0.5"),  # unboxed
        ("\u00bd", "0.5"),  # the vulgar fraction one half
        ("4\u00b2", "16"),  # a superscript after a digit is a power
        ("an area of 5 m\u00b2", "5"),  # elsewhere it is not a number
        ("\\boxed{1{,}234}", "1234"),  # LaTeX's braced comma
        ("1 000", "1000"),  # a space between groups of three
        ("3.14.15", None),  # malformed: not read as 0.15
        ("3/0", None),
    ],
)
def test_extract_answer(text, expected):
    assert verifiers.extract_answer(text) == expected


def test_reward_checks_exact_numbers():
    problem = verifiers.Problem("2+5=", "7", "sums")
    assert verifiers.reward("7", problem) == 1.0
    assert verifiers.reward("8", problem) == 0.0 and verifiers.reward("", problem) == 0.0


def test_generated_problems_are_right_and_seeded():
    sums = verifiers.make_problems("sums", 50, seed=3)
    assert sums == verifiers.make_problems("sums", 50, seed=3)
    for p in sums:
        a, b = p.prompt[:-1].split("+")
        assert int(a) + int(b) == int(p.answer) < 10
    questions = verifiers.make_problems("sum_questions", 50, seed=3)
    for p, q in zip(sums, questions, strict=True):  # the same sums, asked in words
        a, b = p.prompt[:-1].split("+")
        assert q.prompt == f"What is {a} + {b}? Reply with only the number."
        assert q.answer == p.answer and q.task == "sum_questions"
    for p in verifiers.make_problems("arithmetic", 20, seed=0):
        a, op, b = p.prompt.split("?")[0].removeprefix("What is ").split()
        assert eval(f"{a}{op}{b}") == int(p.answer)  # noqa: S307 - two integers and an operator


def test_gsm8k_loader_reads_a_local_file_in_its_format(tmp_path):
    rows = [
        {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
        {"question": "A box holds 1,200 pins; half are red. Red?", "answer": "1200/2\n#### 600"},
    ]
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    problems = verifiers.load_gsm8k("train", path)
    assert [p.answer for p in problems] == ["7", "600"]
    assert problems[0].prompt.startswith("Tom has 3 apples") and "####" in problems[0].prompt
    assert verifiers.reward("They have 7 apples.\n#### 7", problems[0]) == 1.0
    drawn = verifiers.make_problems("gsm8k", 5, seed=0, gsm8k_path=path)
    assert len(drawn) == 5 and {p.answer for p in drawn} <= {"7", "600"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "solution": "#### 1"}))
    with pytest.raises(ValueError, match="missing"):
        verifiers.load_gsm8k("train", bad)


def test_reasoning_gym_tasks_use_their_own_checker():
    (kk,) = verifiers.make_problems("knights_knaves", 1, seed=0)
    assert verifiers.reward(f"thinking...<answer>{kk.answer}</answer>", kk) == 1.0
    assert verifiers.reward("<answer>nobody</answer>", kk) == 0.0
    (graph,) = verifiers.make_problems("graph_color", 1, seed=0)
    colouring = json.dumps(graph.entry["metadata"]["possible_answer"])
    assert verifiers.reward(f"<answer>{colouring}</answer>", graph) == 1.0
    assert verifiers.reward("<answer>{}</answer>", graph) == 0.0


def test_unknown_task_is_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        verifiers.make_problems("chess", 1, seed=0)


@pytest.mark.parametrize(
    ("completion", "answer", "score"),
    [
        ("1e3", "3", 0.0),
        ("1e3", "1000", 1.0),
        (".5", "5", 0.0),
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("\\boxed{\\frac{1}{2}}", "2", 0.0),
        ("٣", "3", 1.0),
        ("\\boxed{} #### 7", "7", 1.0),
    ],
)
def test_rewards_compare_exact_values(completion, answer, score):
    assert verifiers.reward(completion, verifiers.Problem("q", answer, "gsm8k")) == score


def test_a_problem_without_an_answer_is_refused_clearly():
    with pytest.raises(ValueError, match="no answer to compare with"):
        verifiers.reward("7", verifiers.Problem("2+5=", None, "sums"))
    with pytest.raises(ValueError, match="not a number"):
        verifiers.reward("7", verifiers.Problem("2+5=", "seven", "sums"))


def test_tagged_answers_are_read_in_linear_time():
    assert verifiers.extract_tagged("a <answer>x</answer> b <answer> y </answer> c") == "y"
    assert verifiers.extract_tagged("  no tags ") == "no tags"
    assert verifiers.extract_tagged("<answer>open only") == "<answer>open only"
    flood = "<answer>" * 40_000  # 320 KB with no closing tag: a quadratic search takes minutes
    start = time.perf_counter()
    assert verifiers.extract_tagged(flood) == flood
    boxes = "\\boxed{" * 40_000 + "1"
    assert verifiers.extract_answer(boxes) == "1"  # no box closes: the last number
    assert time.perf_counter() - start < 2.0  # linear: milliseconds


MEGABYTE = 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * (MEGABYTE // 7) + "1" + "}" * (MEGABYTE // 7),  # nested boxes
        "0." + "9" * MEGABYTE,  # one long decimal
        "\\boxed{ }" * (MEGABYTE // 9),  # blank boxes
        "\\frac{" * (MEGABYTE // 6),
        "1," * (MEGABYTE // 2),
        "1 " * (MEGABYTE // 2),
        "-" * MEGABYTE,
        "\u00b2" * MEGABYTE,
    ],
    ids=[
        "nested-boxes",
        "long-decimal",
        "blank-boxes",
        "open-fracs",
        "commas",
        "spaces",
        "dashes",
        "superscripts",
    ],
)
def test_answers_are_read_in_linear_time(text):
    """1 MB of adversarial text reads in well under a second (a quadratic reader takes
    minutes), and a number too long to read exactly is not read at all."""
    start = time.perf_counter()
    answer = verifiers.extract_answer(text)
    assert time.perf_counter() - start < 1.0
    if text.startswith("0."):
        assert answer is None  # never rounded to 1
