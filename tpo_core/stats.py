"""Summaries every course stage shares: a mean over seeds, its standard error, a bootstrap
interval, the seeds a gap needs, tests (rank sum, difference of means, two proportions), and
when a learning curve solved and relapsed.

Seeds are independent runs, so the standard error of their mean is
``s / sqrt(n)`` with ``s`` the sample standard deviation (Bessel-corrected);
a single seed has no spread to measure and gets 0. When seeds are bimodal
(a run either solves a task or sticks), a percentile bootstrap interval
says more honestly how far the mean could move.
"""

from __future__ import annotations

import math
from statistics import NormalDist

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


def gap_interval(
    a, b, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)``, each sample's seeds resampled on
    their own. When it excludes 0, the gap is separated at that level."""
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    if x.numel() == 0 or y.numel() == 0:
        raise ValueError("gap_interval needs at least one value of each sample")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    g = torch.Generator().manual_seed(seed)
    gaps = x[torch.randint(len(x), (resamples, len(x)), generator=g)].mean(1) - y[
        torch.randint(len(y), (resamples, len(y)), generator=g)
    ].mean(1)  # (resamples,)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(gaps, q).tolist()
    return lo, hi


def compare_seeds(name_a: str, a, name_b: str, b, scale: float = 100.0, unit: str = "%") -> str:
    """One sentence that reads two methods' per-seed results: each mean with its 95% bootstrap
    interval, the gap's 95% interval (separated when it excludes 0), the rank-sum test's
    p-value, and the seeds per method a test would need to detect the gap with 80% power.
    Values are multiplied by ``scale`` for printing (fractions as percentages by default)."""
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    (lo_a, hi_a), (lo_b, hi_b) = bootstrap_interval(x), bootstrap_interval(y)
    lo, hi = gap_interval(x, y)
    separated = lo > 0 or hi < 0
    needed = seeds_to_separate(x, y) if len(x) > 1 and len(y) > 1 else math.inf
    # whole seeds, and at least two: one seed has no spread to test against
    needed = "never (equal means)" if math.isinf(needed) else max(2, math.ceil(needed))
    return (
        f"{name_a} {scale * float(x.mean()):.1f}{unit} [{scale * lo_a:.1f}, {scale * hi_a:.1f}] "
        f"({len(x)} seeds) against {name_b} {scale * float(y.mean()):.1f}{unit} "
        f"[{scale * lo_b:.1f}, {scale * hi_b:.1f}] ({len(y)} seeds): the gap's 95% interval "
        f"[{scale * lo:.1f}, {scale * hi:.1f}] {'excludes' if separated else 'includes'} 0 "
        f"({'separated' if separated else 'not separated'}); rank-sum p = "
        f"{rank_sum_test(x, y):.3f}; seeds per method to detect this gap with 80% power: "
        f"{needed}"
    )


def seeds_to_separate(a, b, z: float = 1.96, power: float = 0.8) -> float:
    """Seeds per method at which a test at ``z`` would detect the gap between two means with
    probability ``power``.

    With sample variances ``s_a^2, s_b^2`` (one value per seed) and gap
    ``d = mean(a) - mean(b)``, the standard error of ``d`` at ``n`` seeds each is
    ``sqrt((s_a^2 + s_b^2) / n)``. The estimated gap is then roughly normal around ``d``;
    it clears ``z`` standard errors with probability ``power`` when
    ``|d| = (z + z_power) SE``, ``z_power`` the standard normal's ``power`` quantile (0.84 at
    80%): ``n = (z + z_power)^2 (s_a^2 + s_b^2) / d^2``. With ``power = 0.5``, ``z_power = 0``
    and the gap is detected only half the time. Infinite when the means are equal.
    """
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    if x.numel() < 2 or y.numel() < 2:
        raise ValueError("seeds_to_separate needs at least two seeds of each method")
    if not 0 < power < 1:
        raise ValueError(f"power must be between 0 and 1, got {power}")
    gap = float(x.mean() - y.mean())
    if gap == 0:
        return math.inf
    z_power = NormalDist().inv_cdf(power)
    return (z + z_power) ** 2 * float(x.var() + y.var()) / gap**2


def rank_sum_test(a, b, permutations: int = 20_000, seed: int = 0) -> float:
    """Two-sided p-value of the Wilcoxon-Mann-Whitney rank-sum test that ``a`` and ``b`` (one
    value per seed) come from the same distribution, by permutation.

    The statistic is the rank sum of ``a`` in the pooled sample (ties get their mean rank);
    its distribution under the null comes from ``permutations`` random relabellings of the
    pooled seeds (seeded), and the p-value counts those at least as far from the null's mean
    as the observed one, the observed labelling included.
    """
    x, y = _two_samples("rank_sum_test", a, b)
    return _permutation_p(_mid_ranks(torch.cat([x, y])), len(x), permutations, seed)


def permutation_test(a, b, permutations: int = 20_000, seed: int = 0) -> float:
    """Two-sided p-value of the permutation test that ``a`` and ``b`` (one value per seed)
    have the same mean: the share of ``permutations`` random relabellings of the pooled seeds
    (seeded, the observed labelling included) whose difference of means is at least as large
    as the observed one. It assumes only that, under the null, the labels are exchangeable
    (independent seeds from one distribution); unlike the rank-sum test it weighs how far
    apart the values are, so a few catastrophic seeds count in full."""
    x, y = _two_samples("permutation_test", a, b)
    return _permutation_p(torch.cat([x, y]), len(x), permutations, seed)


def sign_flip_test(a, b) -> float:
    """Exact two-sided p-value of the paired test that ``a`` and ``b`` (one value each per
    seed, the same seeds in the same order) have the same mean.

    Under the null each seed's difference ``a_i - b_i`` is as likely to have either sign, so
    the p-value is the share of the ``2^n`` sign assignments whose mean difference is at least
    as far from 0 as the observed one. It assumes only independent seeds, each pair's two
    runs exchangeable under the null. On yes/no outcomes (1 or 0 per seed) it is the exact
    McNemar test: only the seeds where the two disagree count. Up to 20 seeds.
    """
    x, y = _two_samples("sign_flip_test", a, b)
    if len(x) != len(y):
        raise ValueError(f"sign_flip_test pairs seeds: got {len(x)} and {len(y)} values")
    d = (x - y)[(x - y) != 0]  # (n,) a zero difference is the same under either sign
    if len(d) > 20:
        raise ValueError(f"sign_flip_test enumerates 2^n signs: {len(d)} pairs is too many")
    bits = (torch.arange(2 ** len(d))[:, None] >> torch.arange(len(d))) & 1  # (2^n, n)
    sums = ((1 - 2 * bits) * d).sum(1)  # (2^n,) every sign assignment
    observed = abs(float(d.sum()))
    return float((sums.abs() >= observed - 1e-9 * max(1.0, observed)).double().mean())


def _two_samples(name: str, a, b) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    if x.numel() < 1 or y.numel() < 1:
        raise ValueError(f"{name} needs at least one value of each sample")
    return x, y


def _permutation_p(pooled: torch.Tensor, n: int, permutations: int, seed: int) -> float:
    """Two-sided permutation p-value of the sum of the first ``n`` of ``pooled`` (the first
    sample's scores). With the pooled total fixed, that sum is a linear function of the
    difference of means (or of mean ranks), so it serves every test above."""
    centre = n * float(pooled.mean())  # E[sum of the first sample] under the null
    observed = abs(float(pooled[:n].sum()) - centre)
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(permutations, len(pooled), generator=g).argsort(1)  # (P, n_a + n_b)
    sums = pooled[order[:, :n]].sum(1)  # (P,)
    extreme = int(((sums - centre).abs() >= observed - 1e-9 * max(1.0, observed)).sum())
    return (extreme + 1) / (permutations + 1)


def fisher_exact_test(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """Two-sided p-value of Fisher's exact test that two proportions, ``hits_a / n_a`` and
    ``hits_b / n_b`` (say, stuck seeds of two methods), are equal.

    With the margins fixed, ``hits_a`` follows a hypergeometric law under the null; the
    p-value sums the probabilities of every table no more likely than the observed one
    (relative tolerance 1e-7, as R's ``fisher.test``). It assumes independent seeds.
    """
    for name, value in (("hits_a", hits_a), ("n_a", n_a), ("hits_b", hits_b), ("n_b", n_b)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if hits_a > n_a or hits_b > n_b:
        raise ValueError(f"hits cannot exceed trials: {hits_a}/{n_a}, {hits_b}/{n_b}")
    hits, total = hits_a + hits_b, n_a + n_b

    def probability(k: int) -> float:  # P(hits_a = k) with the margins fixed
        return math.comb(n_a, k) * math.comb(n_b, hits - k) / math.comb(total, hits)

    observed = probability(hits_a)
    low, high = max(0, hits - n_b), min(hits, n_a)
    tables = (probability(k) for k in range(low, high + 1))
    return min(1.0, sum(p for p in tables if p <= observed * (1 + 1e-7)))


def _mid_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of ``x``, tied values sharing the mean of their ranks."""
    values, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)  # the highest rank each distinct value holds
    return (last - (counts - 1) / 2)[inverse]


def solved_and_relapsed(
    errors, solved: float = 0.01, relapsed: float = 0.10, window: int = 50
) -> tuple[int | None, int | None]:
    """When a learning curve first solved its task and when it first relapsed after that.

    ``solved_at`` is the first episode (1-based, the last of the window) at which the mean
    error of the last ``window`` episodes is at most ``solved``; ``relapsed_at`` the first
    later episode whose window mean is at least ``relapsed``. None where it never happened.
    """
    x = torch.as_tensor(errors, dtype=torch.float64).flatten()
    if not 1 <= window <= len(x):
        raise ValueError(f"window must be between 1 and the curve's length {len(x)}, got {window}")
    means = x.unfold(0, window, 1).mean(1)  # (E - window + 1,): episodes window..E
    done = (means <= solved).nonzero()
    if not len(done):
        return None, None
    first = int(done[0])
    back = (means[first:] >= relapsed).nonzero()
    relapse = first + int(back[0]) + window if len(back) else None
    return first + window, relapse


__all__ = [
    "bootstrap_interval",
    "compare_seeds",
    "fisher_exact_test",
    "gap_interval",
    "mean_and_se",
    "permutation_test",
    "rank_sum_test",
    "seeds_to_separate",
    "sign_flip_test",
    "solved_and_relapsed",
]
