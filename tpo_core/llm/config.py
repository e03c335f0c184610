"""One RLVR run's settings: :class:`RLVRConfig`, checked by ``validate``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tpo_core.llm.verifiers import LLM_TASKS
from tpo_core.methods import implemented
from tpo_core.objectives import check_eta, check_types

LOSSES = implemented("llm")  # the methods the loop runs (tpo_core.methods)
MIN_TEMPERATURE = 0.01  # below it sampling is greedy in effect: log-probs 0 or -inf, no gradient
MAX_LR = 1.0
DEVICES = re.compile(r"cpu|mps|cuda(:\d+)?")
LOG_PROB_CHUNK = 1024  # completion tokens per chunk of the LM head: (1024, vocab) logits at once


@dataclass(frozen=True)
class RLVRConfig:
    """One RLVR run. Defaults are a CPU teaching size; :func:`choose_scale` picks GPU sizes."""

    model: str  # hub name or local folder
    task: str = "sums"
    loss: str = "tpo"  # the method, one of LOSSES (tpo, grpo_per_token, dr_grpo, dapo, ...)
    k: int = 8  # completions per prompt
    prompts_per_step: int = 8
    steps: int = 50
    lr: float = 1e-5
    epochs: int = 1  # optimiser steps per batch of rollouts
    max_new_tokens: int = 256
    temperature: float = 1.0
    eta: float = 1.0  # TPO's temperature
    clip_eps: float = 0.2  # grpo_per_token's clip; the other methods use their own papers' ranges
    beta: float = 0.0  # weight of the k3 KL to the initial policy (both losses)
    track_kl: bool = False  # measure the KL to the start even at beta = 0 (an extra pass)
    micro_batch_groups: int = 1  # groups of K per forward/backward pass
    max_grad_norm: float = 1.0
    lora_rank: int = 0  # 0: train every weight
    merge_lora_for_generation: bool = False  # generate with W + BA merged (faster; rounds in bf16)
    gradient_checkpointing: bool = False
    log_prob_chunk: int = LOG_PROB_CHUNK  # completion tokens per LM-head chunk (0: all at once)
    chat_template: bool | None = None  # None: use the tokenizer's if it has one
    enable_thinking: bool = False  # Qwen3's <think> mode; off, so answers fit the token budget
    gsm8k_path: str | None = None  # a local GSM8K file instead of the hub
    gsm8k_test_path: str | None = None  # a local GSM8K test split, for the evaluations
    warmup_steps: int = 0  # linear learning-rate warmup over the first optimiser steps
    eval_every: int = 0  # evaluate on held-out problems every N steps and at the end (0: never)
    eval_problems: int = 64
    checkpoint_dir: str | None = None  # checkpoints go to a folder per run under this one ...
    checkpoint_every: int = 0  # ... every N steps; rlvr_train(resume=True) continues from it
    device: str | None = None  # None: cuda if available, else cpu
    seed: int = 0

    def validate(self) -> None:
        check_types(self)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; the LLM loop runs {', '.join(LOSSES)}")
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
        if self.clip_eps != 0.2 and self.loss != "grpo_per_token":
            raise ValueError(
                f"clip_eps sets grpo_per_token's clip; {self.loss} runs with its own paper's "
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
