"""A token-task run's settings: :class:`TrainConfig` (which also builds the command line),
checked by ``validate`` before any work, and :class:`RunSettings`, as a run uses them."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch

from tpo_core.objectives import check_eta, check_types, setting
from tpo_core.tokens.algorithms import ALGORITHMS, get_algorithm
from tpo_core.tokens.model import ModelConfig
from tpo_core.tokens.tasks import REWARDS, TASKS, check_task

NEWTON_SCHULZ_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Settings that runs stored before they existed ran with (torch.optim.Muon's bfloat16).
LEGACY_SETTINGS = {"newton_schulz": "bfloat16"}
RENAMED = {"algo": "method"}  # stored name -> today's, for runs stored before the rename


def sums_over_k(method: str) -> bool:
    """Whether ``grpo_sum_over_k`` applies: a sequence-level method other than TPO's family
    (whose loss is a cross-entropy per group, not a sum of per-answer terms)."""
    row = get_algorithm(method).method  # the catalogue's row
    return row.family == "sequence" and not row.tempered


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (defaults: the paper's transformer settings).

    ``python -m tpo_core train`` and ``grid`` build their options from these
    fields, so a field's default and help live here only.
    """

    task: str = setting("reverse_copy", "the token task", choices=TASKS)
    reward: str = setting("terminal", "per-token reward", choices=REWARDS)
    method: str = setting("tpo", "the method (docs/GLOSSARY.md)", choices=tuple(ALGORITHMS))
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
        value the code ran with at the time (:data:`LEGACY_SETTINGS`), not today's default,
        and a setting since renamed (:data:`RENAMED`) is read under its new name."""
        stored = {RENAMED.get(k, k): v for k, v in stored.items()}
        return cls(**(LEGACY_SETTINGS | stored))

    def validate(self) -> None:
        check_types(self)
        check_task(self.task, self.reward)
        engine = get_algorithm(self.method)
        if engine.rollout == "token" and self.reward == "terminal":
            raise ValueError(
                f"{self.method} is token-level and needs a per-token reward, not terminal"
            )
        if engine.grouped and self.k < 2:
            raise ValueError(
                f"{self.method} compares K candidates per group: k must be >= 2, got {self.k}"
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
        if self.grpo_sum_over_k and not sums_over_k(self.method):
            raise ValueError(
                f"grpo_sum_over_k applies to sequence-level GRPO-style methods, not {self.method}"
            )
        ModelConfig(vocab=self.vocab, length=self.length, **self.model_settings())  # checks them
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU here")
        if self.eta != 1.0 and not engine.tempered:
            raise ValueError(f"{self.method} has no temperature; eta applies to TPO variants only")
        if self.skip_signal_free and not engine.grouped:
            raise ValueError(
                f"skip_signal_free looks for a group with signal; {self.method} has no groups"
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
    engine = get_algorithm(config.method)
    single = engine.rollout == "single"
    scale = single and config.match == "interactions"
    return RunSettings(
        batch=config.batch * config.k if scale else config.batch,
        k=1 if single else config.k,
        lr=config.lr * math.sqrt(config.k) if scale else config.lr,
        epochs=config.epochs or engine.epochs,
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
