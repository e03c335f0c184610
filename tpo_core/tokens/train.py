"""The training loop of the token tasks: seeds, epochs, curves, progress, results.

One episode = sample a rollout batch from the current policy (the frozen
snapshot), then take ``epochs`` optimiser steps on it with the method's
loss. Per episode the loop records the error of the rollouts it sampled
(1 - mean reward: token error, or exact-match error under terminal reward;
no separate greedy evaluation), the gradient norm of the first epoch (on the
snapshot), the fraction of groups in which every candidate failed and, for
sequence-level groups, what each method makes of the informative ones
(:func:`group_diagnostics`).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from tpo_core.objectives import group_policy, grpo_advantages, tpo_target
from tpo_core.stats import mean_and_se
from tpo_core.tokens.algorithms import ALGORITHMS, get_algorithm, informative_groups
from tpo_core.tokens.model import ModelConfig, TinyTransformer, make_optimizers
from tpo_core.tokens.rollouts import SequenceBatch, sequence_rollouts, token_rollouts
from tpo_core.tokens.tasks import REWARDS, TASKS, check_task

NEWTON_SCHULZ_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Settings that runs stored before they existed ran with (torch.optim.Muon's bfloat16).
LEGACY_SETTINGS = {"newton_schulz": "bfloat16"}


def is_sequence_grpo(algo: str) -> bool:
    """GRPO and its variants on whole answers (``grpo``, ``grpo_no_kl``, ...)."""
    return algo.startswith("grpo") and get_algorithm(algo).rollout == "sequence"


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

    @classmethod
    def from_dict(cls, stored: dict) -> TrainConfig:
        """A config as :func:`dataclasses.asdict` wrote it; settings added since then take the
        value the code ran with at the time (:data:`LEGACY_SETTINGS`), not today's default."""
        return cls(**(LEGACY_SETTINGS | stored))

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
        if not (self.eta > 0 and math.isfinite(self.eta)):
            raise ValueError(f"eta must be a positive finite number, got {self.eta}")
        if self.newton_schulz not in NEWTON_SCHULZ_DTYPES:
            raise ValueError(
                f"newton_schulz must be 'float32' or 'bfloat16', got {self.newton_schulz!r}"
            )
        if self.grpo_sum_over_k and not is_sequence_grpo(self.algo):
            raise ValueError(f"grpo_sum_over_k applies to sequence-level GRPO, not {self.algo}")
        ModelConfig(vocab=self.vocab, length=self.length, **self.model_settings())  # checks them
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU here")
        if self.eta != 1.0 and not algo.tempered:
            raise ValueError(f"{self.algo} has no temperature; eta applies to TPO variants only")

    def model_settings(self) -> dict:
        """The settings of :class:`ModelConfig` this config chooses."""
        return dict(layernorm_eps=self.layernorm_eps, gelu=self.gelu, init=self.init)

    def resolved(self) -> dict:
        """Batch size, K, learning rate, epochs and device as actually used (after interaction
        matching; ``device=None`` becomes cuda when available)."""
        algo = get_algorithm(self.algo)
        single = algo.rollout == "single"
        scale = single and self.match == "interactions"
        return dict(
            batch=self.batch * self.k if scale else self.batch,
            k=1 if single else self.k,
            lr=self.lr * math.sqrt(self.k) if scale else self.lr,
            epochs=self.epochs or algo.epochs,
            device=self.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        )


@dataclass
class TrainResult:
    config: TrainConfig
    error: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    all_fail: list[float] = field(default_factory=list)
    groups: dict[str, list[float]] = field(default_factory=dict)  # group_diagnostics per episode
    seconds_per_episode: float = math.nan
    model: TinyTransformer | None = field(default=None, repr=False)  # the trained policy
    provenance: dict = field(default_factory=dict, repr=False)  # of a run loaded from disk

    @classmethod
    def from_dict(cls, data: dict) -> TrainResult:
        """A result written by :meth:`to_dict` (plus its provenance), without the model."""
        keys = ("error", "grad_norm", "all_fail", "groups", "seconds_per_episode", "provenance")
        return cls(TrainConfig.from_dict(data["config"]), **{k: data[k] for k in keys if k in data})

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
            resolved=self.config.resolved(),
            error=self.error,
            grad_norm=self.grad_norm,
            all_fail=self.all_fail,
            groups=self.groups,
            seconds_per_episode=self.seconds_per_episode,
        )


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


