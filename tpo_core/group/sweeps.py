"""Sweeps of one-group descent: a learning rate x epochs map of one group, and a panel of
random groups on shared features (notebook 01's map and panel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpo_core.group.descent import DESCENT_METHODS, _descend, random_features
from tpo_core.group.target import random_group


@dataclass(frozen=True)
class EndpointMap:
    """``kl[method]`` (L, E): ``KL(q || p)`` after ``epochs[j]`` steps at rate ``lrs[i]``."""

    lrs: list[float]
    epochs: list[int]
    kl: dict[str, torch.Tensor]

    def total_steps(self) -> torch.Tensor:
        """``lr x E`` of every run, (L, E): with free logits PG's endpoint depends on it alone."""
        lrs = torch.tensor(self.lrs, dtype=torch.float64)
        return lrs[:, None] * torch.tensor(self.epochs, dtype=torch.float64)  # (L, E)

    def on_target_steps(self, method: str, tol: float = 1e-3) -> torch.Tensor:
        """``lr x E`` of the runs of ``method`` that end within ``tol`` nats of ``q``, sorted."""
        if method not in self.kl:
            raise ValueError(f"no runs of {method!r} in this map; it has {', '.join(self.kl)}")
        return self.total_steps()[self.kl[method] < tol].sort().values


def endpoint_map(
    p_old, scores, lrs, epochs, methods=DESCENT_METHODS, eta: float = 1.0, features=None
) -> EndpointMap:
    """Distance to the target over a grid of learning rates and epoch counts, per method.

    One descent per learning rate to the largest epoch count, read off at
    each count. PG's zero is the line ``lr E = K / eta`` (see
    :func:`~tpo_core.group.pg_endpoint`); TPO's is every cell with enough ``lr E`` to arrive.
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
    features ``Phi_g ~ N(0, 1 / d)`` (:func:`random_features`), as a network's
    outputs share weights: then PG's endpoint ``Phi Phi^T A`` depends on the
    group, so does its best learning rate, while TPO's fixed point
    ``Phi^T (p - q) = 0`` is ``p = q`` whenever ``Phi_g`` has rank K (random
    features with ``d >= K`` have it).
    """
    if not (isinstance(groups, int) and groups >= 1):
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if not (isinstance(feature_dim, int) and feature_dim >= k):
        raise ValueError(f"feature_dim must be an integer >= k = {k}, got {feature_dim!r}")
    lrs = [float(x) for x in (lrs if lrs is not None else torch.logspace(-2, 0.5, 26).tolist())]
    features = random_features(groups, k, feature_dim, seed)  # (G, K, d)
    drawn = [random_group(k, seed + g) for g in range(groups)]
    p_old = torch.stack([p for p, _ in drawn])  # (G, K)
    scores = torch.stack([s for _, s in drawn])  # (G, K)
    ends = [
        _descend(p_old[g], scores[g], methods, lrs, epochs, eta, features[g])[3][:, :, -1]
        for g in range(groups)
    ]
    kl = torch.stack(ends)  # (G, L, M): KL(q_g || p_g) at the end
    return GroupPanel(
        lrs=lrs,
        epochs=epochs,
        p_old=p_old,
        scores=scores,
        features=features,
        kl={m: kl[:, :, i] for i, m in enumerate(methods)},
    )
