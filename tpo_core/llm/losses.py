"""The policy loss of one micro-batch of whole groups: any method of the catalogue's ``llm``
stage, on the shared sequence-level contract, plus the k3 KL to the reference.

:func:`rlvr_loss_terms` returns the loss with what the training loop records
of it (the k3 KL and the clipped share), computed once; :func:`rlvr_loss`
is its scalar alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpo_core.llm.config import LLM_METHODS, RLVRConfig
from tpo_core.methods import METHODS, registry
from tpo_core.objectives import SEQUENCE_LOSSES, GroupBatch, kl_k3, masked_mean

METHOD_LOSSES = registry("llm", {name: SEQUENCE_LOSSES[name] for name in LLM_METHODS})


@dataclass
class LossTerms:
    """A micro-batch's loss and what the loop records of it (detached, over its own tokens)."""

    loss: torch.Tensor  # the micro-batch's share of the step's loss, to backpropagate
    tokens: int  # completion tokens in the micro-batch
    kl: torch.Tensor | None = None  # mean k3 KL to the reference (None without a reference)
    clipped: torch.Tensor | None = None  # share of tokens whose clip is active (clipped methods)


def method_settings(config: RLVRConfig) -> dict:
    """The settings ``config.method`` runs with in the loop: its catalogue row's, with the
    config's ``eta`` (TPO) or ``clip_eps`` (``grpo_per_token``), ``beta = 0`` (the loop adds
    its own KL to the reference, the same term for every method) and, for Dr. GRPO, the
    constant length ``max_new_tokens``."""
    settings = dict(METHODS[config.method].settings)
    if "eta" in settings:
        settings["eta"] = config.eta
    if config.method == "grpo_per_token":
        settings |= dict(clip_low=config.clip_eps, clip_high=config.clip_eps)
    if "beta" in settings:
        settings["beta"] = 0.0
    if config.method == "dr_grpo":
        settings["length"] = config.max_new_tokens
    return settings


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
    ``mask`` (G*K, T) marks completion tokens. The method's loss
    (:data:`~tpo_core.objectives.SEQUENCE_LOSSES`) runs on their
    :class:`~tpo_core.objectives.GroupBatch` (G, K, T); ``beta * k3 KL`` to ``ref`` (a mean
    over tokens) is added for every method. Means are over the whole step: a method whose
    loss is a mean over tokens is weighted by this micro-batch's share of the step's
    ``total_tokens`` completion tokens, every other one by its share of the ``total_groups``
    groups (default: this micro-batch's), so how the step is cut into micro-batches changes
    nothing. With ``ref`` the KL is measured even at ``beta = 0``.
    """
    if config.beta > 0 and ref is None:
        raise ValueError(f"beta = {config.beta} weighs a KL to the reference: pass ref")
    g, k = rewards.shape
    t = new.shape[-1]
    tokens = int(mask.sum())
    group = GroupBatch(
        new.view(g, k, t), old.view(g, k, t), rewards, mask.view(g, k, t).bool()
    )  # (G, K, T)
    if METHODS[config.method].aggregation == "tokens":
        share = tokens / (total_tokens or tokens)
    else:
        share = g / (total_groups or g)
    out = METHOD_LOSSES[config.method](group, **method_settings(config))
    loss = share * out.loss
    token_share = tokens / (total_tokens or tokens)
    kl = None if ref is None else masked_mean(kl_k3(new, ref), mask.bool())  # mean over tokens
    if config.beta > 0:
        loss = loss + config.beta * token_share * kl
    return LossTerms(loss, tokens, None if kl is None else kl.detach(), out.clipped)


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
