"""One RLVR run's settings: :class:`RLVRConfig`, checked by ``validate``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tpo_core.llm.verifiers import LLM_TASKS
from tpo_core.methods import implemented
from tpo_core.objectives import check_eta, check_types, setting

LLM_METHODS = implemented("llm")  # the methods the loop runs (tpo_core.methods)
MIN_TEMPERATURE = 0.01  # below it sampling is greedy in effect: log-probs 0 or -inf, no gradient
MAX_LR = 1.0
DEVICES = re.compile(r"cpu|mps|cuda(:\d+)?")
LOG_PROB_CHUNK = 1024  # completion tokens per chunk of the LM head: (1024, vocab) logits at once


@dataclass(frozen=True)
class RLVRConfig:
    """One RLVR run; :func:`choose_scale` picks sizes for the hardware.

    ``python -m tpo_core rlvr`` builds its options from these fields."""

    model: str = setting(help="a hub name, a local folder, or a .gguf file (llm.smollm2())")
    task: str = setting("sums", "the verifiable task", choices=LLM_TASKS)
    method: str = setting("tpo", "the method (docs/GLOSSARY.md)", choices=LLM_METHODS)
    k: int = setting(8, "K: completions per prompt")
    prompts_per_step: int = setting(8, "G: prompts (groups) per step")
    steps: int = setting(50, "optimiser steps' batches of rollouts to train on")
    lr: float = setting(1e-5, "AdamW's learning rate")
    epochs: int = setting(1, "optimiser steps per batch of rollouts")
    max_new_tokens: int = setting(256, "the longest completion, in tokens")
    temperature: float = setting(1.0, "the sampling temperature (the loss uses it too)")
    eta: float = setting(1.0, "TPO's temperature")
    clip_eps: float = setting(0.2, "grpo_per_token's clip; others use their papers' ranges")
    beta: float = setting(0.0, "weight of the k3 KL to the initial policy (every method)")
    track_kl: bool = setting(False, "measure the KL to the start even at beta 0 (one more pass)")
    micro_batch_groups: int = setting(1, "groups of K per forward/backward pass")
    max_grad_norm: float = setting(1.0, "the gradient's norm is clipped to this")
    lora_rank: int = setting(0, "LoRA's rank on every linear layer (0: train every weight)")
    merge_lora_for_generation: bool = setting(
        False, "generate with W + BA merged (faster; rounds in bf16)"
    )
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward")
    log_prob_chunk: int = setting(
        LOG_PROB_CHUNK, "completion tokens per LM-head chunk (0: all at once)"
    )
    chat_template: bool | None = setting(None, "use one (default: if the tokenizer has one)")
    enable_thinking: bool = setting(False, "Qwen3's <think> mode (off: answers fit the budget)")
    gsm8k_path: str | None = setting(None, "a local GSM8K file instead of the hub")
    gsm8k_test_path: str | None = setting(None, "a local GSM8K test split, for the evaluations")
    warmup_steps: int = setting(0, "linear learning-rate warmup over the first optimiser steps")
    eval_every: int = setting(0, "evaluate on held-out problems every N steps (0: never)")
    eval_problems: int = setting(64, "held-out problems per evaluation")
    checkpoint_dir: str | None = setting(None, "checkpoints go to a folder per run under this")
    checkpoint_every: int = setting(0, "checkpoint every N steps (resume=True continues)")
    device: str | None = setting(None, "cpu, cuda, cuda:N or mps (default: cuda if there is one)")
    seed: int = setting(0, "seed of the LoRA, the problems and the sampling")

    def validate(self) -> None:
        check_types(self)
        if self.method not in LLM_METHODS:
            raise ValueError(
                f"unknown method {self.method!r}; the LLM loop runs {', '.join(LLM_METHODS)}"
            )
        if self.task not in LLM_TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(LLM_TASKS)}")
        if self.k < 2:
            raise ValueError(f"k must be at least 2 (a group compares completions), got {self.k}")
        for name in (
            "prompts_per_step",
            "steps",
            "epochs",
            "max_new_tokens",
            "micro_batch_groups",
            "eval_problems",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "temperature", "max_grad_norm"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        check_eta(self.eta)
        if self.lr > MAX_LR:
            raise ValueError(f"lr must be at most {MAX_LR:g}, got {self.lr}")
        if self.temperature < MIN_TEMPERATURE:
            raise ValueError(
                f"temperature must be at least {MIN_TEMPERATURE:g}, got {self.temperature}: "
                "below it every sample is the greedy one, and no loss has a gradient"
            )
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.device is not None and not DEVICES.fullmatch(self.device):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not (0 < self.clip_eps < 1):
            raise ValueError(f"clip_eps must lie in (0, 1), got {self.clip_eps}")
        if self.clip_eps != 0.2 and self.method != "grpo_per_token":
            raise ValueError(
                f"clip_eps sets grpo_per_token's clip; {self.method} runs with its own paper's "
                "settings (tpo_core.methods)"
            )
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a non-negative number, got {self.beta}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError("checkpoint_every needs a checkpoint_dir to save into")
        if self.log_prob_chunk < 0:
            raise ValueError(
                f"log_prob_chunk must be 0 (no chunks) or positive, got {self.log_prob_chunk}"
            )
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (off) or positive, got {self.lora_rank}")
