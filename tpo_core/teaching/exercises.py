"""Exercises with automatic checks, one helper for every notebook.

A student calls ``check("01-predict-q", [0.8, 0.1, 0.1])`` and gets a short
verdict that says right or wrong and why; the cell shows it. Checkers compute
the right answer from the library, never from stored numbers. Instructors
read worked solutions with ``solution(name)``; nothing prints them by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

import torch

from tpo_core.bandits.neural import tpo_gain_over_one_vs_rest
from tpo_core.bandits.tabular import beta_coefficient, step_budget
from tpo_core.group import descend_group, group_view, random_group
from tpo_core.objectives import standardize_scores, tpo_target


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
    "negligible difference becomes a full-strength preference (the difficulty bias known "
    "for GRPO).",
)
def _grade_tiny_variance(answer):
    u1 = float(group_view([0.25] * 4, [0.001, 0.0, 0.0, 0.0]).u[0])
    if abs(float(answer) - u1) <= 0.01:
        return True, f"u_1 = {u1:.3f}, the same as for scores (1, 0, 0, 0): scale is gone."
    return False, "z-scores divide by the spread, however small it is; try it for (1, 0, 0, 0)."


# ---------------------------------------------------------------- notebook 02


@exercise(
    "02-beta-tpo",
    "K = 10 actions, one correct, p = pi(correct) = 0.1. What is TPO's exact-update "
    "weight beta(p)? (Two decimals.)",
    "The one-hot score vector standardises to u = 3 on the correct action and -1/3 "
    "elsewhere, so lambda = exp(3 + 1/3) = exp(10/3) ≈ 28.0. Then "
    "beta = p (lambda - 1) / (1 - p + lambda p) = 0.1 · 27.0 / (0.9 + 2.80) ≈ 0.73.",
)
def _grade_beta_tpo(answer):
    beta = float(beta_coefficient("tpo", 0.1, 10))
    if abs(float(answer) - beta) <= 0.01:
        return True, f"beta = {beta:.3f}: TPO still gives this hard context a large weight."
    grpo, dg = float(beta_coefficient("grpo", 0.1, 10)), float(beta_coefficient("dg", 0.1, 10))
    if abs(float(answer) - grpo) <= 0.01 or abs(float(answer) - dg) <= 0.01:
        return False, "that is another method's beta; use lambda = exp(K / sqrt(K - 1))."
    return False, "lambda = exp(K / sqrt(K - 1)); beta = p (lambda - 1) / (1 - p + lambda p)."


HARD_SHARE = dict(p=[0.02, 0.3, 0.9], k=10)


@exercise(
    "02-hard-share",
    "Three contexts with p = 0.02 (hard), 0.3 and 0.9 (easy), K = 10. Of the RL updates "
    "'pg', 'dg', 'grpo' and 'tpo', which gives the hard context the largest share of a "
    "normalised step?",
    "Shares of ||g||² for the hard context: PG 0.7%, DG 1.3%, GRPO 6%, TPO 23% (CE 66%). "
    "DG's and GRPO's beta vanish like p and sqrt(p) as p -> 0, TPO's like (lambda - 1) p "
    "with lambda ≈ 28, so TPO keeps paying attention to contexts it has not solved yet.",
)
def _grade_hard_share(answer):
    methods = ("pg", "dg", "grpo", "tpo")
    a = _choice(answer, methods)
    shares = {m: float(step_budget(m, HARD_SHARE["p"], HARD_SHARE["k"])[0]) for m in methods}
    best = max(shares, key=shares.get)
    listing = ", ".join(f"{m} {v:.1%}" for m, v in shares.items())
    if a == best:
        return True, f"hard-context shares: {listing}."
    return False, f"{a} gives it {shares[a]:.1%}; look at beta(p) as p -> 0 in the explorer."


# ---------------------------------------------------------------- notebook 03


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
    a = _choice(answer, ("spread", "concentrated"))
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


# ---------------------------------------------------------------- notebook 04

STATE_REWARDS = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


@exercise(
    "04-state-u",
    "At one prefix state the K = 8 candidates' token rewards are (1, 0, 0, 1, 0, 0, 0, 0). "
    "What is u for a correct candidate?",
    "Mean 0.25, population std sqrt(0.25 · 0.75) = 0.433, so a correct candidate has "
    "u = 0.75 / 0.433 = sqrt(3) ≈ 1.73 and a wrong one -0.25 / 0.433 ≈ -0.58.",
)
def _grade_state_u(answer):
    u = float(standardize_scores(torch.tensor(STATE_REWARDS, dtype=torch.float64))[0])
    if abs(float(answer) - u) <= 0.01:
        return True, f"u = {u:.3f}; q then multiplies p_old by e^{u:.2f} on the correct candidates."
    return False, "z-score the eight rewards with the population standard deviation."


@exercise(
    "04-dead-state",
    "Sequential reward; the behaviour answer got position 1 wrong. At position 3, what is "
    "TPO's target q for that state's group: 'p_old', 'uniform' or 'correct token'?",
    "Every candidate at a later state scores 0 (the answer is already dead), so the group "
    "has zero variance: u = 0 and q = p_old. The state contributes no gradient on the "
    "snapshot, instead of pushing on tokens whose reward says nothing.",
)
def _grade_dead_state(answer):
    a = _choice(answer, ("p_old", "uniform", "correct token"))
    if a == "p_old":
        return True, "all candidates score 0, u = 0, so q = p_old: no push either way."
    return False, "what are the candidates' rewards once an earlier token was wrong?"


# ---------------------------------------------------------------- notebook 05


@exercise(
    "05-one-success-mass",
    "K = 8 answers, p_old uniform over them (1/8 each), exactly one is right (exact match). "
    "What mass does TPO's target q put on the right answer, at eta = 1?",
    "u = sqrt(7) ≈ 2.65 for the success and -1/sqrt(7) ≈ -0.38 for each failure, so "
    "q = e^2.65 / (e^2.65 + 7 e^-0.38) ≈ 14.1 / (14.1 + 4.8) ≈ 0.746: three quarters of the "
    "group's mass, from an eighth. A finite, fitted target: no step can overshoot it.",
)
def _grade_one_success_mass(answer):
    scores = torch.tensor([1.0] + [0.0] * 7, dtype=torch.float64)
    q = float(tpo_target(torch.full((8,), -math.log(8), dtype=torch.float64), scores)[0])
    if abs(float(answer) - q) <= 0.01:
        return True, f"q = {q:.3f}: from 1/8 to about 3/4 in one target."
    return False, "u = z-score of (1, 0, ..., 0); then q ∝ p_old · e^u, normalised over the 8."


@exercise(
    "05-masked-step",
    "GRPO's loss averages over the B = 100 groups of an episode; 90 of them are all-fail. "
    "Masking the flat groups out of the average multiplies the step each informative group "
    "gets by what factor?",
    "The average runs over 10 groups instead of 100, so each informative group's share of "
    "the step grows tenfold, and it grows most when successes are rarest: early, and on "
    "the hardest prompts. The paper measures it: masking takes GRPO from 6.3% to 29.7% "
    "final error. TPO's flat groups are neutral on the snapshot (q = p_old), so for TPO "
    "there is nothing to mask.",
)
def _grade_masked_step(answer):
    if abs(float(answer) - 10) <= 0.01:
        return True, "100 / 10 = 10: a tenfold larger step on the few groups that have a success."
    return False, "the loss is a mean over groups: over how many groups after masking?"


# ---------------------------------------------------------------- notebook 06


@exercise(
    "06-extract",
    "A completion reads 'Each box holds 12, so 3 boxes hold 36 pens. #### 36 pens (I think 37 is "
    "wrong)'. Which number does the verifier read as the answer?",
    "The number after the last '####' wins over later numbers: 36. Without '####' or "
    "\\boxed{} it would take the last number in the text, 37.",
)
def _grade_extract(answer):
    from tpo_core.llm.verifiers import extract_answer

    text = "Each box holds 12, so 3 boxes hold 36 pens. #### 36 pens (I think 37 is wrong)"
    if str(answer).strip() == extract_answer(text):
        return True, "'####' marks the final answer, as in GSM8K's own solutions."
    return False, "look for the GSM8K marker before falling back to the last number."


# ---------------------------------------------------------------- implement it
#
# The answer is a function. The grader calls it on random inputs, compares it with the
# library (values and, for losses, gradients through autograd), and when it differs, tries
# the usual mistakes to name the one that was made.


def _random_groups(seed: int, groups: int = 5, k: int = 6):
    g = torch.Generator().manual_seed(seed)
    old = torch.log_softmax(torch.randn(groups, k, generator=g, dtype=torch.float64), -1)
    scores = torch.randint(0, 4, (groups, k), generator=g).to(torch.float64)
    scores[0] = 1.0  # one zero-variance group, always
    return old, scores


def _call(fn, *args) -> torch.Tensor:
    if not callable(fn):
        raise TypeError("pass your function itself (its name, without calling it)")
    out = fn(*args)
    if out is None:
        raise ValueError("your function returned None: finish it with a return statement")
    return torch.as_tensor(out, dtype=torch.float64)


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return got.shape == want.shape and torch.allclose(got, want, atol=1e-6, rtol=1e-5)


def _diagnose(got: torch.Tensor, mistakes: dict[str, torch.Tensor], default: str) -> str:
    """The first mistake whose result ``got`` reproduces, else ``default``."""
    return next((why for why, value in mistakes.items() if _close(got, value)), default)


def _zscores(scores: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """A deliberately plain z-score, for naming mistakes (population std unless ``unbiased``)."""
    centred = scores - scores.mean(-1, keepdim=True)
    std = scores.std(-1, unbiased=unbiased, keepdim=True)
    return torch.where(std > 1e-6, centred / std.clamp_min(1e-6), torch.zeros_like(centred))


@exercise(
    "01-my-tpo-target",
    "Write my_tpo_target(old_log_probs, scores, eta) for a batch of groups, both (B, K): "
    "z-score the scores within each group (population std; a group of equal scores gets u = 0) "
    "and return q = softmax(log_softmax(old_log_probs) + u / eta) over the last dimension.",
    "def my_tpo_target(old_log_probs, scores, eta=1.0):\n"
    "    centred = scores - scores.mean(-1, keepdim=True)\n"
    "    std = scores.std(-1, unbiased=False, keepdim=True)\n"
    "    u = torch.where(std > 1e-6, centred / std.clamp_min(1e-6), torch.zeros_like(centred))\n"
    "    return torch.softmax(torch.log_softmax(old_log_probs, -1) + u / eta, -1)",
    kind="implement it",
)
def _grade_my_tpo_target(fn):
    for seed, eta in ((0, 1.0), (1, 0.5), (2, 3.0)):
        old, scores = _random_groups(seed)
        got = _call(fn, old, scores, eta)
        want = tpo_target(old, scores, eta)
        if _close(got, want):
            continue
        anchor = torch.log_softmax(old, -1)
        mistakes = {
            "you dropped the anchor: q must start from p_old (add log_softmax(old_log_probs))":
                torch.softmax(_zscores(scores) / eta, -1),
            "you tilted by the raw scores: z-score them within each group first":
                torch.softmax(anchor + scores / eta, -1),
            "you used the sample (Bessel-corrected) std; TPO's z-scores use the population std":
                torch.softmax(anchor + _zscores(scores, unbiased=True) / eta, -1),
            "you multiplied by eta; the tilt is u / eta":
                torch.softmax(anchor + _zscores(scores) * eta, -1),
            "q is not normalised: take the softmax over each group's K candidates":
                old.exp() * torch.exp(_zscores(scores) / eta),
        }  # fmt: skip
        if torch.isnan(got).any():
            return False, "NaN in q: a group of equal scores has std 0; give it u = 0"
        return False, _diagnose(got, mistakes, f"q differs from tpo_target at eta = {eta}")
    return (
        True,
        "equal to tpo_target on random groups, zero-variance groups and three temperatures.",
    )


def _loss_and_grad(fn, logits, *rest):
    x = logits.clone().requires_grad_()
    loss = _call(fn, x, *rest)
    if loss.dim() != 0:
        raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
    if not loss.requires_grad:
        raise ValueError("the loss carries no gradient: do not detach the new log-probs")
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@exercise(
    "01-my-tpo-loss",
    "Write my_tpo_loss(logits, q) for a batch of groups (B, K): the cross-entropy "
    "-sum_k q_k log softmax(logits)_k, averaged over the groups. Its gradient must be (p - q) / B.",
    "def my_tpo_loss(logits, q):\n    return -(q * torch.log_softmax(logits, -1)).sum(-1).mean()",
    kind="implement it",
)
def _grade_my_tpo_loss(fn):
    from tpo_core.objectives import tpo_loss

    old, scores = _random_groups(3)
    q = tpo_target(old, scores)
    logits = old + torch.randn(
        old.shape, generator=torch.Generator().manual_seed(4), dtype=old.dtype
    )
    loss, grad = _loss_and_grad(fn, logits, q)
    want = tpo_loss(logits, q)
    closed = (torch.softmax(logits, -1) - q) / logits.shape[0]
    if torch.allclose(loss, want, atol=1e-6) and torch.allclose(grad, closed, atol=1e-6):
        return True, "equal to tpo_loss, and autograd gives the gradient (p - q) / B."
    b = logits.shape[0]
    mistakes = {
        "the sign is flipped: minimise the cross-entropy, -sum q log p": -want,
        "you summed over groups; average them (the step must not grow with B)": want * b,
        "you used softmax where log_softmax belongs":
            -(q * torch.softmax(logits, -1)).sum(-1).mean(),
        "you averaged over the K candidates too; sum over candidates, average over groups":
            want / logits.shape[1],
    }  # fmt: skip
    return False, _diagnose(loss, mistakes, "the loss differs from tpo_loss on random groups")


@exercise(
    "05-my-grpo-advantages",
    "Write my_grpo_advantages(rewards) for a batch of groups (B, K): GRPO's advantages "
    "(r - mean) / (std + 1e-8) within each group, with the population std.",
    "def my_grpo_advantages(rewards):\n"
    "    centred = rewards - rewards.mean(-1, keepdim=True)\n"
    "    return centred / (rewards.std(-1, unbiased=False, keepdim=True) + 1e-8)",
    kind="implement it",
)
def _grade_my_grpo_advantages(fn):
    from tpo_core.objectives import grpo_advantages

    _, rewards = _random_groups(5)
    got = _call(fn, rewards)
    want = grpo_advantages(rewards)
    if _close(got, want):
        return True, "equal to grpo_advantages, the zero-variance group included (all zeros)."
    centred = rewards - rewards.mean(-1, keepdim=True)
    mistakes = {
        "you used the sample (Bessel-corrected) std; use the population std":
            centred / (rewards.std(-1, keepdim=True) + 1e-8),
        "you did not subtract the group mean": rewards / (rewards.std(-1, False, True) + 1e-8),
        "you centred but did not divide by the std": centred,
        "you z-scored over the whole batch; GRPO z-scores within each group":
            (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-8),
    }  # fmt: skip
    if torch.isnan(got).any():
        return False, "NaN: a group of equal rewards has std 0; GRPO adds 1e-8 to it"
    return False, _diagnose(got, mistakes, "the advantages differ from grpo_advantages")


@exercise(
    "02-my-beta-tpo",
    "Write my_beta_tpo(p, k): the weight beta(p) of TPO's exact update beta(p) (e_y - pi) on a "
    "one-hot reward with K actions (notebook 02's derivation; p is a tensor).",
    "def my_beta_tpo(p, k):\n"
    "    lam = math.exp(k / math.sqrt(k - 1))\n"
    "    return p * (lam - 1) / (1 - p + lam * p)",
    kind="implement it",
)
def _grade_my_beta_tpo(fn):
    p = torch.linspace(0.01, 0.99, 25, dtype=torch.float64)
    for k in (3, 10, 37):
        got = _call(fn, p, k)
        want = beta_coefficient("tpo", p, k)
        if _close(got, want):
            continue
        lam = math.exp(k / math.sqrt(k - 1))
        mistakes = {
            "that is GRPO's beta, sqrt(p / (1 - p))": beta_coefficient("grpo", p, k),
            "that is PG's beta, p": p,
            "the tilt of the success is lambda = exp(sqrt(K-1) + 1/sqrt(K-1)) = exp(K/sqrt(K-1)), "
            "not exp(sqrt(K-1))": p * (math.exp(math.sqrt(k - 1)) - 1)
            / (1 - p + math.exp(math.sqrt(k - 1)) * p),
            "you forgot to normalise q: divide by Z = 1 - p + lambda p": p * (lam - 1),
        }  # fmt: skip
        return False, _diagnose(got, mistakes, f"beta differs from the library's at K = {k}")
    return True, "equal to beta_coefficient('tpo', p, K) for K = 3, 10 and 37."


@exercise(
    "06-my-rlvr-loss",
    "Write my_rlvr_loss(new, old, rewards, mask, eta): TPO's sequence-level RLVR loss. new and "
    "old are per-token log-probs (G*K, T) of G groups of K completions (new carries gradients, "
    "old is the frozen snapshot), rewards (G, K), mask (G*K, T) bool marks completion tokens. "
    "Sum each completion's token log-probs, build the target from the snapshot, and return the "
    "cross-entropy averaged over groups.",
    "def my_rlvr_loss(new, old, rewards, mask, eta=1.0):\n"
    "    g, k = rewards.shape\n"
    "    seq_new = new.masked_fill(~mask, 0).sum(-1).view(g, k)  # log pi(y|x)\n"
    "    seq_old = old.masked_fill(~mask, 0).sum(-1).view(g, k)\n"
    "    centred = rewards - rewards.mean(-1, keepdim=True)\n"
    "    std = rewards.std(-1, unbiased=False, keepdim=True)\n"
    "    u = torch.where(std > 1e-6, centred / std.clamp_min(1e-6), torch.zeros_like(centred))\n"
    "    q = torch.softmax(torch.log_softmax(seq_old, -1) + u / eta, -1)\n"
    "    return -(q * torch.log_softmax(seq_new, -1)).sum(-1).mean()",
    kind="implement it",
)
def _grade_my_rlvr_loss(fn):
    from tpo_core.objectives import sequence_log_probs, tpo_loss

    g, k, t = 3, 4, 5
    gen = torch.Generator().manual_seed(6)
    old = -torch.rand(g * k, t, generator=gen, dtype=torch.float64) * 2
    new = old + 0.3 * torch.randn(g * k, t, generator=gen, dtype=torch.float64)  # a later epoch
    mask = torch.arange(t) < torch.randint(2, t + 1, (g * k, 1), generator=gen)
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]], dtype=torch.float64)
    loss, grad = _loss_and_grad(fn, new, old, rewards, mask, 1.0)
    seq = lambda x: sequence_log_probs(x, mask).view(g, k)  # noqa: E731
    want_loss = tpo_loss(seq(new), tpo_target(seq(old), rewards))
    x = new.clone().requires_grad_()
    (want_grad,) = torch.autograd.grad(tpo_loss(seq(x), tpo_target(seq(old), rewards)), x)
    if torch.allclose(loss, want_loss, atol=1e-6) and torch.allclose(grad, want_grad, atol=1e-6):
        return True, "equal to the library's TPO RLVR loss, values and gradients, padding included."
    mean_tokens = lambda x: (x.masked_fill(~mask, 0).sum(-1) / mask.sum(-1)).view(g, k)  # noqa: E731
    mistakes = {
        "you averaged the token log-probs; a completion's log pi(y|x) is their sum":
            tpo_loss(mean_tokens(new), tpo_target(mean_tokens(old), rewards)),
        "you built the target from the new log-probs; it must come from the frozen snapshot":
            tpo_loss(seq(new), tpo_target(seq(new).detach(), rewards)),
        "you summed the padding too: mask out the tokens past each completion's end":
            tpo_loss(new.sum(-1).view(g, k), tpo_target(old.sum(-1).view(g, k), rewards)),
    }  # fmt: skip
    return False, _diagnose(loss, mistakes, "the loss differs from the library's on random groups")


# ---------------------------------------------------------------- multiple choice
#
# Conceptual questions: every option carries its own explanation, shown when it is chosen.


def multiple_choice(name: str, question: str, options: dict[str, tuple[str, str]], right: str):
    """Register a question whose options map a letter to ``(option text, why)``."""
    lines = [question] + [f"  ({key}) {text}" for key, (text, _) in options.items()]
    keys = tuple(options)

    def grade(answer):
        key = _choice(answer, keys)
        return key == right, options[key][1]

    EXERCISES[name] = Exercise(
        name, "\n".join(lines) + f"\nAnswer {', '.join(repr(k) for k in keys)}.", grade,
        f"({right}) {options[right][0]}: {options[right][1].removeprefix('right: ')}",
        "multiple choice",
    )  # fmt: skip


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
    "01-double-epochs",
    "With free logits, PG at lr x E = K / eta lands exactly on q. You double the epochs. PG ends",
    {
        "a": ("on q again", "that would be TPO; PG's gradient -A/K never shrinks."),
        "b": (
            "on the target of temperature eta / 2, past q",
            "right: its endpoint is the target "
            "at temperature K / (lr E), so doubling E halves it and PG overshoots.",
        ),
        "c": ("back at p_old", "PG keeps moving in the same direction every step."),
    },
    "b",
)
multiple_choice(
    "01-panel-lr",
    "In the panel of 20 groups, why does each group's best PG learning rate differ?",
    {
        "a": ("the groups have different K", "every group has the same K."),
        "b": (
            "shared features Phi_g change how a parameter step moves each group's logits",
            "right: PG's endpoint is log p_old + (lr E / K) Phi Phi^T A, which depends on "
            "the group; TPO's fixed point p = q does not.",
        ),
        "c": (
            "their scores have different scales",
            "z-scoring gives every group the same scale: "
            "with free logits the best setting is the same for all.",
        ),
    },
    "b",
)
multiple_choice(
    "02-pg-baseline",
    "Changing PG's constant baseline b changes its expected (exact) update by",
    {
        "a": (
            "nothing",
            "right: sum_a pi_a b (e_a - pi) = b (pi - pi) = 0; a baseline only "
            "changes the variance of the sampled update.",
        ),
        "b": (
            "b (e_y - pi)",
            "the baseline multiplies every action's score term, and those sum to zero under pi.",
        ),
        "c": ("a factor (1 - b)", "the expectation over actions cancels b entirely."),
    },
    "a",
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
    "04-unanimous",
    "With V = 2 and K = 8, why are token-level groups so often unanimous (all 8 the same token)?",
    {
        "a": (
            "two tokens, and a confident policy samples the same one 8 times",
            "right: then every candidate scores the same, u = 0 and q = p_old.",
        ),
        "b": ("the reward is terminal", "notebook 04 rewards every token (bag-of-tokens)."),
        "c": ("candidate 0 is always the behaviour token", "the other 7 are sampled afresh."),
    },
    "a",
)
multiple_choice(
    "05-ratio-box",
    "Whole-answer GRPO clips the ratio pi(y|x) / pi_old(y|x) to [0.8, 1.2]. Per batch, how far "
    "can it raise a right answer's probability before the clip stops the push?",
    {
        "a": (
            "by 20%",
            "right: one ratio per answer. Per-token GRPO clips each token instead, "
            "so an answer's probability can rise by up to 1.2^H.",
        ),
        "b": ("by 1.2^H", "that is the per-token form, one clip per token."),
        "c": ("without limit; only the KL stops it", "the clip stops the surrogate's push first."),
    },
    "a",
)
multiple_choice(
    "05-stuck-group",
    "On a stuck prompt all 8 answers are the same wrong answer. TPO's target for that group is",
    {
        "a": (
            "q = p_old: no push",
            "right: equal scores give u = 0. Neither TPO nor GRPO can "
            "learn from a group that holds no success.",
        ),
        "b": (
            "the wrong answer pushed down",
            "the scores are all equal: nothing ranks it below anything.",
        ),
        "c": ("uniform over the answers", "TPO never forgets p_old; with u = 0 it returns it."),
    },
    "a",
)
multiple_choice(
    "06-unlikely-right",
    "One right completion has p_old = 1e-6 within its group; a wrong one holds 0.99; one success "
    "among K = 8, eta = 1. TPO's target mass for the right completion is about",
    {
        "a": (
            "2e-5: about 20 times its old mass",
            "right: q scales each completion's mass by e^u / Z, at most e^(u_right - u_wrong) "
            "= e^(K / sqrt(K - 1)) ~ 20.6 here, so an unlikely right answer is raised in "
            "proportion to what it has; it takes many batches to grow.",
        ),
        "b": (
            "0.75",
            "that holds when p_old is uniform over the group; here it is nearly one-hot.",
        ),
        "c": ("1", "a finite temperature never makes the target one-hot."),
    },
    "a",
)
multiple_choice(
    "06-one-epoch",
    "With one epoch per batch the loop uses old = new.detach() and skips the snapshot pass. Why "
    "is that exact?",
    {
        "a": (
            "at the first epoch the current policy is the snapshot",
            "right: the snapshot is "
            "needed only once the weights have moved, from the second epoch on.",
        ),
        "b": ("TPO does not use p_old", "its target q is built from p_old."),
        "c": ("the KL term stands in for it", "the KL is to the starting model, not the snapshot."),
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
multiple_choice(
    "02-what-differs",
    "In section 2 every method's exact update on context c points along e_y - pi_c, scaled by "
    "beta(p_c), and the whole step is normalised. What then tells the methods apart?",
    {
        "a": ("the direction within each context", "all of them share e_y - pi_c there."),
        "b": (
            "how the step is shared among the contexts, through beta(p)",
            "right: with the "
            "direction per context fixed and the total length normalised, beta(p) decides which "
            "contexts get the step.",
        ),
        "c": ("the total length of the step", "every step is normalised to the same length."),
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
multiple_choice(
    "04-sequential-mistake",
    "Under the sequential reward a token scores 1 only if it and every earlier token are right. "
    "Compared with the bag reward, one wrong token at position 2",
    {
        "a": ("lowers the score of that token only", "that is the bag reward."),
        "b": (
            "zeroes the scores of that token and of every later token of the answer",
            "right: "
            "every later token has a wrong token before it, so the later states get no credit "
            "even where they are right.",
        ),
        "c": (
            "zeroes the scores of the earlier tokens",
            "the earlier tokens have no wrong token before them; they keep their credit.",
        ),
    },
    "b",
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


def solutions_markdown() -> str:
    """Every exercise's question and worked solution, each solution folded behind a toggle:
    ``docs/SOLUTIONS.md`` (regenerate it with ``python -m tpo_core.teaching.exercises``)."""
    parts = [
        "# Worked solutions\n",
        "Every exercise of the notebooks, by notebook. Each solution is folded: open it after",
        "you have tried. In a notebook, `solution(name)` prints the same text.\n",
    ]
    for name in sorted(EXERCISES):
        ex = EXERCISES[name]
        question = ex.question.replace("\n", "  \n")
        solution = ex.solution
        body = f"```python\n{solution}\n```" if solution.startswith("def ") else solution
        parts.append(f"## `{name}` (notebook {name[:2]})\n\n{question}\n")
        parts.append(f"<details>\n<summary>show the solution</summary>\n\n{body}\n\n</details>\n")
    return "\n".join(parts)


MAP_START, MAP_END = "<!-- exercise map: start -->", "<!-- exercise map: end -->"


def exercise_map_markdown() -> str:
    """A table of every notebook's exercises by kind, for the instructors' page."""
    notebooks = sorted({name[:2] for name in EXERCISES})
    rows = ["| notebook | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for nb in notebooks:
        cells = [
            ", ".join(
                f"`{n}`" for n in sorted(EXERCISES) if n[:2] == nb and EXERCISES[n].kind == kind
            )
            or "-"
            for kind in KINDS
        ]
        rows.append(f"| {nb} | " + " | ".join(cells) + " |")
    return "\n".join([MAP_START, *rows, MAP_END])


def with_exercise_map(page: str) -> str:
    """``page`` with the table between its map markers replaced by the current one."""
    start, end = page.index(MAP_START), page.index(MAP_END) + len(MAP_END)
    return page[:start] + exercise_map_markdown() + page[end:]


if __name__ == "__main__":
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    (docs / "SOLUTIONS.md").write_text(solutions_markdown(), encoding="utf-8")
    instructors = docs / "INSTRUCTORS.md"
    instructors.write_text(with_exercise_map(instructors.read_text(encoding="utf-8")), "utf-8")
    print(f"wrote SOLUTIONS.md and the map in INSTRUCTORS.md: {len(EXERCISES)} exercises")
