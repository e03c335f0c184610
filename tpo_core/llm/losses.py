"""The policy loss of one micro-batch of whole groups: TPO or per-token GRPO, plus the k3 KL."""

from __future__ import annotations

import torch

from tpo_core.llm.config import RLVRConfig
from tpo_core.objectives import (
    grpo_advantages,
    grpo_loss,
    kl_k3,
    masked_mean,
    sequence_log_probs,
    tpo_loss,
    tpo_target,
)


def rlvr_loss(
    config: RLVRConfig,
    new: torch.Tensor,
    old: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    ref: torch.Tensor | None = None,
    total_groups: int | None = None,
    total_tokens: int | None = None,
) -> torch.Tensor:
    """One micro-batch of whole groups' share of the step's policy loss.

    ``new``, ``old``, ``ref``: per-token log-probs (G*K, T); ``rewards`` (G, K);
    ``mask`` (G*K, T) marks completion tokens. TPO fits the group target over
    sequence log-probs (a mean over groups); ``grpo_per_token`` applies the
    clipped surrogate per token to the group z-scored advantages (a mean over
    tokens). Both add ``beta * k3 KL`` to ``ref`` (a mean over tokens). Means
    are over the whole step: ``total_groups`` groups and ``total_tokens``
    completion tokens (default: this micro-batch's), so how the step is cut
    into micro-batches changes nothing.
    """
    g, k = rewards.shape
    tokens = int(mask.sum())
    group_share = g / (total_groups or g)
    token_share = tokens / (total_tokens or tokens)
    if config.loss == "tpo":
        seq_new = sequence_log_probs(new, mask).view(g, k)  # (G, K): log pi(y|x) per completion
        seq_old = sequence_log_probs(old, mask).view(g, k)
        loss = group_share * tpo_loss(seq_new, tpo_target(seq_old, rewards, config.eta))
    else:
        advantages = grpo_advantages(rewards).view(g * k, 1)  # (G*K, 1), on every token
        surrogate = grpo_loss(new, old, advantages, beta=0.0, clip_eps=config.clip_eps, mask=mask)
        loss = token_share * surrogate
    if config.beta > 0:
        loss = loss + config.beta * token_share * masked_mean(kl_k3(new, ref), mask)
    return loss
