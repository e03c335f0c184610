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
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from tqdm.auto import tqdm

from tpo_core.objectives import check_eta, check_types
from tpo_core.stats import mean_and_se
from tpo_core.tokens.algorithms import ALGORITHMS, get_algorithm, informative_groups
from tpo_core.tokens.model import ModelConfig, TinyTransformer, make_optimizers
from tpo_core.tokens.rollouts import sequence_rollouts, token_rollouts
from tpo_core.tokens.tasks import REWARDS, TASKS, check_task

NEWTON_SCHULZ_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Settings that runs stored before they existed ran with (torch.optim.Muon's bfloat16).
LEGACY_SETTINGS = {"newton_schulz": "bfloat16"}


def sums_over_k(algo: str) -> bool:
    """Whether ``grpo_sum_over_k`` applies: a sequence-level method other than TPO's family
    (whose loss is a cross-entropy per group, not a sum of per-answer terms)."""
    method = get_algorithm(algo).method
    return method.family == "sequence" and not method.tempered


def setting(default, help: str, **cli):
    """A config field whose ``help`` (and argparse ``choices``) the command line reads."""
    return field(default=default, metadata=dict(help=help, **cli))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (defaults: the paper's transformer settings).

    ``python -m tpo_core train`` and ``grid`` build their options from these
    fields, so a field's default and help live here only.
    """

    task: str = setting("reverse_copy", "the token task", choices=TASKS)
    reward: str = setting("terminal", "per-token reward", choices=REWARDS)
    algo: str = setting("tpo", "the method (docs/GLOSSARY.md)", choices=tuple(ALGORITHMS))
    length: int = setting(6, "H: prompt and answer length")
    vocab: int = setting(2, "V: vocabulary size")
    batch: int = setting(100, "B: prompts per episode")
    k: int = setting(8, "K: candidates per group")
    epochs: int | None = setting(None, "epochs per batch (default: the method's own, 4; DG 1)")
    episodes: int = setting(200, "rollout batches to train on")
    lr: float = setting(1e-3, "learning rate of Muon and Adam")
    seed: int = setting(0, "seed of the model, the rollouts and the prompts")
    match: str = setting(
        "prompts",
        "interactions: single-sample methods get B*K prompts and lr*sqrt(K)",
        choices=("prompts", "interactions"),
    )
    eta: float = setting(1.0, "TPO's temperature (TPO variants only)")
    newton_schulz: str = setting(
        "float32",
        "precision of Muon's Newton-Schulz iteration: float32 as in the paper's code, or "
        "bfloat16 as in torch.optim.Muon (and in runs stored before this setting existed)",
        choices=("float32", "bfloat16"),
    )
    # Where the paper's JAX code differs from this engine's defaults (each an option; the
    # defaults are what the evidence so far supports, docs/GLOSSARY.md and notebook 05).
    muon_qkv_bias: bool = setting(
        False, "Muon also on the query/key/value biases (heads x head_dim), as the paper's code"
    )
    adam_nesterov: bool = setting(False, "Adam with Nesterov momentum, as the paper's code")
    grpo_sum_over_k: bool = setting(
        False, "GRPO's loss summed over the K answers (not averaged), as the paper's code"
    )
    layernorm_eps: float = setting(1e-5, "LayerNorm's eps (the paper's code: 1e-6)")
    gelu: str = setting("exact", "GELU's form (the paper's code: tanh)", choices=("exact", "tanh"))
    init: str = setting(
        "normal",
        "weight matrices' initial distribution (the paper's code: truncated_normal)",
        choices=("normal", "truncated_normal"),
    )
    device: str | None = setting(
        None, "where tensors live (default: cuda when available)", choices=("cpu", "cuda")
    )
    # Beyond the paper (notebook 05): Muon and Adam turn the rounding-level gradient of a batch
    # without signal into a full-size step.
    skip_signal_free: bool = setting(
        False,
        "skip the optimiser step (every epoch) on a batch with no informative group, where "
        "every group's K scores are equal (all fail or all succeed)",
    )

    @classmethod
    def from_dict(cls, stored: dict) -> TrainConfig:
        """A config as :func:`dataclasses.asdict` wrote it; settings added since then take the
        value the code ran with at the time (:data:`LEGACY_SETTINGS`), not today's default."""
        return cls(**(LEGACY_SETTINGS | stored))

    def validate(self) -> None:
        check_types(self)
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
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.match not in ("prompts", "interactions"):
            raise ValueError(f"match must be 'prompts' or 'interactions', got {self.match!r}")
        for name in ("length", "batch", "episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.vocab < 2:
            raise ValueError(f"vocab must be at least 2, got {self.vocab}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not 0 < self.lr <= MAX_LR:
            raise ValueError(f"lr must be in (0, {MAX_LR:g}], got {self.lr}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        check_eta(self.eta)
        if self.newton_schulz not in NEWTON_SCHULZ_DTYPES:
            raise ValueError(
                f"newton_schulz must be 'float32' or 'bfloat16', got {self.newton_schulz!r}"
            )
        if self.grpo_sum_over_k and not sums_over_k(self.algo):
            raise ValueError(
                f"grpo_sum_over_k applies to sequence-level GRPO-style methods, not {self.algo}"
            )
        ModelConfig(vocab=self.vocab, length=self.length, **self.model_settings())  # checks them
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU here")
        if self.eta != 1.0 and not algo.tempered:
            raise ValueError(f"{self.algo} has no temperature; eta applies to TPO variants only")
        if self.skip_signal_free and not algo.grouped:
            raise ValueError(
                f"skip_signal_free looks for a group with signal; {self.algo} has no groups"
            )
        need, have = estimated_bytes(self), physical_memory()
        if have is not None and need > have:
            raise ValueError(
                f"this run needs about {need / 2**30:.3g} GiB for its rollouts and their "
                f"gradients, more than this machine's {have / 2**30:.3g} GiB: lower batch, k, "
                "length or vocab"
            )

    def model_settings(self) -> dict:
        """The settings of :class:`ModelConfig` this config chooses."""
        return dict(layernorm_eps=self.layernorm_eps, gelu=self.gelu, init=self.init)

    @property
    def resolved(self) -> RunSettings:
        """The settings as a run uses them (:class:`RunSettings`), computed once per config."""
        return _resolve(self)


MAX_LR = 1.0  # a larger step than this sends every weight to infinity at once


def estimated_bytes(config: TrainConfig) -> int:
    """A generous estimate of a run's peak memory: each of the B*K sequences (2H tokens)
    keeps its activations (per layer about 16 d_model floats and the attention's 2H per
    head) and its V logits, about three times over for the backward pass."""
    model = ModelConfig(config.vocab, config.length)
    run = config.resolved
    tokens = run.batch * run.k * 2 * config.length
    per_token = model.layers * (16 * model.d_model + model.heads * 2 * config.length)
    return 3 * 4 * tokens * (per_token + 2 * config.vocab) + 4 * config.vocab * model.d_model


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the system does not say (Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1024)
def _resolve(config: TrainConfig) -> RunSettings:
    algo = get_algorithm(config.algo)
    single = algo.rollout == "single"
    scale = single and config.match == "interactions"
    return RunSettings(
        batch=config.batch * config.k if scale else config.batch,
        k=1 if single else config.k,
        lr=config.lr * math.sqrt(config.k) if scale else config.lr,
        epochs=config.epochs or algo.epochs,
        device=config.device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )


@dataclass(frozen=True)
class RunSettings:
    """Batch size, K, learning rate, epochs and device as a run uses them: after interaction
    matching (single-sample methods get B*K prompts, K = 1 and lr*sqrt(K)), the method's own
    epochs when unset, and cuda when available for ``device=None``."""

    batch: int
    k: int
    lr: float
    epochs: int
    device: str


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
    algo = get_algorithm(config.algo)
    settings = algo.method.settings | (dict(eta=config.eta) if algo.tempered else {})
    loss = functools.partial(algo.loss, **settings)
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
    algo = get_algorithm(config.algo)
    run = config.resolved
    model = initial_model(config).to(run.device)  # on the CPU first: one model everywhere
    optimizers = optimizers_for(config, model)
    loss = loss_function(config)
    generator = torch.Generator(run.device).manual_seed(config.seed)
    rollouts = token_rollouts if algo.rollout == "token" else sequence_rollouts
    result = TrainResult(config, model=model)
    label = f"{config.algo} H={config.length} V={config.vocab} seed {config.seed}"
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
        by_method.setdefault(r.config.algo, []).append(r.error)
    curves = {}
    for method, errors in by_method.items():
        mean, se = mean_and_se(errors)
        curves[method] = (list(range(1, len(mean) + 1)), mean.tolist(), se.tolist())
    return curves
