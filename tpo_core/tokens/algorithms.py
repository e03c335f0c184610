"""The methods of the token tasks, one short loss function each, and a registry by name.

Every loss takes the model and a rollout batch (frozen snapshot) and returns
the scalar to minimise for one epoch (TPO's variants also take their
temperature ``eta``); :data:`ALGORITHMS` says which rollout
each method needs and how many epochs it reuses a batch for (4 in the paper's transformer
experiments, except DG's single epoch).

Single-sample methods (``pg``, ``dg``, ``ppo``) use one answer per
prompt and per-token advantages ``A_t = r_t - mean_b r_t`` (the batch mean
reward at the same answer position). Sequence-level grouped methods use K
answers per prompt scored by their mean token reward, and treat each answer
as one candidate with log-probability ``l = log pi(y|x)``, the sum of its
token log-probabilities: TPO's group logits and GRPO's ratio and KL are all
formed from it, so the two see exactly the same ``l`` and differ only in the
loss. Token-level methods use K candidates per prefix state scored by their
token reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tpo_core.objectives import (
    dg_loss,
    group_pg_loss,
    grpo_advantages,
    grpo_loss,
    pg_loss,
    ppo_loss,
    tpo_loss,
    tpo_target,
    tpo_target_no_anchor,
)
from tpo_core.tokens.model import TinyTransformer
from tpo_core.tokens.rollouts import SequenceBatch, TokenBatch

GRPO_BETA = 0.04


def position_advantages(batch: SequenceBatch) -> torch.Tensor:
    """``A_t = r_t - mean over the batch of r_t`` at each answer position."""
    return batch.rewards - batch.rewards.mean((0, 1), keepdim=True)  # (B, K = 1, H)


def pg(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """PG (REINFORCE with a per-position baseline): ``-A_t log pi(y_t)`` per token."""
    return pg_loss(batch.new_log_probs(model), position_advantages(batch))


def dg(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """Delightful PG: REINFORCE gated by ``sigmoid(A_t * surprisal_t)``."""
    return dg_loss(batch.new_log_probs(model), position_advantages(batch))


def ppo(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """PPO: clipped surrogate per token on the position-baseline advantages."""
    return ppo_loss(batch.new_log_probs(model), batch.old_log_probs, position_advantages(batch))


def _grpo_on_answers(new, old, scores, beta: float) -> torch.Tensor:
    """GRPO's loss with each answer as one candidate, ``l = log pi(y|x)`` summed over tokens."""
    return grpo_loss(new.sum(-1), old.sum(-1), grpo_advantages(scores), beta=beta)


def _grpo(model: TinyTransformer, batch: SequenceBatch, beta: float) -> torch.Tensor:
    return _grpo_on_answers(batch.new_log_probs(model), batch.old_log_probs, batch.scores, beta)


