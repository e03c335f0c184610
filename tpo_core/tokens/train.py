"""The training loop of the token tasks: seeds, epochs, curves, progress, results.

One episode = sample a rollout batch from the current policy (the frozen
snapshot), then take ``epochs`` optimiser steps on it with the method's
loss. Per episode the loop records the error of the rollouts it sampled
(1 - mean reward: token error, or exact-match error under terminal reward;
no separate greedy evaluation), the gradient norm of the first epoch (on the
snapshot), the fraction of groups in which every candidate failed, and
whether it skipped the update (``skip_signal_free``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm.auto import tqdm

from tpo_core.stats import mean_and_se
from tpo_core.tokens.algorithms import get_algorithm, informative_groups
from tpo_core.tokens.config import NEWTON_SCHULZ_DTYPES, TrainConfig
from tpo_core.tokens.model import ModelConfig, TinyTransformer, make_optimizers
from tpo_core.tokens.rollouts import sequence_rollouts, token_rollouts

CURVES = ("error", "grad_norm", "all_fail", "skipped")  # one value per episode


@dataclass
class TrainResult:
    config: TrainConfig
    error: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    all_fail: list[float] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # 1 where skip_signal_free skipped the step
    seconds_per_episode: float = math.nan
    model: TinyTransformer | None = field(default=None, repr=False)  # the trained policy
    optimizers: list | None = field(default=None, repr=False)  # its Muon and Adam, as they ended
    provenance: dict = field(default_factory=dict, repr=False)  # of a run loaded from disk
    source: str | None = field(default=None, repr=False)  # the file it was loaded from

    @classmethod
    def from_dict(cls, data: dict, source: str | None = None) -> TrainResult:
        """A result written by :meth:`to_dict` (plus its provenance), without the model.

        A missing value is stored as null (JSON has no NaN) and read back as NaN; files with
        fields since removed read as before. Raises ValueError unless the config is one
        ``validate`` accepts and every curve has one value per episode, within its range.
        """
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise ValueError("a run's file holds an object with its config")
        config = TrainConfig.from_dict(data["config"])
        replace(config, device=None).validate()  # a run made on a GPU reads anywhere
        if "error" not in data:
            raise ValueError("the run has no error curve")
        curves = {k: _curve(k, data[k], config.episodes) for k in CURVES if k in data}
        seconds = data.get("seconds_per_episode")
        if seconds is not None and not (isinstance(seconds, int | float) and seconds >= 0):
            raise ValueError(f"seconds_per_episode must be a non-negative number, got {seconds!r}")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise ValueError("provenance must be an object")
        return cls(
            config,
            **curves,
            seconds_per_episode=math.nan if seconds is None else float(seconds),
            provenance=provenance,
            source=source,
        )

    def steps_to(self, threshold: float) -> int | None:
        """First episode (1-based) whose error is at or below ``threshold``; None if never."""
        return steps_to(self.error, threshold)

    def final_error(self, last: int = 1) -> float:
        """Mean error of the last ``last`` episodes; ``last=1``, the last episode's error, is
        the paper's final error (which it then averages over seeds)."""
        tail = self.error[-last:]
        return sum(tail) / len(tail)

    def to_dict(self) -> dict:
        return dict(
            config=asdict(self.config),
            resolved=asdict(self.config.resolved),
            **{k: getattr(self, k) for k in CURVES},
            seconds_per_episode=self.seconds_per_episode,
        )


# Each curve's values: the range they lie in, and whether a missing value (null) may occur.
CURVE_RANGES = dict(
    error=(0, 1, False),
    grad_norm=(0, math.inf, True),
    all_fail=(0, 1, False),
    skipped=(0, 1, False),
)


def _curve(name: str, values, episodes: int) -> list:
    """A stored curve checked: a list of one number per episode within its range."""
    low, high, nullable = CURVE_RANGES[name]
    if not isinstance(values, list) or len(values) != episodes:
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise ValueError(f"the {name} curve must hold {episodes} values (episodes), got {got}")
    for v in values:
        if v is None and nullable:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
            raise ValueError(f"the {name} curve holds {v!r}, outside [{low}, {high}]")
        if name == "skipped" and v not in (0, 1):
            raise ValueError(f"the skipped curve holds {v!r}; it marks steps with 0 or 1")
    return [math.nan if v is None else v for v in values]


def steps_to(errors: list[float], threshold: float) -> int | None:
    """First episode (1-based) with error at or below ``threshold``; None if never."""
    return next((i + 1 for i, e in enumerate(errors) if e <= threshold), None)


def _grad_norm(model: torch.nn.Module) -> float:
    grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).norm().item() if grads else 0.0


def all_fail_fraction(batch) -> float:
    """Share of groups (answers of one prompt, or candidates at one state) with no reward at all."""
    scores = batch.scores if hasattr(batch, "scores") else batch.rewards
    return (scores.amax(-1) == 0).float().mean().item()


