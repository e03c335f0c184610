"""The policy loss of one micro-batch of whole groups: TPO or per-token GRPO, plus the k3 KL.

:func:`rlvr_loss_terms` returns the loss with what the training loop records
of it (the k3 KL and GRPO's clipped share), computed once; :func:`rlvr_loss`
is its scalar alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpo_core.llm.config import RLVRConfig
from tpo_core.objectives import (
    clipped_fraction,
    grpo_advantages,
    grpo_loss,
    kl_k3,
    masked_mean,
    sequence_log_probs,
    tpo_loss,
    tpo_target,
)


@dataclass
class LossTerms:
    """A micro-batch's loss and what the loop records of it (detached, over its own tokens)."""

    loss: torch.Tensor  # the micro-batch's share of the step's loss, to backpropagate
    tokens: int  # completion tokens in the micro-batch
    kl: torch.Tensor | None = None  # mean k3 KL to the reference (None without a reference)
    clipped: torch.Tensor | None = None  # share of tokens whose clip is active (GRPO only)


def rlvr_loss_terms(
    config: RLVRConfig,
    new: torch.Tensor,
    old: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    ref: torch.Tensor | None = None,
    total_groups: int | None = None,
    total_tokens: int | None = None,
) -> LossTerms:
    """One micro-batch of whole groups' share of the step's policy loss.

    ``new``, ``old``, ``ref``: per-token log-probs (G*K, T); ``rewards`` (G, K);
    ``mask`` (G*K, T) marks completion tokens. TPO fits the group target over
    sequence log-probs (a mean over groups); ``grpo_per_token`` applies the
    clipped surrogate per token to the group z-scored advantages (a mean over
    tokens). Both add ``beta * k3 KL`` to ``ref`` (a mean over tokens). Means
    are over the whole step: ``total_groups`` groups and ``total_tokens``
    completion tokens (default: this micro-batch's), so how the step is cut
    into micro-batches changes nothing. With ``ref`` the KL is measured even
    at ``beta = 0``.
    """
    if config.beta > 0 and ref is None:
        raise ValueError(f"beta = {config.beta} weighs a KL to the reference: pass ref")
    g, k = rewards.shape
    tokens = int(mask.sum())
    group_share = g / (total_groups or g)
    token_share = tokens / (total_tokens or tokens)
    clipped = None
    if config.loss == "tpo":
        seq_new = sequence_log_probs(new, mask).view(g, k)  # (G, K): log pi(y|x) per completion
        seq_old = sequence_log_probs(old, mask).view(g, k)
        loss = group_share * tpo_loss(seq_new, tpo_target(seq_old, rewards, config.eta))
    else:
        advantages = grpo_advantages(rewards).view(g * k, 1)  # (G*K, 1), on every token
        surrogate = grpo_loss(new, old, advantages, beta=0.0, clip_eps=config.clip_eps, mask=mask)
        loss = token_share * surrogate
        clipped = clipped_fraction(new, old, advantages, config.clip_eps, mask)
    kl = None if ref is None else masked_mean(kl_k3(new, ref), mask)  # mean over tokens
    if config.beta > 0:
        loss = loss + config.beta * token_share * kl
    return LossTerms(loss, tokens, None if kl is None else kl.detach(), clipped)


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
    """The loss of :func:`rlvr_loss_terms` alone, as notebook 06's step uses it."""
    terms = rlvr_loss_terms(config, new, old, rewards, mask, ref, total_groups, total_tokens)
    return terms.loss
