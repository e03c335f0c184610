"""Summaries every course stage shares: a mean over seeds, its standard error, and a bootstrap
interval.

Seeds are independent runs, so the standard error of their mean is
``s / sqrt(n)`` with ``s`` the sample standard deviation (Bessel-corrected);
a single seed has no spread to measure and gets 0. When seeds are bimodal
(a run either solves a task or sticks), a percentile bootstrap interval
says more honestly how far the mean could move.
"""

from __future__ import annotations

import math

import torch


def mean_and_se(values, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``values`` over ``dim`` (the seeds) and its standard error ``s / sqrt(n)``.

    ``values`` is a tensor or a (nested) list of numbers; both results are
    float64 tensors with ``dim`` removed (0-d for a flat list: call ``float``).
    """
    x = torch.as_tensor(values, dtype=torch.float64)
    if x.numel() == 0:
        raise ValueError("mean_and_se needs at least one value")
    n = x.shape[dim]
    mean = x.mean(dim)
    se = x.std(dim) / math.sqrt(n) if n > 1 else torch.zeros_like(mean)
    return mean, se


def bootstrap_interval(
    values, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per seed).

    Draw ``resamples`` sets of n seeds with replacement, take each set's mean,
    and return the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    those means. Seeded, so a summary printed twice is the same.
    """
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randint(len(x), (resamples, len(x)), generator=g)].mean(1)  # (resamples,)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(means, q).tolist()
    return lo, hi


def seeds_to_separate(a, b, z: float = 1.96) -> float:
    """Seeds per method at which the gap between two means would reach ``z`` standard errors.

    With sample variances ``s_a^2, s_b^2`` (one value per seed) and gap
    ``d = mean(a) - mean(b)``, the standard error of ``d`` at ``n`` seeds each is
    ``sqrt((s_a^2 + s_b^2) / n)``; solving ``|d| = z`` times that gives
    ``n = z^2 (s_a^2 + s_b^2) / d^2``. Infinite when the means are equal.
    """
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    if x.numel() < 2 or y.numel() < 2:
        raise ValueError("seeds_to_separate needs at least two seeds of each method")
    gap = float(x.mean() - y.mean())
    if gap == 0:
        return math.inf
    return z**2 * float(x.var() + y.var()) / gap**2


__all__ = ["bootstrap_interval", "mean_and_se", "seeds_to_separate"]
