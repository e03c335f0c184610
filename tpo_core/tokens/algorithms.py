"""The methods of the token tasks, one short loss function each, and a registry by name.

Every loss takes the model and a rollout batch (frozen snapshot) and returns
the scalar to minimise for one epoch; its settings (TPO's ``eta``, a clip range, a
KL weight) default to the method's row in :mod:`tpo_core.methods`, which also says
which rollout each method needs and how many epochs it reuses a batch for (4 in the
paper's transformer experiments, except DG's single epoch). :data:`ALGORITHMS` holds
exactly the catalogue's ``tokens`` stage.

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

from tpo_core.methods import METHODS, Method, get_method, registry
from tpo_core.objectives import (
    SEQUENCE_LOSSES,
    GroupBatch,
    dg_loss,
    grpo_advantages,
    grpo_loss,
    pg_loss,
    ppo_loss,
    tpo_loss,
    tpo_target,
)
from tpo_core.tokens.model import TinyTransformer
from tpo_core.tokens.rollouts import SequenceBatch, TokenBatch


def position_advantages(batch: SequenceBatch) -> torch.Tensor:
    """``A_t = r_t - mean over the batch of r_t`` at each answer position."""
    return batch.rewards - batch.rewards.mean((0, 1), keepdim=True)  # (B, K = 1, H)


def pg(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """PG (REINFORCE with a per-position baseline): ``-A_t log pi(y_t)`` per token."""
    return pg_loss(batch.new_log_probs(model), position_advantages(batch))


def dg(model: TinyTransformer, batch: SequenceBatch) -> torch.Tensor:
    """Delightful PG: REINFORCE gated by ``sigmoid(A_t * surprisal_t)``."""
    return dg_loss(batch.new_log_probs(model), position_advantages(batch))


def ppo(model: TinyTransformer, batch: SequenceBatch, clip_low=0.2, clip_high=0.2) -> torch.Tensor:
    """PPO: clipped surrogate per token on the position-baseline advantages (a symmetric clip)."""
    if clip_low != clip_high:
        raise ValueError("ppo's clip is symmetric: clip_low must equal clip_high")
    new, old = batch.new_log_probs(model), batch.old_log_probs
    return ppo_loss(new, old, position_advantages(batch), clip_eps=clip_low)


def group_batch(model: TinyTransformer, batch: SequenceBatch) -> GroupBatch:
    """The sequence-level contract (:class:`~tpo_core.objectives.GroupBatch`) of ``batch``:
    the answers' current and snapshot token log-probs (B, K, H) and their scores (B, K)."""
    return GroupBatch(batch.new_log_probs(model), batch.old_log_probs, batch.scores)


def informative_groups(scores: torch.Tensor) -> torch.Tensor:
    """Groups whose candidates do not all score the same, (B,) bool: the only ones with signal."""
    return scores.amax(-1) > scores.amin(-1)


def sequence_method(name: str) -> Callable:
    """``loss(model, batch, **settings)`` of the sequence-level method ``name``: its loss
    (:data:`~tpo_core.objectives.SEQUENCE_LOSSES`) on the batch's :func:`group_batch`."""
    fn = SEQUENCE_LOSSES[name]

    def loss(model: TinyTransformer, batch: SequenceBatch, **settings) -> torch.Tensor:
        return fn(group_batch(model, batch), **(METHODS[name].settings | settings)).loss

    loss.__name__, loss.__doc__ = name, fn.__doc__
    return loss


def tpo_skipping_unanimous(name: str) -> Callable:
    """``loss(model, batch, eta, skip_unanimous=True)`` of TPO (or its no-anchor ablation), the
    model run on the groups that are not unanimous only.

    Exact for TPO, with or without its anchor: a unanimous group holds K copies of one
    answer, which have one log-probability whatever the parameters, so its group policy
    ``p`` is uniform; they score the same, so ``u = 0`` and its target is uniform too
    (``q = p_old``, or ``softmax(0)``). Its loss is ``log K`` and its gradient zero, so it
    is added as ``log K`` and the mean stays over all B groups. Not so for GRPO: its k3 KL
    to the snapshot still pulls once the policy has moved (the K copies share one ratio,
    which leaves 1 after the first epoch).
    """
    fn = SEQUENCE_LOSSES[name]

    def loss(model, batch: SequenceBatch, eta: float = 1.0, skip_unanimous: bool = True):
        b, k, _ = batch.answers.shape
        if not (skip_unanimous and batch.unanimous.any()):
            return fn(group_batch(model, batch), eta).loss
        part = batch.without_unanimous
        run = part.answers.shape[0]  # groups the model runs on
        return (run * fn(group_batch(model, part), eta).loss + (b - run) * math.log(k)) / b

    loss.__name__, loss.__doc__ = name, fn.__doc__
    return loss


def tpo_token(model: TinyTransformer, batch: TokenBatch, eta: float = 1.0) -> torch.Tensor:
    """TPO per prefix state: a target over the K next-token candidates of each state."""
    q = tpo_target(batch.old_log_probs, batch.rewards, eta)  # (B, H, K): a target per state
    return tpo_loss(batch.new_log_probs(model), q)


def grpo_token(
    model: TinyTransformer, batch: TokenBatch, clip_low=0.2, clip_high=0.2, beta=0.04
) -> torch.Tensor:
    """GRPO per prefix state: candidates' rewards z-scored within the state's group."""
    if clip_low != clip_high:
        raise ValueError("grpo_token's clip is symmetric: clip_low must equal clip_high")
    advantages = grpo_advantages(batch.rewards)
    new, old = batch.new_log_probs(model), batch.old_log_probs
    return grpo_loss(new, old, advantages, beta=beta, clip_eps=clip_low)


@dataclass(frozen=True)
class Algorithm:
    """A method as the token engine runs it: the catalogue's row and its loss here."""

    name: str
    loss: Callable  # loss(model, batch, **settings) -> scalar

    @property
    def method(self) -> Method:
        return METHODS[self.name]

    @property
    def rollout(self) -> str:  # "single" (K = 1), "sequence" (K answers per prompt) or "token"
        return self.method.family

    @property
    def epochs(self) -> int:
        return self.method.epochs

    @property
    def tempered(self) -> bool:  # takes TPO's temperature eta
        return self.method.tempered

    @property
    def grouped(self) -> bool:
        return self.rollout != "single"


_LOSSES = {
    "pg": pg,
    "dg": dg,
    "ppo": ppo,
    "tpo_token": tpo_token,
    "grpo_token": grpo_token,
    **{name: sequence_method(name) for name in SEQUENCE_LOSSES},
    **{name: tpo_skipping_unanimous(name) for name in ("tpo", "tpo_no_anchor")},
}
ALGORITHMS: dict[str, Algorithm] = {
    name: Algorithm(name, loss) for name, loss in registry("tokens", _LOSSES).items()
}


def get_algorithm(name: str) -> Algorithm:
    return ALGORITHMS[get_method(name, "tokens").name]
