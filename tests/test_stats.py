"""Seed statistics (tpo_core.stats) against their closed forms."""

import itertools
import math
import statistics
from statistics import NormalDist

import pytest
import torch

from tpo_core.stats import (
    bootstrap_interval,
    compare_seeds,
    fisher_exact_test,
    gap_interval,
    mean_and_se,
    permutation_test,
    rank_sum_test,
    seeds_to_separate,
    sign_flip_test,
    solved_and_relapsed,
)


def test_mean_and_se_is_the_sample_mean_and_bessel_standard_error():
    values = [0.0, 0.1, 0.5, 0.2]
    mean, se = mean_and_se(values)
    assert math.isclose(float(mean), statistics.fmean(values))
    assert math.isclose(float(se), statistics.stdev(values) / 2)
    curves = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # 2 seeds x 2 episodes
    mean, se = mean_and_se(curves)
    assert mean.tolist() == [2.0, 4.0] and se.tolist() == pytest.approx([1.0, 2.0])
    assert float(mean_and_se([0.3])[1]) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        mean_and_se([])


def test_bootstrap_interval_brackets_the_mean_and_repeats():
    values = [0.0] * 15 + [0.9] * 5  # bimodal: solved or stuck
    lo, hi = bootstrap_interval(values)
    assert lo < statistics.fmean(values) < hi
    assert (lo, hi) == bootstrap_interval(values)  # seeded
    assert bootstrap_interval([0.2] * 6) == pytest.approx((0.2, 0.2))
    narrow = bootstrap_interval(values, level=0.5)
    assert lo <= narrow[0] <= narrow[1] <= hi
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(values, level=1.0)


def test_seeds_to_separate_solves_the_z_test_for_n():
    a, b = [0.0, 0.2, 0.1, 0.3], [0.5, 0.7, 0.4, 0.6]
    gap = statistics.fmean(a) - statistics.fmean(b)
    for power in (0.5, 0.8, 0.9):
        n = seeds_to_separate(a, b, power=power)
        se_at_n = math.sqrt((statistics.variance(a) + statistics.variance(b)) / n)
        assert math.isclose(abs(gap), (1.96 + NormalDist().inv_cdf(power)) * se_at_n)
    # at 50% power the gap sits exactly at 1.96 standard errors: half the tests miss it
    half = seeds_to_separate(a, b, power=0.5)
    assert math.isclose(half, 1.96**2 * (statistics.variance(a) + statistics.variance(b)) / gap**2)
    assert seeds_to_separate(a, a) == math.inf
    with pytest.raises(ValueError, match="two seeds"):
        seeds_to_separate([0.1], b)
    with pytest.raises(ValueError, match="power"):
        seeds_to_separate(a, b, power=1.0)


def test_seeds_to_separate_detects_the_gap_with_the_power_it_promises():
    """Simulate the z-test at the n it returns: it should reject about 80% of the time."""
    g = torch.Generator().manual_seed(0)
    mean_a, mean_b, sd = 0.0, 0.5, 1.0
    a = mean_a + sd * torch.randn(4000, generator=g, dtype=torch.float64)
    b = mean_b + sd * torch.randn(4000, generator=g, dtype=torch.float64)
    n = math.ceil(seeds_to_separate(a, b))
    trials = 4000
    x = mean_a + sd * torch.randn(trials, n, generator=g, dtype=torch.float64)
    y = mean_b + sd * torch.randn(trials, n, generator=g, dtype=torch.float64)
    z = (x.mean(1) - y.mean(1)).abs() / ((x.var(1) + y.var(1)) / n).sqrt()
    assert 0.76 < float((z > 1.96).double().mean()) < 0.86


