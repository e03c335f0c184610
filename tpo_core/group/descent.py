"""Gradient descent on one group's logits under PG, the clipped surrogate and TPO.

PG's loss has no minimum on the simplex (its gradient ``-A/K`` never shrinks), the clipped
surrogate stops wherever its ratio leaves the trust region, and TPO's loss is minimised exactly
at ``q``. With ``features`` the candidates share parameters, as a network's outputs do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpo_core.group.target import CLIP_EPS, _as_probs, _old_probs, group_view
from tpo_core.methods import implemented
from tpo_core.objectives import check_eta, grpo_advantages, kl_divergence, tpo_target

DESCENT_METHODS = implemented("one_group")  # pg, clipped, tpo (tpo_core.methods)
"""Methods :func:`descend_group` knows: policy gradient with z-scored
advantages, the PPO/GRPO clipped surrogate (eps = 0.2, no KL), and TPO."""


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


def group_gradient(method: str, logits, log_p_old, q, advantages, clip_eps: float = CLIP_EPS):
    """Closed-form gradient of each method's loss with respect to the group logits ``z``.

    With ``p = softmax(z)`` and ``d log p_i / dz = e_i - p``:

    * ``pg``: loss ``-(1/K) sum_i A_i log p_i``; gradient ``-(A - p sum_i A_i) / K``,
      which is ``-A / K`` for z-scored ``A`` (they sum to 0): constant, it never shrinks.
    * ``clipped``: loss ``-(1/K) sum_i min(rho_i A_i, clip(rho_i) A_i)``,
      ``rho = p / p_old``; candidate ``i`` contributes ``g_i = -rho_i A_i / K`` while
      its ratio is inside the trust region in its advantage's direction, else 0;
      gradient ``g - p sum_i g_i``.
    * ``tpo``: loss ``-sum_i q_i log p_i``; gradient ``p - q``, so descent moves along ``q - p``.

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
        g = torch.where(unclipped, -ratio * advantages, torch.zeros_like(ratio))
        g = g / advantages.shape[-1]
    return g - p * g.sum(-1, keepdim=True)


