"""Tabular bandits with exact logit tables, vectorised over seeds (the paper's single- and
multi-context bandits; notebook 02).

Every run keeps one logit table per seed and takes *normalised* steps,
``logits += alpha * g / ||g||``, so methods differ only in the direction
``g`` they choose, never in its length.

* Single context (§3.1): K actions, one correct; each step samples B actions
  and forms ``g`` from the library's losses by autograd.
* Many contexts (§3.2): N contexts of K actions; each step uses the *exact*
  population update, the expectation of the sampled update over the policy.
  In the one-hot reward case every method's exact update is
  ``g_n = beta(p_n) (e_{y_n} - pi_n)`` with ``p_n = pi_n(y_n)``: methods differ
  only in how they weigh a context by how well it is already solved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tpo_core.methods import implemented
from tpo_core.objectives import (
    dg_loss,
    grpo_advantages,
    grpo_loss,
    pg_loss,
    tpo_loss,
    tpo_target,
)
from tpo_core.stats import mean_and_se

SINGLE_CONTEXT_METHODS = implemented("single_context")  # tpo_core.methods
MULTI_CONTEXT_METHODS = implemented("multi_context")


def _check_method(method: str, known: tuple[str, ...]) -> None:
    if method not in known:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(known)}")


# ---------------------------------------------------------------- closed forms


def tpo_lambda(k: int) -> float:
    """``lambda = exp(K / sqrt(K - 1))``: TPO's tilt ratio for a one-hot score vector.

    The z-scores of a one-hot vector over K actions are ``sqrt(K-1)`` and
    ``-1/sqrt(K-1)``, so the correct action's ``exp(u)`` is ``lambda`` times the others'.
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    return math.exp(k / math.sqrt(k - 1))


def beta_coefficient(method: str, p, k: int = 10) -> torch.Tensor:
    """Closed-form weight ``beta(p)`` of the exact update ``beta(p) (e_y - pi)``.

    * CE: ``1`` (supervised; the oracle direction)
    * PG: ``p`` (REINFORCE with any constant baseline)
    * DG: ``p / (1 + p)`` (= ``p * sigmoid(-log p)``)
    * GRPO: ``sqrt(p / (1 - p))``
    * TPO: ``p (lambda - 1) / (1 - p + lambda p)``, ``lambda = exp(K / sqrt(K - 1))``

    At ``p = 0.1``, K = 10: TPO 0.73, GRPO 0.33, DG 0.09. A hard context
    (small ``p``) gets a tiny DG or GRPO weight but a large TPO weight.
    """
    _check_method(method, MULTI_CONTEXT_METHODS)
    p = torch.as_tensor(p, dtype=torch.float64)
    if ((p <= 0) | (p >= 1)).any():
        raise ValueError("p must lie strictly between 0 and 1")
    if method == "ce":
        return torch.ones_like(p)
    if method == "pg":
        return p
    if method == "dg":
        return p / (1 + p)
    if method == "grpo":
        return torch.sqrt(p / (1 - p))
    lam = tpo_lambda(k)
    return p * (lam - 1) / (1 - p + lam * p)


# ---------------------------------------------------------------- exact population updates


