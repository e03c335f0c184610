"""One scored group's target, taken apart: ``u``, ``q`` and the TPO gradient, the family of
targets over temperatures, the clipped surrogate's ratio box, and a numerical check that ``q``
maximises the KL-regularised improvement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpo_core.objectives import (
    check_eta,
    entropy,
    kl_divergence,
    standardize_scores,
    tpo_target,
)

CLIP_EPS = 0.2
"""The clipped surrogate's trust region, ``|p_i / p_old_i - 1| <= 0.2``, as in PPO and GRPO."""


def _as_probs(name: str, values) -> torch.Tensor:
    """``values`` as a float64 group (K,), or an error saying why it is not one."""
    x = torch.as_tensor(values, dtype=torch.float64)
    if x.dim() != 1 or x.numel() < 2:
        raise ValueError(
            f"{name} must be a 1-D group of at least 2 candidates, got shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite")
    return x


def _old_probs(p_old) -> torch.Tensor:
    """``p_old`` checked strictly positive and normalised to sum to 1, float64 (K,)."""
    p = _as_probs("p_old", p_old)
    if (p <= 0).any():
        raise ValueError("p_old must be strictly positive on every candidate")
    return p / p.sum()


@dataclass(frozen=True)
class GroupView:
    """Everything the group explorer draws, as float64 tensors of shape (K,)."""

    p_old: torch.Tensor
    u: torch.Tensor
    q: torch.Tensor
    gradient: torch.Tensor  # d loss / d logits at the snapshot: p_old - q

    @property
    def kl_q_p_old(self) -> float:
        """How far the target moves the policy, ``KL(q || p_old)`` in nats."""
        return float(kl_divergence(self.q, self.p_old))

    @property
    def entropy_q(self) -> float:
        """The target's entropy in nats (``log K`` is uniform, 0 is one-hot)."""
        return float(entropy(self.q))


def group_view(p_old, scores, eta: float = 1.0, standardize: bool = True) -> GroupView:
    """Take one group apart: ``u``, ``q = softmax(log p_old + u / eta)``, ``p_old - q``.

    With ``standardize=False`` the raw scores are used as ``u``, to show what
    z-scoring buys: scores (100, 0, -100) then give an almost one-hot target.
    """
    p = _old_probs(p_old)
    s = _as_probs("scores", scores)
    if s.shape != p.shape:
        raise ValueError(f"scores has {s.numel()} candidates but p_old has {p.numel()}")
    if standardize:
        u = standardize_scores(s)
        q = tpo_target(p.log(), s, eta)
    else:
        u = s
        q = torch.softmax(p.log() + s / check_eta(eta), -1)
    return GroupView(p_old=p, u=u, q=q, gradient=p - q)


def target_family(view: GroupView, points: int = 60) -> torch.Tensor:
    """The targets ``softmax(log p_old + t u)`` for ``t = 1 / eta`` from 0 to 20, (points, K).

    With free logits, PG after E epochs at learning rate lr sits exactly on the
    target of ``t = lr E / K`` (:func:`~tpo_core.group.pg_endpoint`): this family is
    the road PG walks.
    """
    t = 20.0 * torch.linspace(0, 1, points, dtype=torch.float64) ** 2  # dense near p_old
    return torch.softmax(view.p_old.log() + t[:, None] * view.u, -1)  # (points, K)


def ratio_box(view: GroupView, eps: float = CLIP_EPS) -> list[tuple[list[float], list[float]]]:
    """The clipped surrogate's trust region on the K = 3 triangle: segments ``(start, end)``
    of the lines ``p_i = (1 +- eps) p_old_i``, each drawn edge to edge."""
    if view.p_old.numel() != 3:
        raise ValueError(f"the ratio box is drawn on the triangle: K = 3, got {view.p_old.numel()}")
    segments = []
    for i in range(3):
        j, k = (x for x in range(3) if x != i)
        for bound in ((1 - eps) * float(view.p_old[i]), (1 + eps) * float(view.p_old[i])):
            if bound < 1:
                start, end = [0.0] * 3, [0.0] * 3
                start[i], start[j] = bound, 1 - bound
                end[i], end[k] = bound, 1 - bound
                segments.append((start, end))
    return segments


MAX_GROUP = 10_000  # candidates in one example group (a figure of more shows nothing)


def random_group(k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible example group: ``p_old ~ Dirichlet(2, ..., 2)`` and scores ``~ N(0, 1)``.

    Scores are rounded to one decimal so they read well on a slider. A
    Gamma(2) draw is the sum of two Exponential(1) draws, and normalised
    Gamma draws are Dirichlet.
    """
    if not (isinstance(k, int) and 2 <= k <= MAX_GROUP):
        raise ValueError(
            f"k must be an integer in [2, {MAX_GROUP}] (one group to look at), got {k!r}"
        )
    g = torch.Generator().manual_seed(seed)
    gamma = -torch.log1p(-torch.rand(2, k, generator=g, dtype=torch.float64)).sum(0)
    scores = torch.round(torch.randn(k, generator=g, dtype=torch.float64), decimals=1)
    return gamma / gamma.sum(), scores


def maximise_kl_objective(p_old, u, eta: float = 1.0, steps: int = 500, step_size: float = 0.5):
    """Find ``argmax_r sum_i r_i u_i - eta KL(r || p_old)`` over the simplex numerically.

    Mirror ascent (exponentiated gradient): ``r <- r * exp(step * grad) / Z``
    with ``grad_i = u_i - eta (log(r_i / p_old_i) + 1)``, started at ``p_old``.
    It knows nothing of TPO's closed form; that it lands on ``tpo_target`` is
    the proposition notebook 01 checks.
    """
    p = _old_probs(p_old)
    u = _as_probs("u", u)
    eta = check_eta(eta)
    step = step_size / max(1.0, eta)
    log_r = p.log()
    for _ in range(steps):
        grad = u - eta * (log_r - p.log() + 1)
        log_r = torch.log_softmax(log_r + step * grad, -1)
    return log_r.exp()
