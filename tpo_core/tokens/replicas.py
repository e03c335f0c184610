"""Many seeds of one configuration trained together, so that on a GPU every kernel does R times
the work.

A replica is exactly what a separate run with its seed builds: the same
initial model (``torch.manual_seed(seed)``, then :class:`TinyTransformer`),
its own generator for prompts and samples, its own Muon and Adam state. The
R models' parameters are stacked along a new first axis
(``torch.func.stack_module_state``), and each pass runs the unchanged model
code under ``torch.func.vmap``. Nothing couples the replicas:

* the loss is the sum of the replicas' own losses, so replica r's gradient
  is the gradient of its own loss (no shared mean over replicas);
* Adam is elementwise, and :class:`~tpo_core.tokens.model.Muon`
  orthogonalises each (R, out, in) stack matrix by matrix;
* LayerNorm and attention act within one replica's sequences.

A replica is statistically the same run as a separate seed, not bit for
bit: under ``vmap`` attention is computed by
:func:`~tpo_core.tokens.model.explicit_attention` rather than the fused
kernel, and float rounding differs in the last digits. Sequence-level and
single-sample methods run as replicas; token-level ones train one seed at a
time.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import fields, replace

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from tpo_core.tokens.algorithms import get_algorithm
from tpo_core.tokens.model import TinyTransformer
from tpo_core.tokens.rollouts import SequenceBatch, bucket_size, padded_rows, score_answers
from tpo_core.tokens.tasks import sample_prompts
from tpo_core.tokens.train import (
    TrainConfig,
    TrainResult,
    initial_model,
    loss_function,
    optimizers_for,
    record_rollout,
)


class _Method(nn.Module):
    """Calls a method of ``model`` by name, so that ``functional_call`` can run any of them."""

    def __init__(self, model: TinyTransformer):
        super().__init__()
        self.model = model

    def forward(self, name: str, *args):
        return getattr(self.model, name)(*args)


class _Fixed(SequenceBatch):
    """One replica's batch whose current log-probs were computed for all replicas at once."""

    def __init__(self, batch: SequenceBatch, new: torch.Tensor):
        super().__init__(**{f.name: getattr(batch, f.name) for f in fields(SequenceBatch)})
        object.__setattr__(self, "new", new)

    def new_log_probs(self, model=None, distinct: bool = True) -> torch.Tensor:
        return self.new

    def subset(self, groups: torch.Tensor) -> SequenceBatch:
        return _Fixed(super().subset(groups), self.new[groups])