def expected_update(probs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``E_{a ~ pi}[f(a) (e_a - pi)] = pi * (f - E_pi f)``: the mean of a per-sample update.

    A sampled policy-gradient step with per-action weight ``f(a)`` (an
    advantage, a gated advantage) moves the logits by ``f(a)(e_a - pi)``
    on average this much.
    """
    return probs * (weight - (probs * weight).sum(-1, keepdim=True))


def exact_update(method: str, logits: torch.Tensor, correct: torch.Tensor, eta: float = 1.0):
    """The exact (expected) ascent direction on the logits, reward ``1{a = y}``.

    ``logits`` is (..., K) and ``correct`` (...) holds each context's right
    action. Computed from each method's own definition, not from ``beta``:

    * CE: ``e_y - pi``.
    * PG: advantage ``r`` (a constant baseline changes nothing in expectation).
    * DG: gated advantage ``sigmoid(r * surprisal / eta) * r``, ``surprisal = -log pi(a)``.
    * GRPO: advantage z-scored under the policy, ``(r - p) / sqrt(p (1 - p))``.
    * TPO: ``q - pi`` with ``q = tpo_target(logits, onehot(y))``, the scores of
      all K actions standardised over the actions.
    """
    _check_method(method, MULTI_CONTEXT_METHODS)
    probs = torch.softmax(logits, -1)
    reward = torch.nn.functional.one_hot(correct, logits.shape[-1]).to(logits.dtype)
    if method == "ce":
        return reward - probs
    if method == "tpo":
        return tpo_target(logits, reward, eta) - probs
    if method == "pg":
        weight = reward
    elif method == "dg":
        surprisal = -torch.log_softmax(logits, -1)
        weight = torch.sigmoid(reward * surprisal / eta) * reward
    else:
        p = (probs * reward).sum(-1, keepdim=True)
        weight = (reward - p) / torch.sqrt(p * (1 - p))
    return expected_update(probs, weight)


# ---------------------------------------------------------------- sampled single-context updates


def sampled_update(
    method: str, logits: torch.Tensor, correct: torch.Tensor, batch: int, generator: torch.Generator
) -> torch.Tensor:
    """One sampled ascent direction per row of ``logits`` (S, K), from B actions drawn from pi."""
    probs = torch.log_softmax(logits.detach(), -1).exp()  # (S, K)
    actions = torch.multinomial(probs, batch, replacement=True, generator=generator)  # (S, B)
    return batch_update(method, logits, correct, actions)


def batch_update(
    method: str, logits: torch.Tensor, correct: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """The ascent direction of each row of ``logits`` (S, K) from its batch ``actions`` (S, B).

    Baseline 0.5 for PG and DG (as the paper ran them); GRPO z-scores the B rewards of a
    row; TPO averages the one-hot score vectors ``(r_b - 0.5) e_{a_b}`` over
    the batch into one score per action, builds ``q`` over all K actions and steps
    along ``q - pi``. Directions are minus the autograd gradients of the library's losses.
    """
    _check_method(method, SINGLE_CONTEXT_METHODS)
    if actions.dim() != 2 or actions.shape[0] != logits.shape[0]:
        raise ValueError(
            f"actions must be (S, B) with S = {logits.shape[0]} rows, got {tuple(actions.shape)}"
        )
    z = logits.detach().requires_grad_(True)
    log_pi = torch.log_softmax(z, -1)  # (S, K)
    reward = (actions == correct[:, None]).to(logits.dtype)  # (S, B)
    log_pi_a = log_pi.gather(-1, actions)  # (S, B)
    if method == "pg":
        loss = pg_loss(log_pi_a, reward - 0.5)
    elif method == "dg":
        loss = dg_loss(log_pi_a, reward - 0.5)
    elif method == "grpo":
        loss = grpo_loss(log_pi_a, log_pi_a.detach(), grpo_advantages(reward), beta=0.04)
    else:
        batch = actions.shape[1]
        scores = torch.zeros_like(logits).scatter_add_(-1, actions, reward - 0.5) / batch  # (S, K)
        loss = tpo_loss(z, tpo_target(z.detach(), scores))
    (grad,) = torch.autograd.grad(loss, z)
    return -grad


# ---------------------------------------------------------------- runs


@dataclass(frozen=True)
class BanditCurves:
    """Per-seed curves of one method.

    ``error`` is (seeds, steps + 1), ``misalignment`` (seeds, steps).
    """

    method: str
    error: torch.Tensor
    misalignment: torch.Tensor

    def mean_and_se(self, name: str = "error") -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over seeds and its standard error."""
        return mean_and_se(getattr(self, name))

    def series(self, name: str = "error") -> tuple[list, list, list]:
        """``(steps, mean, se)`` as lists, for :func:`~tpo_core.teaching.curves_figure`."""
        mean, se = self.mean_and_se(name)
        return list(range(len(mean))), mean.tolist(), se.tolist()

    def misalignment_per_seed(self) -> torch.Tensor:
        """Each seed's misalignment averaged over the steps (seeds,): one number per run."""
        return self.misalignment.mean(-1)

    def steps_to(self, threshold: float) -> torch.Tensor:
        """Each seed's first step with error at or below ``threshold`` (seeds,); NaN if never."""
        reached = self.error <= threshold  # (seeds, steps + 1)
        first = reached.to(torch.float64).argmax(-1).to(torch.float64)
        return torch.where(reached.any(-1), first, torch.nan)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)


def _normalised_step(logits, g, alpha):
    norm = g.flatten(1).norm(dim=-1).clamp_min(1e-300)
    return logits + alpha * g / norm.view(-1, *([1] * (g.dim() - 1)))


