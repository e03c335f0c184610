"""One scored group under the microscope: the target's anatomy and logit descent.

Notebook 01 is built on these two functions. A *group* is K candidates with
old probabilities ``p_old`` and raw scores ``s``; the policy restricted to the
group is ``softmax(z)`` over free logits ``z``, started at ``log p_old``.

* :func:`group_view` takes the group apart: ``u``, ``q`` and the TPO gradient.
* :func:`descend_group` runs E epochs of plain gradient descent on ``z`` under
  policy gradient, the PPO/GRPO clipped surrogate, or TPO, and records where
  each goes. PG's loss has no minimum on the simplex (its gradient ``-A/K``
  never shrinks), the clipped surrogate stops wherever its ratio leaves the
  trust region, and TPO's loss is minimised exactly at ``q``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpo_core.objectives import (
    check_eta,
    entropy,
    grpo_advantages,
    kl_divergence,
    standardize_scores,
    tpo_target,
)

DESCENT_METHODS = ("pg", "clipped", "tpo")
"""Methods :func:`descend_group` knows: policy gradient with z-scored
advantages, the PPO/GRPO clipped surrogate (eps = 0.2, no KL), and TPO."""


def _as_probs(name: str, values) -> torch.Tensor:
    x = torch.as_tensor(values, dtype=torch.float64)
    if x.dim() != 1 or x.numel() < 2:
        raise ValueError(
            f"{name} must be a 1-D group of at least 2 candidates, got shape {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite")
    return x


def _old_probs(p_old) -> torch.Tensor:
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


@dataclass(frozen=True)
class Trajectory:
    """Where gradient descent on one group's logits went, epoch by epoch.

    ``probs`` is (E + 1, K), starting at ``p_old``; ``kl_to_target[e]`` is
    ``KL(q || p_e)``; ``grad_norm[e]`` is the norm of the loss gradient taken
    at epoch ``e`` (E values).
    """

    method: str
    probs: torch.Tensor
    kl_to_target: torch.Tensor
    grad_norm: torch.Tensor


def group_gradient(method: str, logits, log_p_old, q, advantages, clip_eps: float = 0.2):
    """Closed-form gradient of each method's loss with respect to the group logits ``z``.

    With ``p = softmax(z)`` and ``d log p_i / dz = e_i - p``:

    * ``pg``: loss ``-(1/K) sum_i A_i log p_i``; gradient ``-(A - p sum_i A_i) / K``,
      which is ``-A / K`` for z-scored ``A`` (they sum to 0): constant, it never shrinks.
    * ``clipped``: loss ``-(1/K) sum_i min(rho_i A_i, clip(rho_i) A_i)``,
      ``rho = p / p_old``; candidate ``i`` contributes ``g_i = -rho_i A_i / K`` while
      its ratio is inside the trust region in its advantage's direction, else 0;
      gradient ``g - p sum_i g_i``.
    * ``tpo``: loss ``-sum_i q_i log p_i``; gradient ``p - q``.

    The tests check each against autograd through the library's own losses.
    """
    p = torch.softmax(logits, -1)
    if method == "tpo":
        return p - q
    if method == "pg":
        g = -advantages / advantages.shape[-1]
    else:
        ratio = torch.exp(torch.log_softmax(logits, -1) - log_p_old)
        unclipped = torch.where(advantages > 0, ratio < 1 + clip_eps, ratio > 1 - clip_eps)
        g = (
            torch.where(unclipped, -ratio * advantages, torch.zeros_like(ratio))
            / advantages.shape[-1]
        )
    return g - p * g.sum(-1, keepdim=True)


def descend_group(
    p_old, scores, method: str, lr: float, epochs: int, eta: float = 1.0
) -> Trajectory:
    """Run ``epochs`` steps of ``z <- z - lr * grad L(z)`` from ``z = log p_old``.

    ``method`` is one of :data:`DESCENT_METHODS`. All three see the same group
    and the same z-scored scores ``u`` (as advantages for PG and the clipped
    surrogate, through the frozen target ``q`` for TPO), and all losses are
    averaged the library's way, so at the snapshot their gradients have
    comparable size: PG's is ``-u / K``, TPO's ``p_old - q``.
    """
    return descend_groups(p_old, scores, (method,), lr, epochs, eta)[method]


def descend_groups(
    p_old, scores, methods=DESCENT_METHODS, lr: float = 1.0, epochs: int = 20, eta: float = 1.0
) -> dict[str, Trajectory]:
    """:func:`descend_group` for several methods at once (one row of logits each).

    Steps use :func:`group_gradient`'s closed forms, which keeps a 50-epoch
    redraw of the overshoot explorer well inside a slider move's budget.
    """
    unknown = [m for m in methods if m not in DESCENT_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method {unknown!r}; choose from {', '.join(DESCENT_METHODS)}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    view = group_view(p_old, scores, eta)
    log_p_old = view.p_old.log()
    advantages = grpo_advantages(_as_probs("scores", scores))
    logits = log_p_old.repeat(len(methods), 1)
    probs, grad_norms = [torch.softmax(logits, -1)], []
    for _ in range(epochs):
        grad = torch.stack(
            [
                group_gradient(m, row, log_p_old, view.q, advantages)
                for m, row in zip(methods, logits, strict=True)
            ]
        )
        logits = (logits - lr * grad).clamp(-1e4, 1e4)
        probs.append(torch.softmax(logits, -1))
        grad_norms.append(grad.norm(dim=-1))
    probs, grad_norms = torch.stack(probs, 1), torch.stack(grad_norms, 1)
    kl = kl_divergence(view.q.expand_as(probs), probs.clamp_min(1e-300))
    return {
        m: Trajectory(method=m, probs=probs[i], kl_to_target=kl[i], grad_norm=grad_norms[i])
        for i, m in enumerate(methods)
    }


def random_group(k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible example group: ``p_old ~ Dirichlet(2, ..., 2)`` and scores ``~ N(0, 1)``.

    Scores are rounded to one decimal so they read well on a slider. A
    Gamma(2) draw is the sum of two Exponential(1) draws, and normalised
    Gamma draws are Dirichlet.
    """
    if not (isinstance(k, int) and k >= 2):
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
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
