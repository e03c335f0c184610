"""One frozen rollout batch, many epochs: notebook 01's picture on a real transformer.

:func:`refit` copies a model and takes one method's update on one batch for E
epochs (the same loss and optimisers as :func:`tpo_core.tokens.train.train`);
:func:`replay` records after every epoch where each group's policy has gone
(:class:`tpo_core.objectives.Replay`). A *group* is a prompt's K answers
(sequence methods) or a prefix state's K next-token candidates (token
methods); its policy is the softmax of the candidates' log-probabilities.
"""

from __future__ import annotations

import copy

import torch

from tpo_core.objectives import Replay
from tpo_core.tokens.algorithms import get_algorithm
from tpo_core.tokens.model import TinyTransformer
from tpo_core.tokens.rollouts import SequenceBatch, TokenBatch
from tpo_core.tokens.train import TrainConfig, loss_function, optimizers_for


def group_log_probs(model: TinyTransformer, batch) -> torch.Tensor:
    """Each group's K candidate log-probabilities under ``model``: (B, K) or (B, H, K)."""
    if isinstance(batch, SequenceBatch):
        return batch.new_log_probs(model).sum(-1)  # (B, K): l = log pi(y | x)
    return batch.new_log_probs(model)  # (B, H, K): one group per prefix state


def refit(
    config: TrainConfig,
    model: TinyTransformer,
    batch,
    epochs: int,
    each_epoch=None,
    optimizers: list | None = None,
):
    """A copy of ``model`` after ``epochs`` epochs of ``config.method``'s update on one frozen
    ``batch``, with fresh optimisers (the training loop's update of one episode when
    ``epochs`` is the method's own), or with a copy of ``optimizers``, the ones that trained
    ``model`` (a run's ``TrainResult.optimizers``: their momentum carries on); ``each_epoch(copy)``
    runs before the first epoch and after each one. ``model`` and ``optimizers`` are left
    untouched."""
    engine = get_algorithm(config.method)
    kind = {"sequence": SequenceBatch, "token": TokenBatch}.get(engine.rollout)
    if kind is None:
        raise ValueError(f"replay needs a grouped method; {config.method!r} samples one answer")
    if not isinstance(batch, kind):
        raise ValueError(
            f"{config.method!r} trains on a {kind.__name__}, got {type(batch).__name__}"
        )
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if optimizers is None:
        trained = copy.deepcopy(model)
        optimizers = optimizers_for(config, trained)
    else:  # copied together, so the optimisers' state follows the copied weights
        trained, optimizers = copy.deepcopy((model, optimizers))
    loss = loss_function(config)
    for epoch in range(epochs + 1):
        if epoch:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss(trained, batch).backward()
            for opt in optimizers:
                opt.step()
        if each_epoch is not None:
            each_epoch(trained)
    return trained


def replay(
    config: TrainConfig,
    model: TinyTransformer,
    batch,
    epochs: int,
    optimizers: list | None = None,
) -> Replay:
    """Run ``epochs`` epochs of ``config.method``'s update on one frozen ``batch``.

    ``model`` is left untouched (a copy trains, with fresh optimisers, or with a copy of
    ``optimizers``: see :func:`refit`); the
    batch must be the kind the method trains on (:class:`SequenceBatch` with
    K > 1 answers, or :class:`TokenBatch`).
    """
    history = []

    def record(trained: TinyTransformer) -> None:
        with torch.no_grad():
            history.append(group_log_probs(trained, batch))

    refit(config, model, batch, epochs, record, optimizers)
    if isinstance(batch, SequenceBatch):
        old, scores = batch.old_log_probs.sum(-1), batch.scores
    else:
        old, scores = batch.old_log_probs, batch.rewards
    return Replay.from_epochs(config.method, old, scores, history, config.eta)