def all_fail_step(
    method: str, k: int = 100, batch: int = 100, alpha: float = 0.1, seed: int = 0
) -> tuple[float, float]:
    """``pi(y*)`` before and after one normalised step on a batch in which every sample failed.

    The logits start at 0, as in the single-context bandit; the B actions are drawn
    uniformly from the K - 1 wrong ones. A method whose update is zero stays where it is.
    """
    logits = torch.zeros(1, k, dtype=torch.float64)
    correct = torch.zeros(1, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    actions = torch.randint(1, k, (1, batch), generator=gen)  # (1, B), never the correct 0
    after = _normalised_step(logits, batch_update(method, logits, correct, actions), alpha)
    return 1 / k, torch.softmax(after, -1)[0, 0].item()


def run_single_context(
    methods=SINGLE_CONTEXT_METHODS,
    k: int = 100,
    batch: int = 100,
    steps: int = 150,
    alpha: float = 0.1,
    seeds: int = 100,
    seed: int = 0,
) -> dict[str, BanditCurves]:
    """The paper's single-context bandit: one context, K actions, sampled batches, normalised
    steps, all seeds at once.

    Error is ``1 - pi(y*)``; misalignment is ``1 - cos(g, g*)`` against the
    oracle ``g* = pi(y*) (e_{y*} - pi)``.
    """
    for m in methods:
        _check_method(m, SINGLE_CONTEXT_METHODS)
    correct = torch.randint(k, (seeds,), generator=torch.Generator().manual_seed(seed))
    results = {}
    for m in methods:
        gen = torch.Generator().manual_seed(seed + 1)  # the same sampling stream per method
        logits = torch.zeros(seeds, k, dtype=torch.float64)
        # Curves are written into preallocated tensors: keeping thousands of small
        # per-step tensors alive between large temporaries fragments the heap.
        errors = torch.empty(seeds, steps + 1, dtype=torch.float64)
        misalign = torch.empty(seeds, steps, dtype=torch.float64)
        for step in range(steps):
            errors[:, step] = 1 - torch.softmax(logits, -1).gather(-1, correct[:, None])[:, 0]
            g = sampled_update(m, logits, correct, batch, gen)
            oracle = exact_update("pg", logits, correct)
            misalign[:, step] = (1 - _cosine(g, oracle)).clamp_min(0)
            logits = _normalised_step(logits, g, alpha)
        errors[:, steps] = 1 - torch.softmax(logits, -1).gather(-1, correct[:, None])[:, 0]
        results[m] = BanditCurves(m, errors, misalign)
    return results


def run_multi_context(
    methods=MULTI_CONTEXT_METHODS,
    contexts: int = 100,
    k: int = 10,
    steps: int = 1000,
    alpha: float = 0.1,
    seeds: int = 100,
    seed: int = 0,
) -> dict[str, BanditCurves]:
    """The paper's multi-context bandit: N contexts with logits ~ N(0, 1), exact updates, one
    normalised step over all.

    Error is the mean over contexts of ``1 - pi_n(y_n)``; misalignment is
    ``1 - cos(g, g_CE)`` over the whole N x K update.
    """
    for m in methods:
        _check_method(m, MULTI_CONTEXT_METHODS)
    gen = torch.Generator().manual_seed(seed)
    init = torch.randn(seeds, contexts, k, generator=gen, dtype=torch.float64)
    correct = torch.randint(k, (seeds, contexts), generator=gen)
    results = {}
    for m in methods:
        logits = init.clone()
        errors = torch.empty(seeds, steps + 1, dtype=torch.float64)
        misalign = torch.empty(seeds, steps, dtype=torch.float64)
        for step in range(steps):
            errors[:, step] = context_error(logits, correct)
            g = exact_update(m, logits, correct)
            misalign[:, step] = (1 - _cosine(g, exact_update("ce", logits, correct))).clamp_min(0)
            logits = _normalised_step(logits, g, alpha)
        errors[:, steps] = context_error(logits, correct)
        results[m] = BanditCurves(m, errors, misalign)
    return results


def context_error(logits: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Mean over contexts of ``1 - pi_n(y_n)``, one value per seed."""
    probs = torch.softmax(logits, -1)
    return 1 - probs.gather(-1, correct[..., None])[..., 0].mean(-1)


def update_size(method: str, p, k: int = 10) -> torch.Tensor:
    """Length of the exact update, ``||beta(p) (e_y - pi)|| = beta(p) (1 - p) sqrt(K / (K - 1))``.

    The wrong mass ``1 - p`` is spread evenly over the K - 1 wrong actions. A large
    ``beta`` need not mean a large step: GRPO's ``beta = sqrt(p / (1 - p))`` grows
    without bound as ``p -> 1``, but its update's length ``sqrt(p (1 - p) K / (K - 1))``
    goes to 0.
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    return beta_coefficient(method, p, k) * (1 - p) * math.sqrt(k / (k - 1))


def step_budget(method: str, p, k: int = 10) -> torch.Tensor:
    """How a normalised step's squared length splits over contexts with correct-action mass ``p``.

    Context n gets ``update_size(p_n)^2 / sum_m update_size(p_m)^2`` of it (the shares sum to 1).
    """
    share = update_size(method, p, k) ** 2
    return share / share.sum()
