"""The training loop of the token tasks: seeds, epochs, curves, progress, results.

One episode = sample a rollout batch from the current policy (the frozen
snapshot), then take ``epochs`` optimiser steps on it with the method's
loss. Per episode the loop records the error of the rollouts it sampled
(1 - mean reward: token error, or exact-match error under terminal reward;
no separate greedy evaluation), the gradient norm of the first epoch (on the
snapshot), and the fraction of groups in which every candidate failed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from tpo_core.algorithms import get_algorithm
from tpo_core.model import ModelConfig, TinyTransformer, make_optimizers
from tpo_core.rollouts import sequence_rollouts, token_rollouts
from tpo_core.tasks import check_task


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (SPEC §3.4-3.5 defaults)."""

    task: str = "reverse_copy"
    reward: str = "terminal"
    algo: str = "tpo"
    length: int = 6
    vocab: int = 2
    batch: int = 100
    k: int = 8
    epochs: int | None = None  # None: the method's own default (4; DG 1)
    episodes: int = 200
    lr: float = 1e-3
    seed: int = 0
    match: str = "prompts"  # or "interactions": single-sample methods get B*K prompts, lr*sqrt(K)

    def validate(self) -> None:
        check_task(self.task, self.reward)
        algo = get_algorithm(self.algo)
        if algo.rollout == "token" and self.reward == "terminal":
            raise ValueError(
                f"{self.algo} is token-level and needs a per-token reward, not terminal"
            )
        if algo.grouped and self.k < 2:
            raise ValueError(
                f"{self.algo} compares K candidates per group: k must be >= 2, got {self.k}"
            )
        if self.match not in ("prompts", "interactions"):
            raise ValueError(f"match must be 'prompts' or 'interactions', got {self.match!r}")
        for name in ("length", "batch", "episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.vocab < 2:
            raise ValueError(f"vocab must be at least 2, got {self.vocab}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def resolved(self) -> dict:
        """Batch size, K, learning rate and epochs as actually used (after interaction matching)."""
        algo = get_algorithm(self.algo)
        single = algo.rollout == "single"
        scale = single and self.match == "interactions"
        return dict(
            batch=self.batch * self.k if scale else self.batch,
            k=1 if single else self.k,
            lr=self.lr * math.sqrt(self.k) if scale else self.lr,
            epochs=self.epochs or algo.epochs,
        )


@dataclass
class TrainResult:
    config: TrainConfig
    error: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    all_fail: list[float] = field(default_factory=list)
    seconds_per_episode: float = math.nan
    model: TinyTransformer | None = field(default=None, repr=False)  # the trained policy

    def steps_to(self, threshold: float) -> int | None:
        """First episode (1-based) whose error is at or below ``threshold``; None if never."""
        return steps_to(self.error, threshold)

    def final_error(self, last: int = 20) -> float:
        """Mean error of the last ``last`` episodes."""
        tail = self.error[-last:]
        return sum(tail) / len(tail)

    def to_dict(self) -> dict:
        return dict(
            config=asdict(self.config),
            resolved=self.config.resolved(),
            error=self.error,
            grad_norm=self.grad_norm,
            all_fail=self.all_fail,
            seconds_per_episode=self.seconds_per_episode,
        )


def steps_to(errors: list[float], threshold: float) -> int | None:
    """First episode (1-based) with error at or below ``threshold``; None if never."""
    return next((i + 1 for i, e in enumerate(errors) if e <= threshold), None)


def _grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).norm().item() if grads else 0.0


def _all_fail_fraction(batch) -> float:
    """Share of groups (answers of one prompt, or candidates at one state) with no reward at all."""
    scores = batch.scores if hasattr(batch, "scores") else batch.rewards
    return (scores.amax(-1) == 0).float().mean().item()


def train(
    config: TrainConfig,
    callback: Callable[[int, TrainResult], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a fresh model; ``callback(episode, result)`` runs after each episode."""
    config.validate()
    algo = get_algorithm(config.algo)
    run = config.resolved()
    torch.manual_seed(config.seed)
    model = TinyTransformer(ModelConfig(vocab=config.vocab, length=config.length))
    optimizers = make_optimizers(model, run["lr"])
    generator = torch.Generator().manual_seed(config.seed)
    rollouts = token_rollouts if algo.rollout == "token" else sequence_rollouts
    result = TrainResult(config, model=model)
    label = f"{config.algo} H={config.length} V={config.vocab} seed {config.seed}"
    start = None
    for episode in tqdm(range(config.episodes), desc=label, disable=not progress, leave=False):
        if episode == 1:  # the first episode pays one-off start-up costs
            start = time.perf_counter()
        model.eval()
        batch = rollouts(model, config.task, config.reward, run["batch"], run["k"], generator)
        model.train()
        result.error.append(batch.error)
        result.all_fail.append(_all_fail_fraction(batch))
        for epoch in range(run["epochs"]):
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            algo.loss(model, batch).backward()
            if epoch == 0:
                result.grad_norm.append(_grad_norm(model))
            for opt in optimizers:
                opt.step()
        if callback is not None:
            callback(episode, result)
    if start is not None:
        result.seconds_per_episode = (time.perf_counter() - start) / (config.episodes - 1)
    return result


def mean_error_curves(results: list[TrainResult]) -> dict[str, tuple[list, list, list]]:
    """Per method, ``(episodes, mean error, standard error)`` over its runs (seeds).

    The input of :func:`tpo_core.viz.curves_figure`.
    """
    by_method: dict[str, list[list[float]]] = {}
    for r in results:
        by_method.setdefault(r.config.algo, []).append(r.error)
    curves = {}
    for method, errors in by_method.items():
        e = torch.tensor(errors, dtype=torch.float64)
        se = e.std(0) / math.sqrt(len(e)) if len(e) > 1 else torch.zeros(e.shape[1])
        curves[method] = (list(range(1, e.shape[1] + 1)), e.mean(0).tolist(), se.tolist())
    return curves
