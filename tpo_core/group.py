"""One scored group under the microscope: the target's anatomy and logit descent.

Notebook 01 is built on these functions. A *group* is K candidates with
old probabilities ``p_old`` and raw scores ``s``; the policy restricted to the
group is ``softmax(z)`` over free logits ``z``, started at ``log p_old``.

* :func:`group_view` takes the group apart: ``u``, ``q`` and the TPO gradient.
* :func:`descend_group` runs E epochs of plain gradient descent on ``z`` under
  policy gradient, the PPO/GRPO clipped surrogate, or TPO, and records where
  each goes. PG's loss has no minimum on the simplex (its gradient ``-A/K``
  never shrinks), the clipped surrogate stops wherever its ratio leaves the
  trust region, and TPO's loss is minimised exactly at ``q``.
* :func:`pg_endpoint` is PG's end point in closed form; :func:`endpoint_map` and
  :func:`group_panel` sweep learning rates, epochs and groups.
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


CLIP_EPS = 0.2
"""The clipped surrogate's trust region, ``|p_i / p_old_i - 1| <= 0.2``, as in PPO and GRPO."""


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


def target_family(view: GroupView, points: int = 60) -> torch.Tensor:
    """The targets ``softmax(log p_old + t u)`` for ``t = 1 / eta`` from 0 to 20, (points, K).

    With free logits, PG after E epochs at learning rate lr sits exactly on the
    target of ``t = lr E / K`` (:func:`pg_endpoint`): this family is the road PG walks.
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


def _check_descent(methods, lrs, epochs) -> None:
    unknown = [m for m in methods if m not in DESCENT_METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method {unknown!r}; choose from {', '.join(DESCENT_METHODS)}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not all(lr > 0 for lr in lrs):
        raise ValueError(f"lr must be positive, got {list(lrs)!r}")


def _feature_kernel(features, k: int) -> torch.Tensor:
    """``Phi Phi^T`` (K, K): how a parameter step on the group moves its logits."""
    if features is None:
        return torch.eye(k, dtype=torch.float64)
    phi = torch.as_tensor(features, dtype=torch.float64)
    if phi.dim() != 2 or phi.shape[0] != k or not torch.isfinite(phi).all():
        raise ValueError(
            f"features must be a finite (K, d) matrix with K = {k}, got shape {tuple(phi.shape)}"
        )
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
    probs = torch.stack(probs, 2)
    kl = kl_divergence(view.q.expand_as(probs), probs.clamp_min(1e-300))
    return view, probs, torch.stack(grad_norms, 2), kl


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

    Steps use :func:`group_gradient`'s closed forms, which keeps a 50-epoch
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


@dataclass(frozen=True)
class EndpointMap:
    """``kl[method]`` (L, E): ``KL(q || p)`` after ``epochs[j]`` steps at rate ``lrs[i]``."""

    lrs: list[float]
    epochs: list[int]
    kl: dict[str, torch.Tensor]


def endpoint_map(
    p_old, scores, lrs, epochs, methods=DESCENT_METHODS, eta: float = 1.0, features=None
) -> EndpointMap:
    """Distance to the target over a grid of learning rates and epoch counts, per method.

    One descent per learning rate to the largest epoch count, read off at
    each count. PG's zero is the line ``lr E = K / eta`` (see
    :func:`pg_endpoint`); TPO's is every cell with enough ``lr E`` to arrive.
    """
    lrs, epochs = [float(x) for x in lrs], [int(e) for e in epochs]
    if not lrs or not epochs or min(epochs) < 1:
        raise ValueError("lrs and epochs must be non-empty, with epochs >= 1")
    _, _, _, kl = _descend(p_old, scores, methods, lrs, max(epochs), eta, features)
    kl = kl[:, :, epochs]  # (L, M, len(epochs))
    return EndpointMap(lrs=lrs, epochs=epochs, kl={m: kl[:, i] for i, m in enumerate(methods)})


@dataclass(frozen=True)
class GroupPanel:
    """Many random groups, each with its own features, trained for the same epochs.

    Group ``g`` is ``(p_old[g], scores[g])`` with features ``features[g]``
    (K, d); ``kl[method]`` is (G, L): ``KL(q_g || p_g)`` at the end, per group
    and learning rate ``lrs[i]``. :meth:`best_lr` is each group's own best.
    """

    lrs: list[float]
    epochs: int
    p_old: torch.Tensor  # (G, K)
    scores: torch.Tensor  # (G, K)
    features: torch.Tensor  # (G, K, d)
    kl: dict[str, torch.Tensor]

    def best_lr(self, method: str) -> list[float]:
        """The learning rate (from ``lrs``) with the smallest final KL, group by group."""
        return [self.lrs[i] for i in self.kl[method].argmin(-1).tolist()]


def group_panel(
    groups: int = 20,
    k: int = 5,
    lrs=None,
    epochs: int = 100,
    methods=("pg", "tpo"),
    feature_dim: int = 8,
    eta: float = 1.0,
    seed: int = 0,
) -> GroupPanel:
    """Train ``groups`` random groups (:func:`random_group` seeds ``seed, seed + 1, ...``).

    Each group's candidates share ``feature_dim`` parameters through random
    features ``Phi_g ~ N(0, 1 / d)``, as a network's outputs share weights:
    then PG's endpoint ``Phi Phi^T A`` depends on the group, so does its best
    learning rate, while TPO's fixed point ``Phi^T (p - q) = 0`` is ``p = q``
    whenever ``Phi_g`` has rank K.
    """
    if not (isinstance(groups, int) and groups >= 1):
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if not (isinstance(feature_dim, int) and feature_dim >= k):
        raise ValueError(f"feature_dim must be an integer >= k = {k}, got {feature_dim!r}")
    lrs = [float(x) for x in (lrs if lrs is not None else torch.logspace(-2, 0.5, 26).tolist())]
    draws = torch.Generator().manual_seed(seed)
    features = torch.randn(groups, k, feature_dim, generator=draws, dtype=torch.float64)
    features = features / feature_dim**0.5
    drawn = [random_group(k, seed + g) for g in range(groups)]
    p_old = torch.stack([p for p, _ in drawn])  # (G, K)
    scores = torch.stack([s for _, s in drawn])  # (G, K)
    ends = [_descend(p_old[g], scores[g], methods, lrs, epochs, eta, features[g])[3][:, :, -1]
            for g in range(groups)]  # fmt: skip
    kl = torch.stack(ends)  # (G, L, M): KL(q_g || p_g) at the end
    return GroupPanel(
        lrs=lrs, epochs=epochs, p_old=p_old, scores=scores, features=features,
        kl={m: kl[:, :, i] for i, m in enumerate(methods)},
    )  # fmt: skip


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