def _check_descent(methods, lrs, epochs) -> None:
    """An error naming the bad method, epoch count or learning rate, if any."""
    unknown = [m for m in methods if m not in DESCENT_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method {unknown!r}; choose from {', '.join(DESCENT_METHODS)}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not all(lr > 0 for lr in lrs):
        raise ValueError(f"lr must be positive, got {list(lrs)!r}")


def random_features(groups: int, k: int, feature_dim: int = 8, seed: int = 0) -> torch.Tensor:
    """Random shared features ``Phi_g ~ N(0, 1 / d)``, (groups, K, d): logits ``Phi_g theta``."""
    if not (isinstance(feature_dim, int) and feature_dim >= 1):
        raise ValueError(f"feature_dim must be a positive integer, got {feature_dim!r}")
    draws = torch.Generator().manual_seed(seed)
    features = torch.randn(groups, k, feature_dim, generator=draws, dtype=torch.float64)
    return features / feature_dim**0.5


def _features(features, k: int, groups: int | None = None) -> torch.Tensor:
    """``features`` as float64 (K, d), or (G, K, d) for ``groups`` groups, checked finite."""
    phi = torch.as_tensor(features, dtype=torch.float64)
    lead = (k,) if groups is None else (groups, k)
    if phi.dim() != len(lead) + 1 or phi.shape[:-1] != lead or not torch.isfinite(phi).all():
        want = "(K, d)" if groups is None else f"(G, K, d) with G = {groups}"
        raise ValueError(
            f"features must be a finite {want} matrix with K = {k}, got shape {tuple(phi.shape)}"
        )
    return phi


def _feature_kernel(features, k: int) -> torch.Tensor:
    """``Phi Phi^T`` (K, K): how a parameter step on the group moves its logits."""
    if features is None:
        return torch.eye(k, dtype=torch.float64)
    phi = _features(features, k)
    return phi @ phi.T


def _descend(p_old, scores, methods, lrs, epochs: int, eta: float, features=None):
    """Every (lr, method) pair at once: the group's view, probabilities (L, M, E + 1, K),
    gradient norms (L, M, E) and ``KL(q || p)`` (L, M, E + 1).

    On logits ``z = log p_old + Phi theta`` a step ``theta <- theta - lr Phi^T g``
    moves the logits by ``-lr Phi Phi^T g``, ``g`` the closed-form logit gradient.
    """
    _check_descent(methods, lrs, epochs)
    view = group_view(p_old, scores, eta)
    kernel = _feature_kernel(features, view.p_old.numel())
    advantages = grpo_advantages(_as_probs("scores", scores))
    log_p_old = view.p_old.log()
    rates = torch.as_tensor(lrs, dtype=torch.float64)[:, None, None]  # (L, 1, 1)
    logits = log_p_old.expand(len(lrs), len(methods), -1).clone()  # (L, M, K)
    probs, grad_norms = [torch.softmax(logits, -1)], []
    for _ in range(epochs):
        grad = torch.stack(
            [
                group_gradient(m, logits[:, i], log_p_old, view.q, advantages)
                for i, m in enumerate(methods)
            ],
            1,
        )  # (L, M, K)
        logits = (logits - rates * grad @ kernel).clamp(-1e4, 1e4)
        probs.append(torch.softmax(logits, -1))
        grad_norms.append(grad.norm(dim=-1))
    probs = torch.stack(probs, 2)  # (L, M, E + 1, K)
    kl = kl_divergence(view.q.expand_as(probs), probs.clamp_min(1e-300))
    return view, probs, torch.stack(grad_norms, 2), kl


def descend_group(
    p_old, scores, method: str, lr: float, epochs: int, eta: float = 1.0, features=None
) -> Trajectory:
    """Run ``epochs`` steps of ``z <- z - lr * grad L(z)`` from ``z = log p_old``
    (with ``features``, the same steps on shared parameters).

    ``method`` is one of :data:`DESCENT_METHODS`. All three see the same group
    and the same z-scored scores ``u`` (as advantages for PG and the clipped
    surrogate, through the frozen target ``q`` for TPO), and all losses are
    averaged the library's way, so at the snapshot their gradients have
    comparable size: PG's is ``-u / K``, TPO's ``p_old - q``. ``features``:
    see :func:`descend_groups`.
    """
    return descend_groups(p_old, scores, (method,), lr, epochs, eta, features)[method]


def descend_groups(
    p_old,
    scores,
    methods=DESCENT_METHODS,
    lr: float = 1.0,
    epochs: int = 20,
    eta: float = 1.0,
    features=None,
) -> dict[str, Trajectory]:
    """:func:`descend_group` for several methods at once (one row of logits each).

    Steps use :func:`group_gradient`'s closed forms, which keeps a 200-epoch
    redraw of the overshoot explorer well inside a slider move's budget.

    ``features`` (K, d), when given, makes the candidates share parameters the
    way a network's outputs do: logits ``z = log p_old + Phi theta``, descent on
    ``theta`` from 0. ``None`` means free logits (``Phi = I``).
    """
    _, probs, grad_norms, kl = _descend(p_old, scores, methods, (lr,), epochs, eta, features)
    return {
        m: Trajectory(
            method=m, probs=probs[0, i], kl_to_target=kl[0, i], grad_norm=grad_norms[0, i]
        )
        for i, m in enumerate(methods)
    }


def pg_endpoint(p_old, scores, lr: float, epochs: int, features=None) -> torch.Tensor:
    """Where E steps of PG land, in closed form: ``softmax(log p_old + (lr E / K) Phi Phi^T A)``.

    Derivation: PG's logit gradient is ``-(A - p sum_i A_i) / K``, and z-scored
    advantages sum to 0, so it is ``-A / K`` at every step, wherever the
    policy is. E steps of size ``lr`` add the same vector E times. With free
    logits (``Phi = I``) the endpoint is therefore TPO's target at temperature
    ``eta_PG = K / (lr E)``: PG walks along the family of targets and stops
    wherever ``lr x E`` runs out; it lands on ``q`` only when ``lr E = K / eta``.
    """
    _check_descent(("pg",), (lr,), epochs)
    p = _old_probs(p_old)
    advantages = grpo_advantages(_as_probs("scores", scores))
    kernel = _feature_kernel(features, p.numel())
    return torch.softmax(p.log() + lr * epochs / p.numel() * advantages @ kernel, -1)


def settling_lr(q) -> float:
    """The largest learning rate at which plain descent on TPO's free logits settles on ``q``.

    TPO's loss has Hessian ``diag(p) - p p^T`` in the logits. Near ``q`` descent
    converges exactly when ``lr < 2 / lambda_max(diag(q) - q q^T)``; above it, it bounces
    around ``q``. The Hessian's largest eigenvalue is a variance of the logits' direction
    under ``p``, never above 1/2, so any ``lr < 4`` lowers the loss at every step.
    """
    q = _old_probs(q)
    curvature = torch.linalg.eigvalsh(torch.diag(q) - torch.outer(q, q))  # (K,), ascending
    return float(2.0 / curvature[-1])


def descend_shared(p_old, scores, features, method: str, lr: float, epochs: int, eta=1.0):
    """Several groups on one parameter vector: logits ``log p_old_g + Phi_g theta``, theta from 0.

    ``p_old`` and ``scores`` are (G, K), ``features`` (G, K, d). Each epoch takes the
    groups' closed-form logit gradients ``g_g`` (:func:`group_gradient`) and steps
    ``theta <- theta - (lr / G) sum_g Phi_g^T g_g``, the losses averaged over groups as
    ``tpo_loss`` does. Returns the probabilities (E + 1, G, K) and each group's own logit
    gradient at each epoch (E, G, K): a group moves through the others' steps even where
    its own gradient is zero.
    """
    _check_descent((method,), (lr,), epochs)
    p_old = torch.as_tensor(p_old, dtype=torch.float64)
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if p_old.dim() != 2 or scores.shape != p_old.shape:
        raise ValueError(
            f"p_old and scores must both be (G, K), got {tuple(p_old.shape)} and "
            f"{tuple(scores.shape)}"
        )
    log_p_old = torch.stack([_old_probs(row) for row in p_old]).log()  # (G, K)
    phi = _features(features, p_old.shape[1], p_old.shape[0])  # (G, K, d)
    q = tpo_target(log_p_old, scores, check_eta(eta))  # (G, K)
    advantages = grpo_advantages(scores)  # (G, K)
    theta = torch.zeros(phi.shape[-1], dtype=torch.float64)  # (d,)
    probs, grads = [log_p_old.exp()], []
    for _ in range(epochs):
        logits = log_p_old + phi @ theta  # (G, K)
        grad = group_gradient(method, logits, log_p_old, q, advantages)  # (G, K)
        theta = theta - lr * torch.einsum("gkd,gk->d", phi, grad) / len(grad)
        probs.append(torch.softmax(log_p_old + phi @ theta, -1))
        grads.append(grad)
    return torch.stack(probs), torch.stack(grads)