def _exact_rank_sum_p(a, b):
    """The exact two-sided permutation p-value, by enumerating every relabelling."""
    pooled = list(a) + list(b)
    order = sorted(pooled)
    rank = {v: statistics.fmean(i + 1 for i, w in enumerate(order) if w == v) for v in pooled}
    centre = len(a) * (len(pooled) + 1) / 2
    observed = abs(sum(rank[v] for v in a) - centre)
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    far = sum(abs(sum(rank[pooled[i]] for i in s) - centre) >= observed - 1e-9 for s in splits)
    return far / len(splits)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]),
        ([1, 3, 5, 7, 9], [2, 4, 6, 8, 10]),
        ([1, 1, 2, 5], [2, 3, 3]),
    ],
)
def test_rank_sum_test_matches_the_exact_permutation_distribution(a, b):
    p = rank_sum_test(a, b, permutations=40_000)
    assert p == pytest.approx(_exact_rank_sum_p(a, b), abs=0.01)
    assert p == rank_sum_test(a, b, permutations=40_000)  # seeded
    assert rank_sum_test(b, a, permutations=40_000) == pytest.approx(p, abs=0.01)  # two-sided


def _exact_mean_p(a, b) -> float:
    """The exact two-sided permutation p-value of the difference of means, every split."""
    pooled = list(a) + list(b)
    observed = abs(statistics.fmean(a) - statistics.fmean(b))
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    far = 0
    for s in splits:
        inside = [pooled[i] for i in s]
        outside = [pooled[i] for i in range(len(pooled)) if i not in s]
        far += abs(statistics.fmean(inside) - statistics.fmean(outside)) >= observed - 1e-12
    return far / len(splits)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.0, 0.1, 0.0, 0.2, 0.0], [1.0, 0.9, 0.0, 1.0, 0.3]),
        ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]),  # 2 of the 20 splits are as extreme: p = 0.1
        ([0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0]),
    ],
)
def test_permutation_test_matches_the_exact_distribution_of_the_mean_difference(a, b):
    p = permutation_test(a, b, permutations=40_000)
    assert p == pytest.approx(_exact_mean_p(a, b), abs=0.01)
    assert p == permutation_test(a, b, permutations=40_000)  # seeded
    assert permutation_test(b, a, permutations=40_000) == pytest.approx(p, abs=0.01)


def _hypergeometric(k, n_a, n_b, hits):
    return math.comb(n_a, k) * math.comb(n_b, hits - k) / math.comb(n_a + n_b, hits)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ((3, 4, 1, 4), 34 / 70),  # Fisher's lady tasting tea: 3 of 4 right against 1 of 4
        ((4, 4, 0, 4), 2 / 70),  # all right: only the two one-sided extremes are as unlikely
        ((5, 5, 5, 5), 1.0),
    ],
)
def test_fisher_exact_test_is_the_hypergeometric_tail(table, expected):
    assert fisher_exact_test(*table) == pytest.approx(expected)


def test_fisher_exact_test_sums_every_table_no_likelier_than_the_observed():
    for hits_a, hits_b in ((2, 8), (19, 9), (18, 10)):  # stuck and relapsed seeds of 20
        hits = hits_a + hits_b
        observed = _hypergeometric(hits_a, 20, 20, hits)
        ks = range(max(0, hits - 20), min(hits, 20) + 1)
        tables = [_hypergeometric(k, 20, 20, hits) for k in ks]
        expected = sum(t for t in tables if t <= observed * (1 + 1e-7))
        assert fisher_exact_test(hits_a, 20, hits_b, 20) == pytest.approx(expected)
        assert fisher_exact_test(hits_b, 20, hits_a, 20) == pytest.approx(expected)
    with pytest.raises(ValueError, match="cannot exceed"):
        fisher_exact_test(5, 4, 0, 4)
    with pytest.raises(ValueError, match="non-negative integer"):
        fisher_exact_test(1.5, 4, 0, 4)


def test_solved_and_relapsed_reads_a_curve():
    curve = [0.9] * 100 + [0.0] * 200 + [0.5] * 100  # learns at 100, relapses at 300
    solved, relapsed = solved_and_relapsed(curve, window=50)
    assert solved == 150  # the first window of 50 solved episodes ends at episode 150
    # the 50-episode mean reaches 10% once 10 of its episodes are 0.5: episode 310
    assert relapsed == 310
    assert solved_and_relapsed([0.0] * 100, window=50) == (50, None)
    assert solved_and_relapsed([0.5] * 100, window=50) == (None, None)
    with pytest.raises(ValueError, match="window"):
        solved_and_relapsed([0.0] * 10, window=50)