def group_diagnostics(batch: SequenceBatch, eta: float = 1.0) -> dict[str, float]:
    """What TPO and GRPO each make of the informative groups of a sequence batch.

    A candidate is a *success* if it scores above its group's mean (under
    exact-match reward: it is right). Over the groups that are neither
    all-fail nor all-success (NaN if there are none):

    * ``p_success``: mass the old group policy ``p_old`` puts on successes;
    * ``q_success``: mass TPO's target ``q ∝ p_old exp(u / eta)`` puts on them;
    * ``adv_success`` / ``adv_failure``: GRPO's mean ``|A|`` on successes and failures.
    """
    keep = informative_groups(batch.scores)
    if not keep.any():
        return dict.fromkeys(("p_success", "q_success", "adv_success", "adv_failure"), math.nan)
    scores = batch.scores[keep]
    old = batch.old_log_probs[keep].sum(-1)
    success = scores > scores.mean(-1, keepdim=True)
    advantage = grpo_advantages(scores).abs()
    return dict(
        p_success=(group_policy(old) * success).sum(-1).mean().item(),
        q_success=(tpo_target(old, scores, eta) * success).sum(-1).mean().item(),
        adv_success=advantage[success].mean().item(),
        adv_failure=advantage[~success].mean().item(),
    )


def record_rollout(result: TrainResult, batch, grouped_answers: bool) -> None:
    """Append one episode's rollout figures to ``result``: the error, the all-fail share and,
    for groups of whole answers, :func:`group_diagnostics`."""
    result.error.append(batch.error)
    result.all_fail.append(all_fail_fraction(batch))
    if grouped_answers:
        for name, value in group_diagnostics(batch, result.config.eta).items():
            result.groups.setdefault(name, []).append(value)


def initial_model(config: TrainConfig, seed: int | None = None) -> TinyTransformer:
    """The model a run of ``config`` starts from (with ``seed`` in place of ``config.seed``)."""
    torch.manual_seed(config.seed if seed is None else seed)
    return TinyTransformer(ModelConfig(config.vocab, config.length, **config.model_settings()))


def optimizers_for(config: TrainConfig, model: TinyTransformer, params=None) -> list:
    """Muon and Adam as ``config`` sets them (``params``: see :func:`make_optimizers`)."""
    return make_optimizers(model, config.resolved()["lr"],
                           NEWTON_SCHULZ_DTYPES[config.newton_schulz], config.muon_qkv_bias,
                           config.adam_nesterov, params)  # fmt: skip


def loss_function(config: TrainConfig) -> Callable:
    """``loss(model, batch)`` of the config's method, with its temperature, and summed over
    the K answers instead of averaged when ``grpo_sum_over_k`` (the same as K times it)."""
    algo = get_algorithm(config.algo)
    loss = functools.partial(algo.loss, eta=config.eta) if algo.tempered else algo.loss
    if not config.grpo_sum_over_k:
        return loss
    k = config.resolved()["k"]
    return lambda model, batch: k * loss(model, batch)


def train(
    config: TrainConfig,
    callback: Callable[[int, TrainResult], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a fresh model; ``callback(episode, result)`` runs after each episode."""
    config.validate()
    algo = get_algorithm(config.algo)
    run = config.resolved()
    model = initial_model(config).to(run["device"])  # on the CPU first: one model everywhere
    optimizers = optimizers_for(config, model)
    loss = loss_function(config)
    generator = torch.Generator(run["device"]).manual_seed(config.seed)
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
        record_rollout(result, batch, algo.rollout == "sequence")
        for epoch in range(run["epochs"]):
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss(model, batch).backward()
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

    The input of :func:`tpo_core.teaching.viz.curves_figure`.
    """
    by_method: dict[str, list[list[float]]] = {}
    for r in results:
        by_method.setdefault(r.config.algo, []).append(r.error)
    curves = {}
    for method, errors in by_method.items():
        mean, se = mean_and_se(errors)
        curves[method] = (list(range(1, len(mean) + 1)), mean.tolist(), se.tolist())
    return curves