class Replicas:
    """R replicas of the token-task model, one per seed, with their optimisers and generators."""

    def __init__(self, config: TrainConfig, seeds: list[int]):
        if len(seeds) < 1:
            raise ValueError("replicas need at least one seed")
        config.validate()
        self.config, self.seeds = config, list(seeds)
        self.run = config.resolved
        device = self.run.device
        models = [initial_model(config, seed) for seed in self.seeds]  # as their own runs would
        base = copy.deepcopy(models[0]).to("meta")
        for block in base.blocks:
            block.explicit_attention = True  # vmap has no batching rule for the fused kernel
        self.module = _Method(base)
        stacked, _ = stack_module_state(models)
        self.params = {
            f"model.{k}": v.detach().to(device).requires_grad_() for k, v in stacked.items()
        }  # each (R, *shape)
        by_name = {n.removeprefix("model."): p for n, p in self.params.items()}
        self.optimizers = optimizers_for(config, models[0], by_name)  # on the stacks
        self.generators = [torch.Generator(device).manual_seed(s) for s in self.seeds]
        self.cfg = models[0].cfg

    def _vmapped(self, name: str, *args):
        """``model.<name>(*args)`` for every replica, each with its own parameters and inputs."""

        def one(params, *xs):
            return functional_call(self.module, params, (name, *xs))

        return vmap(one)(self.params, *args)

    @torch.no_grad()
    def rollouts(self, task: str, reward: str, batch: int, k: int) -> list[SequenceBatch]:
        """Each replica's :func:`~tpo_core.tokens.rollouts.sequence_rollouts`, sampled together.

        Every replica draws its prompts, then one token per answer row per step,
        from its own generator, in the order a separate run draws them.
        """
        length, vocab = self.cfg.length, self.cfg.vocab
        prompts = torch.stack([sample_prompts(batch, length, vocab, g) for g in self.generators])

        def prefill(params, p):  # (B, H) -> logits (B*K, V), caches as tensors
            first, caches = functional_call(self.module, params, ("_prefill", p, k))
            return first, [(c["k"], c["v"]) for c in caches]

        def step(params, token, kv):  # token (B*K, 1) -> next logits (B*K, V), caches
            caches = [dict(k=key, v=value) for key, value in kv]
            logits = functional_call(self.module, params, ("forward", token, caches))
            return logits[:, -1], [(c["k"], c["v"]) for c in caches]

        logits, kv = vmap(prefill)(self.params, prompts)  # (R, B*K, V)
        answers, log_probs = [], []
        for t in range(length):
            log_p = torch.log_softmax(logits.float(), -1)  # (R, B*K, V)
            draws = zip(log_p.exp(), self.generators, strict=True)
            token = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in draws])
            answers.append(token[..., 0])  # (R, B*K)
            log_probs.append(log_p)
            if t + 1 < length:
                logits, kv = vmap(step)(self.params, token, kv)
        answers, log_probs = torch.stack(answers, -1), torch.stack(log_probs, -2)
        return [
            score_answers(task, reward, p, a, lp, vocab)
            for p, a, lp in zip(prompts, answers, log_probs, strict=True)
        ]

    def new_log_probs(self, batches: list[SequenceBatch]) -> torch.Tensor:
        """Current log-probs of every replica's sampled tokens, (R, B, K, H), with gradients:
        one pass per distinct (prompt, answer) pair, all replicas padded to one row count."""
        b, k, h = batches[0].answers.shape
        distinct = [batch.distinct for batch in batches]
        size = bucket_size(max(len(rows) for rows, _ in distinct), b * k)
        rows = torch.stack([padded_rows(r, size) for r, _ in distinct])  # (R, U')
        flat = torch.stack([batch.answers.reshape(b * k, h) for batch in batches])  # (R, B*K, H)
        answers = flat.gather(1, rows[..., None].expand(-1, -1, h))  # (R, U', H)
        prompts = torch.stack([batch.prompts for batch in batches])  # (R, B, H)
        log_p = self._vmapped("answer_log_probs", prompts, answers, rows // k)  # (R, U', H, V)
        picked = log_p.gather(-1, answers[..., None])[..., 0]  # (R, U', H)
        return torch.stack(
            [p[inverse] for p, (_, inverse) in zip(picked, distinct, strict=True)]
        ).view(len(batches), b, k, h)

    def loss(self, batches: list[SequenceBatch], loss_fn: Callable) -> torch.Tensor:
        """The sum over replicas of each one's own loss: replica r's gradient is its own."""
        new = self.new_log_probs(batches)
        return sum(loss_fn(None, _Fixed(batch, n)) for batch, n in zip(batches, new, strict=True))

    def grad_norms(self) -> list[float]:
        """Each replica's gradient norm over all its parameters."""
        squares = sum(
            p.grad.flatten(1).square().sum(1) for p in self.params.values() if p.grad is not None
        )
        return squares.sqrt().tolist()

    def model(self, replica: int) -> TinyTransformer:
        """Replica ``replica`` as a plain :class:`TinyTransformer` (a copy, on its device)."""
        model = TinyTransformer(self.cfg).to(self.run.device)
        model.load_state_dict(
            {n.removeprefix("model."): p[replica].detach() for n, p in self.params.items()}
        )
        return model


def train_replicas(
    config: TrainConfig,
    seeds: list[int],
    callback: Callable[[int, list[TrainResult]], None] | None = None,
    progress: bool = True,
) -> list[TrainResult]:
    """:func:`~tpo_core.tokens.train.train` for every seed in ``seeds`` at once (``config.seed``
    is ignored); one :class:`TrainResult` per seed, in order.

    ``seconds_per_episode`` is the wall time of one episode of all the replicas together.
    """
    if get_algorithm(config.method).rollout == "token":
        raise ValueError(
            f"{config.method} is token-level; replicas run sequence-level and single-sample "
            "methods, so train token-level ones one seed at a time"
        )
    if config.skip_signal_free:
        raise ValueError(
            "skip_signal_free skips one seed's step while the others take theirs, which "
            "replicas (one optimiser step for all) cannot; train such runs one seed at a time"
        )
    replicas = Replicas(config, seeds)
    run = replicas.run
    loss_fn = loss_function(config)
    results = [TrainResult(replace(config, seed=s)) for s in seeds]
    label = f"{config.method} H={config.length} V={config.vocab} {len(seeds)} replicas"
    start = None
    for episode in tqdm(range(config.episodes), desc=label, disable=not progress, leave=False):
        if episode == 1:  # the first episode pays one-off start-up costs
            start = time.perf_counter()
        batches = replicas.rollouts(config.task, config.reward, run.batch, run.k)
        for result, batch in zip(results, batches, strict=True):
            record_rollout(result, batch)
            result.skipped.append(0)
        for epoch in range(run.epochs):
            for opt in replicas.optimizers:
                opt.zero_grad(set_to_none=True)
            replicas.loss(batches, loss_fn).backward()
            if epoch == 0:
                for result, norm in zip(results, replicas.grad_norms(), strict=True):
                    result.grad_norm.append(norm)
            for opt in replicas.optimizers:
                opt.step()
        if callback is not None:
            callback(episode, results)
    seconds = (time.perf_counter() - start) / (config.episodes - 1) if start else math.nan
    for r, result in enumerate(results):
        result.seconds_per_episode = seconds
        result.model = replicas.model(r)
    return results