def grpo(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """GRPO on whole answers: z-scored advantages, clipped surrogate and k3 KL to the snapshot
    (beta 0.04), with the answer's ratio ``rho = pi(y|x) / pi_old(y|x)``."""
    return _grpo(model, batch, GRPO_BETA)


def grpo_no_kl(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """GRPO without its KL penalty (beta = 0)."""
    return _grpo(model, batch, 0.0)


def grpo_per_token(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """Variant: GRPO with a ratio, clip and KL per token, as LLM trainers form them.

    Each answer's advantage is repeated over its tokens and the loss is the
    mean over tokens. The clip then limits every token's ratio to
    ``[0.8, 1.2]`` instead of the answer's, so an answer's probability can
    move by up to ``1.2^H`` per batch rather than ``1.2``.
    """
    advantages = grpo_advantages(batch.scores)[..., None]  # (B, K, 1): one per answer
    return grpo_loss(batch.new_log_probs(model), batch.old_log_probs, advantages, beta=GRPO_BETA)


def informative_groups(scores: torch.Tensor) -> torch.Tensor:
    """Groups whose candidates do not all score the same, (B,) bool: the only ones with signal."""
    return scores.amax(-1) > scores.amin(-1)


def grpo_masked(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """Ablation: GRPO averaged over informative groups only.

    Zero-variance groups (all fail, or all succeed) are dropped from the loss,
    their KL term included, so the surviving groups get the whole step.
    """
    keep = informative_groups(batch.scores)
    new = batch.new_log_probs(model)
    if not keep.any():
        return new.sum() * 0.0  # nothing to learn from: a zero loss that still has a graph
    return _grpo_on_answers(new[keep], batch.old_log_probs[keep], batch.scores[keep], GRPO_BETA)


def _tpo_on_answers(
    model: TinyTransformer, batch: SequenceBatch, target: Callable, skip_unanimous: bool
) -> torch.Tensor:
    """TPO's cross-entropy ``-(1/B) sum_groups sum_i q_i log p_i`` with ``q = target(batch)``;
    with ``skip_unanimous`` the model runs on the groups that are not unanimous only.

    Exact for TPO, with or without its anchor: a unanimous group holds K copies of one
    answer, which have one log-probability whatever the parameters, so its group policy
    ``p`` is uniform; they score the same, so ``u = 0`` and its target is uniform too
    (``q = p_old``, or ``softmax(0)``). Its loss is ``log K`` and its gradient zero, so it
    is added as ``log K`` and the mean stays over all B groups. Not so for GRPO: its k3 KL
    to the snapshot still pulls once the policy has moved (the K copies share one ratio,
    which leaves 1 after the first epoch).
    """
    b, k, _ = batch.answers.shape
    if not (skip_unanimous and batch.unanimous.any()):
        return tpo_loss(batch.new_log_probs(model).sum(-1), target(batch))
    part = batch.without_unanimous
    run = part.answers.shape[0]  # groups the model runs on
    loss = tpo_loss(part.new_log_probs(model).sum(-1), target(part))
    return (run * loss + (b - run) * math.log(k)) / b


def tpo(
    model: TinyTransformer, batch: SequenceBatch, eta: float = 1.0, skip_unanimous: bool = True
) -> torch.Tensor:
    """TPO: ``q = softmax(log_softmax(l_old) + u / eta)`` over the K answers; cross-entropy.

    Unanimous groups are skipped, exactly (:func:`_tpo_on_answers`)."""

    def target(part: SequenceBatch) -> torch.Tensor:  # (G, K) over whole answers
        return tpo_target(part.old_log_probs.sum(-1), part.scores, eta)

    return _tpo_on_answers(model, batch, target, skip_unanimous)


def tpo_no_anchor(
    model: TinyTransformer, batch: SequenceBatch, eta: float = 1.0, skip_unanimous: bool = True
) -> torch.Tensor:
    """Ablation: TPO's target without ``p_old``, ``q = softmax(u / eta)``."""

    def target(part: SequenceBatch) -> torch.Tensor:
        return tpo_target_no_anchor(part.scores, eta)

    return _tpo_on_answers(model, batch, target, skip_unanimous)


def group_pg(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """Ablation: the same ``u`` as scalar REINFORCE weights, ``-sum_i u_i log pi(y_i)``."""
    return group_pg_loss(batch.new_log_probs(model).sum(-1), batch.scores)


def tpo_token(model: TinyTransformer, batch: TokenBatch, eta: float = 1.0) -> torch.Tensor:
    """TPO per prefix state: a target over the K next-token candidates of each state."""
    q = tpo_target(batch.old_log_probs, batch.rewards, eta)  # (B, H, K): a target per state
    return tpo_loss(batch.new_log_probs(model), q)


def grpo_token(model: TinyTransformer, batch: TokenBatch) -> torch.Tensor:
    """GRPO per prefix state: candidates' rewards z-scored within the state's group."""
    advantages = grpo_advantages(batch.rewards)
    return grpo_loss(batch.new_log_probs(model), batch.old_log_probs, advantages, beta=GRPO_BETA)


@dataclass(frozen=True)
class Algorithm:
    name: str
    loss: Callable
    rollout: str  # "single" (K = 1), "sequence" (K answers per prompt) or "token"
    epochs: int
    tempered: bool = False  # takes TPO's temperature eta

    @property
    def grouped(self) -> bool:
        return self.rollout != "single"


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in [
        Algorithm("pg", pg, "single", 4),
        Algorithm("dg", dg, "single", 1),
        Algorithm("ppo", ppo, "single", 4),
        Algorithm("grpo", grpo, "sequence", 4),
        Algorithm("grpo_no_kl", grpo_no_kl, "sequence", 4),
        Algorithm("grpo_masked", grpo_masked, "sequence", 4),
        Algorithm("grpo_per_token", grpo_per_token, "sequence", 4),
        Algorithm("tpo", tpo, "sequence", 4, tempered=True),
        Algorithm("tpo_no_anchor", tpo_no_anchor, "sequence", 4, tempered=True),
        Algorithm("group_pg", group_pg, "sequence", 4),
        Algorithm("tpo_token", tpo_token, "token", 4, tempered=True),
        Algorithm("grpo_token", grpo_token, "token", 4),
    ]
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
