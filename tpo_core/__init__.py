"""tpo_core: Target Policy Optimization and its baselines, for teaching and research.

The heart is three lines of math (see :mod:`tpo_core.objectives`)::

    u = standardize_scores(scores)                     # z-scores within a group
    q = softmax(log_softmax(old_log_probs) + u / eta)  # tilt the old group policy
    loss = -(q * log_softmax(log_probs)).sum(-1).mean()  # fit it by cross-entropy
"""

from tpo_core.objectives import (
    ZERO_STD,
    dg_loss,
    entropy,
    group_pg_loss,
    group_policy,
    grpo_advantages,
    grpo_loss,
    kl_divergence,
    kl_k3,
    ppo_loss,
    reinforce_loss,
    sequence_log_probs,
    standardize_scores,
    tpo_loss,
    tpo_target,
    tpo_target_no_anchor,
)

__version__ = "0.1.0"

__all__ = [
    "ZERO_STD",
    "dg_loss",
    "entropy",
    "group_pg_loss",
    "group_policy",
    "grpo_advantages",
    "grpo_loss",
    "kl_divergence",
    "kl_k3",
    "ppo_loss",
    "reinforce_loss",
    "sequence_log_probs",
    "standardize_scores",
    "tpo_loss",
    "tpo_target",
    "tpo_target_no_anchor",
]
