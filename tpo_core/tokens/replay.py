"""One frozen rollout batch, many epochs: notebook 01's picture on a real transformer.

:func:`replay` copies a model, takes one method's update on one batch for E
epochs (the same loss and optimisers as :func:`tpo_core.tokens.train.train`),
and records after every epoch where each group's policy has gone. A *group*
is a prompt's K answers (sequence methods) or a prefix state's K next-token
candidates (token methods); its policy is the softmax of the candidates'
log-probabilities, ``p = softmax(l)``, and TPO's target on it is
``q = softmax(log p_old + u / eta)``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from tpo_core.objectives import kl_divergence, tpo_target
from tpo_core.tokens.algorithms import get_algorithm
from tpo_core.tokens.model import TinyTransformer
from tpo_core.tokens.rollouts import SequenceBatch, TokenBatch
from tpo_core.tokens.train import TrainConfig, loss_function, optimizers_for


@dataclass(frozen=True)
class Replay:
    """Per epoch ``e = 0..E`` (0 is the snapshot), averaged over a batch's groups.

    * ``kl_to_target``: ``KL(q || p_e)`` over informative groups (scores not all equal);
    * ``success_mass``: ``p_e`` on the best-scored candidates, informative groups;
    * ``flat_drift``: ``KL(p_0 || p_e)`` over zero-variance groups, where every
      candidate scored the same and TPO's target is ``p_0`` itself (NaN if none).

    ``target_success_mass`` is ``q``'s mass on the best-scored candidates.
    """

    algo: str
    kl_to_target: list[float]
    success_mass: list[float]
    flat_drift: list[float]
    target_success_mass: float
    informative_groups: int
    flat_groups: int


def group_log_probs(model: TinyTransformer, batch) -> torch.Tensor:
    """Each group's K candidate log-probabilities under ``model``: (B, K) or (B, H, K)."""
    if isinstance(batch, SequenceBatch):
        return batch.new_log_probs(model).sum(-1)  # (B, K): l = log pi(y | x)
    return batch.new_log_probs(model)  # (B, H, K): one group per prefix state


def _groups(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Snapshot log-probabilities and scores of every group, both (..., K)."""
    if isinstance(batch, SequenceBatch):
        return batch.old_log_probs.sum(-1), batch.scores
    return batch.old_log_probs, batch.rewards


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if values.numel() else math.nan


def replay(config: TrainConfig, model: TinyTransformer, batch, epochs: int) -> Replay:
    """Run ``epochs`` epochs of ``config.algo``'s update on one frozen ``batch``.

    ``model`` is left untouched (a copy trains, with fresh optimisers); the
    batch must be the kind the method trains on (:class:`SequenceBatch` with
    K > 1 answers, or :class:`TokenBatch`).
    """
    algo = get_algorithm(config.algo)
    kind = {"sequence": SequenceBatch, "token": TokenBatch}.get(algo.rollout)
    if kind is None:
        raise ValueError(f"replay needs a grouped method; {config.algo!r} samples one answer")
    if not isinstance(batch, kind):
        raise ValueError(f"{config.algo!r} trains on a {kind.__name__}, got {type(batch).__name__}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    trained = copy.deepcopy(model)
    optimizers = optimizers_for(config, trained)
    loss = loss_function(config)
    old, scores = _groups(batch)
    log_p_old = torch.log_softmax(old, -1)
    q = tpo_target(old, scores, config.eta)  # (..., K)
    informative = scores.amax(-1) > scores.amin(-1)  # (...,)
    best = (scores == scores.amax(-1, keepdim=True)).to(q.dtype)  # (..., K)
    kl, mass, drift = [], [], []
    for epoch in range(epochs + 1):
        if epoch:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss(trained, batch).backward()
            for opt in optimizers:
                opt.step()
        with torch.no_grad():
            log_p = torch.log_softmax(group_log_probs(trained, batch), -1)  # (..., K)
        p = log_p.exp()
        kl.append(_mean(kl_divergence(q, p)[informative]))
        mass.append(_mean((p * best).sum(-1)[informative]))
        drift.append(_mean(kl_divergence(log_p_old.exp(), p)[~informative]))
    return Replay(
        algo=config.algo, kl_to_target=kl, success_mass=mass, flat_drift=drift,
        target_success_mass=_mean((q * best).sum(-1)[informative]),
        informative_groups=int(informative.sum()), flat_groups=int((~informative).sum()),
    )  # fmt: skip
