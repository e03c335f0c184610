"""Bandits (notebooks 02-03): exact and sampled tabular updates, and a neural contextual bandit.

:mod:`~tpo_core.bandits.tabular` holds the single- and multi-context bandits
with exact logit tables and every method's ``beta(p)``;
:mod:`~tpo_core.bandits.neural` the classifier trained from right/wrong feedback;
:mod:`~tpo_core.bandits.mechanism` what one sample asks of that classifier's logits.
"""

from tpo_core.bandits import mechanism, neural
from tpo_core.bandits.tabular import (
    MULTI_CONTEXT_METHODS,
    SINGLE_CONTEXT_METHODS,
    BanditCurves,
    all_fail_step,
    batch_update,
    beta_coefficient,
    context_error,
    exact_update,
    expected_update,
    run_multi_context,
    run_single_context,
    sampled_update,
    step_budget,
    tpo_lambda,
    update_size,
)

__all__ = [
    "MULTI_CONTEXT_METHODS",
    "SINGLE_CONTEXT_METHODS",
    "BanditCurves",
    "all_fail_step",
    "batch_update",
    "beta_coefficient",
    "context_error",
    "exact_update",
    "expected_update",
    "mechanism",
    "neural",
    "run_multi_context",
    "run_single_context",
    "sampled_update",
    "step_budget",
    "tpo_lambda",
    "update_size",
]
