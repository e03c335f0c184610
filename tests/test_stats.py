"""Seed statistics (tpo_core.stats) against their closed forms."""

import math
import statistics

import pytest
import torch

from tpo_core.stats import bootstrap_interval, mean_and_se, seeds_to_separate


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
    n = seeds_to_separate(a, b)
    gap = statistics.fmean(a) - statistics.fmean(b)
    se_at_n = math.sqrt((statistics.variance(a) + statistics.variance(b)) / n)
    assert math.isclose(abs(gap), 1.96 * se_at_n)
    assert seeds_to_separate(a, a) == math.inf
    with pytest.raises(ValueError, match="two seeds"):
        seeds_to_separate([0.1], b)