def test_gap_interval_brackets_the_gap_and_tells_a_shift_from_noise():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(20, generator=g, dtype=torch.float64)
    lo, hi = gap_interval(a + 3.0, a)  # the same seeds shifted by 3: far from 0
    assert lo < 3.0 < hi and lo > 0
    b = torch.randn(20, generator=g, dtype=torch.float64)
    lo, hi = gap_interval(a, b)
    assert lo < float(a.mean() - b.mean()) < hi and lo < 0 < hi  # two draws of one distribution
    assert gap_interval(a, b) == (lo, hi)  # seeded
    assert gap_interval([0.2] * 5, [0.1] * 5) == pytest.approx((0.1, 0.1))


def test_compare_seeds_reads_the_numbers_it_is_given():
    tpo, grpo = [0.0] * 18 + [0.5, 0.5], [0.99] * 12 + [0.0] * 8
    text = compare_seeds("TPO", tpo, "GRPO", grpo)
    lo, hi = gap_interval(tpo, grpo)
    assert text.startswith("TPO 5.0% [") and "against GRPO 59.4% [" in text
    assert f"[{100 * lo:.1f}, {100 * hi:.1f}] excludes 0 (separated)" in text
    assert f"rank-sum p = {rank_sum_test(tpo, grpo):.3f}" in text
    assert f"80% power: {math.ceil(seeds_to_separate(tpo, grpo))}" in text
    close = compare_seeds("a", [0.0, 0.0, 0.0, 0.0], "b", [1.0, 1.0, 0.9, 1.0])
    assert close.endswith("80% power: 2")  # a huge gap still needs two seeds to show a spread
    assert "includes 0 (not separated)" in compare_seeds("a", [0.0, 1.0, 0.5], "b", [0.5, 0.0, 1.0])


def test_sign_flip_test_on_yes_no_outcomes_is_the_exact_mcnemar_test():
    """Pairs (1, 0) and (0, 1) are the discordant seeds; under the null each is a fair coin,
    so the two-sided p-value is the binomial tail of the rarer kind, doubled (capped at 1)."""
    a = [1] * 12 + [1] * 7 + [0] * 1  # 19 of 20 relapse under a
    b = [1] * 12 + [0] * 7 + [0] * 1  # 12 of 20 under b: 7 discordant pairs, all one way
    n, k = 7, 0
    mcnemar = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    assert sign_flip_test(a, b) == pytest.approx(mcnemar)
    a2 = [1, 1, 1, 0, 1, 0, 1, 1]
    b2 = [0, 0, 1, 1, 0, 0, 0, 1]  # discordant: 4 for a, 1 for b
    assert sign_flip_test(a2, b2) == pytest.approx(2 * (1 + 5) / 2**5)


def test_sign_flip_test_enumerates_every_sign_of_the_paired_differences():
    a, b = [0.31, 0.12, 0.50, 0.07, 0.22], [0.30, 0.02, 0.41, 0.10, 0.09]
    d = [x - y for x, y in zip(a, b, strict=True)]
    signs = list(itertools.product((1, -1), repeat=len(d)))
    extreme = sum(
        abs(sum(s * x for s, x in zip(sg, d, strict=True))) >= abs(sum(d)) - 1e-12 for sg in signs
    )
    assert sign_flip_test(a, b) == pytest.approx(extreme / len(signs))
    assert sign_flip_test(b, a) == sign_flip_test(a, b)
    assert sign_flip_test([1.0, 2.0], [1.0, 2.0]) == 1.0  # no difference at all
    with pytest.raises(ValueError, match="pairs seeds"):
        sign_flip_test([1.0, 2.0], [1.0])