def record_rollout(result: TrainResult, batch) -> None:
    """Append one episode's rollout figures to ``result``: the error and the all-fail share."""
    result.error.append(batch.error)
    result.all_fail.append(all_fail_fraction(batch))


def is_signal_free(batch) -> bool:
    """True if no group of ``batch`` is informative: every group's K scores are equal."""
    scores = batch.scores if hasattr(batch, "scores") else batch.rewards
    return not informative_groups(scores).any()


def initial_model(config: TrainConfig, seed: int | None = None) -> TinyTransformer:
    """The model a run of ``config`` starts from (with ``seed`` in place of ``config.seed``)."""
    torch.manual_seed(config.seed if seed is None else seed)
    return TinyTransformer(ModelConfig(config.vocab, config.length, **config.model_settings()))


def optimizers_for(config: TrainConfig, model: TinyTransformer, params=None) -> list:
    """Muon and Adam as ``config`` sets them (``params``: see :func:`make_optimizers`)."""
    return make_optimizers(
        model,
        config.resolved.lr,
        NEWTON_SCHULZ_DTYPES[config.newton_schulz],
        config.muon_qkv_bias,
        config.adam_nesterov,
        params,
    )


def loss_function(config: TrainConfig) -> Callable:
    """``loss(model, batch)`` of the config's method, with its catalogue settings and the
    config's temperature, and summed over
    the K answers instead of averaged when ``grpo_sum_over_k`` (the same as K times it)."""
    engine = get_algorithm(config.method)
    settings = engine.method.settings | (dict(eta=config.eta) if engine.tempered else {})
    loss = functools.partial(engine.loss, **settings)
    if not config.grpo_sum_over_k:
        return loss
    k = config.resolved.k
    return lambda model, batch: k * loss(model, batch)


def update(model, optimizers: list, loss: Callable, batch, epochs: int, step: bool = True) -> float:
    """``epochs`` optimiser steps on one frozen ``batch``, or with ``step=False`` none (the first
    epoch's gradient is still taken, for the record); returns that gradient's norm."""
    norm = math.nan
    for epoch in range(epochs if step else 1):
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss(model, batch).backward()
        if epoch == 0:
            norm = _grad_norm(model)
        if step:
            for opt in optimizers:
                opt.step()
    return norm


def learn(config: TrainConfig, model, optimizers: list, loss: Callable, batch, result) -> None:
    """One episode's update on ``batch``, recorded in ``result``: the method's epochs of
    optimiser steps, or none with ``skip_signal_free`` on a batch without an informative
    group (so that Muon's and Adam's momentum do not turn its rounding-level gradient into
    a full-size step). The first epoch's gradient norm is recorded either way."""
    skip = config.skip_signal_free and is_signal_free(batch)
    result.skipped.append(int(skip))
    epochs = config.resolved.epochs
    result.grad_norm.append(update(model, optimizers, loss, batch, epochs, step=not skip))


def train(
    config: TrainConfig,
    callback: Callable[[int, TrainResult], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a fresh model; ``callback(episode, result)`` runs after each episode."""
    config.validate()
    engine = get_algorithm(config.method)
    run = config.resolved
    model = initial_model(config).to(run.device)  # on the CPU first: one model everywhere
    optimizers = optimizers_for(config, model)
    loss = loss_function(config)
    generator = torch.Generator(run.device).manual_seed(config.seed)
    rollouts = token_rollouts if engine.rollout == "token" else sequence_rollouts
    result = TrainResult(config, model=model, optimizers=optimizers)
    label = f"{config.method} H={config.length} V={config.vocab} seed {config.seed}"
    start = None
    for episode in tqdm(range(config.episodes), desc=label, disable=not progress, leave=False):
        if episode == 1:  # the first episode pays one-off start-up costs
            start = time.perf_counter()
        model.eval()
        batch = rollouts(model, config.task, config.reward, run.batch, run.k, generator)
        model.train()
        record_rollout(result, batch)
        learn(config, model, optimizers, loss, batch, result)
        if callback is not None:
            callback(episode, result)
    if start is not None:
        result.seconds_per_episode = (time.perf_counter() - start) / (config.episodes - 1)
    return result


def mean_error_curves(results: list[TrainResult]) -> dict[str, tuple[list, list, list]]:
    """Per method, ``(episodes, mean error, standard error)`` over its runs (seeds).

    The input of :func:`tpo_core.teaching.curves_figure`.
    """
    by_method: dict[str, list[list[float]]] = {}
    for r in results:
        by_method.setdefault(r.config.method, []).append(r.error)
    curves = {}
    for method, errors in by_method.items():
        mean, se = mean_and_se(errors)
        curves[method] = (list(range(1, len(mean) + 1)), mean.tolist(), se.tolist())
    return curves
