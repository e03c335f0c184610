"""The RLVR loop: sample, score, snapshot, fit by micro-batches of whole groups, evaluate,
checkpoint; and what it records."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from tpo_core.llm.checkpoint import (
    CHECKPOINT,
    fingerprint,
    load_checkpoint,
    run_folder,
    save_checkpoint,
    saved_step,
)
from tpo_core.llm.config import RLVRConfig
from tpo_core.llm.losses import rlvr_loss_terms
from tpo_core.llm.memory import GIB
from tpo_core.llm.model import (
    load_policy,
    needs_loss_scaling,
    reference_context,
    reference_policy,
    release_free_heap,
)
from tpo_core.llm.rollouts import (
    Rollout,
    end_token_ids,
    format_prompts,
    frozen_log_probs,
    generate_exactly,
    group_slices,
    in_range,
    sample_rollout,
    token_log_probs,
)
from tpo_core.llm.verifiers import Problem, held_out_problems, problem_stream, reward
from tpo_core.methods import METHODS


@dataclass
class RLVRResult:
    config: RLVRConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    model: object = field(default=None, repr=False)
    tokenizer: object = field(default=None, repr=False)
    last_rollout: Rollout | None = field(default=None, repr=False)
    evaluations: list[dict] = field(default_factory=list)  # {step, greedy, pass_at_k}

    def record(self, metrics: dict[str, float]) -> None:
        """Append one step's metrics to the history."""
        for name, value in metrics.items():
            self.history[name].append(value)

    def to_dict(self) -> dict:
        return dict(config=asdict(self.config), history=self.history, evaluations=self.evaluations)


METRICS = (
    "reward",
    "pass_at_k",
    "zero_variance",
    "truncated",
    "completion_length",
    "overflowed",
    "grad_norm",
    "skipped",
    "clipped",
    "kl",
    "seconds",
    "generate_seconds",
    "completion_tokens",
    "tokens_per_second",
    "generate_peak_gpu_gib",
    "train_peak_gpu_gib",
    "peak_gpu_gib",
)


def rollout_metrics(rollout: Rollout) -> dict[str, float]:
    """Mean reward, pass@K (groups with a success), the share of zero-variance groups, the
    share of completions cut off by ``max_new_tokens`` (no end token), the mean length, and
    whether float16 overflowed and the batch was drawn again (``in_range``)."""
    r, lengths = rollout.rewards, rollout.completion_mask.sum(-1)  # lengths include the end
    return dict(
        reward=r.mean().item(),
        pass_at_k=(r.amax(-1) > 0).float().mean().item(),
        zero_variance=(r.amax(-1) == r.amin(-1)).float().mean().item(),
        truncated=math.nan if rollout.ended is None else 1 - rollout.ended.float().mean().item(),
        completion_length=lengths.float().mean().item(),
        overflowed=float(rollout.overflowed),
    )


def evaluate(model, tokenizer, problems: list[Problem], config: RLVRConfig) -> dict[str, float]:
    """Held-out accuracy: ``greedy`` (one greedy completion per problem) and ``pass_at_k`` (a
    problem counts if any of K sampled completions is right).

    Problems go through in chunks the size of a training step's generation
    (``prompts_per_step`` groups of K for sampling, as many single rows for
    greedy decoding), so evaluating never holds more KV cache than training.
    """
    chunk = config.prompts_per_step
    greedy_chunk = chunk * config.k
    right = sum(
        _greedy_rewards(model, tokenizer, problems[i : i + greedy_chunk], config)
        for i in range(0, len(problems), greedy_chunk)
    )
    passed = sum(
        (rollout.rewards.amax(-1) > 0).sum().item()
        for rollout in (
            sample_rollout(model, tokenizer, problems[i : i + chunk], config, seed)
            for seed, i in enumerate(range(0, len(problems), chunk), evaluation_seed(config))
        )
    )
    return dict(greedy=right / len(problems), pass_at_k=passed / len(problems))


@torch.no_grad()
def _greedy_rewards(model, tokenizer, problems: list[Problem], config: RLVRConfig) -> float:
    """The summed reward of one greedy completion per problem."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    prompts = format_prompts(tokenizer, problems, config.chat_template, config.enable_thinking)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    greedy = GenerationConfig(
        do_sample=False,
        num_beams=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        max_new_tokens=config.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=end_token_ids(model, tokenizer),
    )
    model.eval()
    out, _ = in_range(lambda: generate_exactly(model, enc, greedy), device)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return sum(reward(t, p) for t, p in zip(texts, problems, strict=True))


def evaluation_seed(config: RLVRConfig) -> int:
    """The sampling seed of evaluations: fixed, so two evaluations of one policy agree."""
    return config.seed * 100_003 + 99_991


# float16 needs loss scaling; TPO's gradient reaches every token of a completion at full size
# ((p_i - q_i) / G, not divided by the token count as GRPO's), so start lower than torch's 2^16
FP16_INIT_SCALE = 2.0**10


@dataclass
class Optimisation:
    """AdamW on the trainable weights, a loss scaler for float16 and the warmup schedule."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @classmethod
    def for_model(cls, model, config: RLVRConfig) -> Optimisation:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        device = next(model.parameters()).device
        scaler = torch.amp.GradScaler(
            device.type,
            init_scale=FP16_INIT_SCALE,
            enabled=needs_loss_scaling(device),
        )
        warmup = config.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda done: min(1.0, (done + 1) / warmup) if warmup else 1.0
        )
        return cls(params, optimizer, scaler, scheduler)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()
        release_free_heap(loss.device)  # the freed activations back to the system, on a CPU

    def step(self, max_grad_norm: float) -> float:
        """Unscale, clip and step; an overflow or a NaN drops this update (not the run).
        Returns the gradient norm before clipping (not finite where the update was dropped)."""
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_grad_norm).item()
        if math.isfinite(grad_norm):
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm


def fit_rollout(model, ref, rollout: Rollout, config: RLVRConfig, opt: Optimisation) -> dict:
    """``config.epochs`` optimiser steps on one rollout, each over micro-batches of whole groups.

    Returns the last gradient norm, the number of dropped updates, GRPO's
    clipped share (over every epoch's tokens) and the rollout's k3 KL to the
    reference (first epoch).
    """
    if config.epochs > 1:  # later passes need the snapshot; one pass reuses its own forward
        rollout.old_log_probs = frozen_log_probs(model, rollout, config)
    if ref is not None:
        with reference_context(ref, config):
            rollout.ref_log_probs = frozen_log_probs(ref, rollout, config)
    model.train()
    total_tokens = int(rollout.completion_mask.sum())
    groups = len(rollout.problems)
    kl, clipped, skipped = 0.0, 0.0, 0
    for epoch in range(config.epochs):
        for part in group_slices(groups, config.micro_batch_groups):
            rows = rollout.rows(part)
            new = token_log_probs(
                model, rollout, rows, config.temperature, config.log_prob_chunk
            )  # (rows, T)
            old = new.detach() if rollout.old_log_probs is None else rollout.old_log_probs[rows]
            ref_rows = None if ref is None else rollout.ref_log_probs[rows]
            terms = rlvr_loss_terms(
                config,
                new,
                old,
                rollout.rewards[part].to(new.device),
                rollout.completion_mask[rows],
                ref_rows,
                total_groups=groups,
                total_tokens=total_tokens,
            )
            opt.backward(terms.loss)
            share = terms.tokens / total_tokens  # the micro-batch's share of the step's tokens
            if terms.clipped is not None:
                clipped += float(terms.clipped) * share / config.epochs
            if terms.kl is not None and epoch == 0:
                kl += float(terms.kl) * share
        grad_norm = opt.step(config.max_grad_norm)
        skipped += not math.isfinite(grad_norm)
    return dict(
        grad_norm=grad_norm,
        skipped=skipped,
        clipped=clipped if "clip_high" in METHODS[config.method].settings else math.nan,
        kl=kl if ref is not None else math.nan,
    )


def _peak_gib(device: torch.device) -> float:
    """The peak GPU memory since the last reset, then reset (NaN on a CPU)."""
    if device.type != "cuda":
        return math.nan
    peak = torch.cuda.max_memory_allocated(device) / GIB
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def rlvr_train(
    config: RLVRConfig,
    callback: Callable[[int, RLVRResult], None] | None = None,
    progress: bool = True,
    policy: tuple | None = None,
    resume: bool = False,
) -> RLVRResult:
    """Run ``config.steps`` RLVR steps; ``callback(step, result)`` runs after each.

    ``policy`` is an already loaded ``(tokenizer, model)`` pair (default: :func:`load_policy`).
    Checkpoints go to this run's own folder under ``config.checkpoint_dir``
    (:func:`~tpo_core.llm.checkpoint.run_folder`); with ``resume`` and a checkpoint there, the
    run continues after its last saved step, exactly as if it had never stopped (``callback``
    then runs once first, with the checkpoint's history). A run resumed after its last step
    takes no step, so its ``last_rollout`` is None.
    """
    config.validate()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    tokenizer, model = policy or load_policy(config, progress)
    ref = reference_policy(model, config)
    opt = Optimisation.for_model(model, config)
    device = next(model.parameters()).device
    stream = problem_stream(config.task, config.seed, config.gsm8k_path)
    result = RLVRResult(config, {m: [] for m in METRICS}, model, tokenizer)
    held_out = None
    if config.eval_every:
        held_out = held_out_problems(config.task, config.eval_problems, config.gsm8k_test_path)
    folder = run_folder(config) if config.checkpoint_dir else None
    saved = 0 if folder is None else saved_step(folder)
    if saved and not resume:
        raise ValueError(
            f"{folder} holds this run's checkpoint after {saved} steps: pass resume=True to "
            "continue it, or remove the folder to start again"
        )
    if saved > config.steps:
        raise ValueError(
            f"the checkpoint in {folder} holds {saved} steps, more than steps={config.steps}"
        )
    origin = fingerprint(model) if folder is not None else ""
    first = 0
    if resume and folder is not None and (folder / CHECKPOINT).exists():
        first = load_checkpoint(folder, model, opt, result, origin)
        if callback is not None and first:
            callback(first - 1, result)  # draw the steps done before the interruption
    for _ in range(first * config.prompts_per_step):  # the problems the earlier steps drew
        next(stream)
    _peak_gib(device)
    steps, desc = range(first, config.steps), f"{config.method} on {config.task}"
    for step in tqdm(steps, desc, disable=not progress, initial=first, total=config.steps):
        start = time.perf_counter()
        problems = list(itertools.islice(stream, config.prompts_per_step))
        rollout = sample_rollout(model, tokenizer, problems, config, config.seed * 100_003 + step)
        generated, generate_peak = time.perf_counter(), _peak_gib(device)
        fitted = fit_rollout(model, ref, rollout, config, opt)
        train_peak = _peak_gib(device)
        tokens = int(rollout.completion_mask.sum())
        result.record(
            rollout_metrics(rollout)
            | fitted
            | dict(
                seconds=time.perf_counter() - start,
                generate_seconds=generated - start,
                completion_tokens=tokens,
                tokens_per_second=tokens / (generated - start),
                generate_peak_gpu_gib=generate_peak,
                train_peak_gpu_gib=train_peak,
                peak_gpu_gib=max(generate_peak, train_peak),
            )
        )
        result.last_rollout, done = rollout, step + 1
        if held_out is not None and (done % config.eval_every == 0 or done == config.steps):
            result.evaluations.append(
                dict(step=done, **evaluate(model, tokenizer, held_out, config))
            )
        every = config.checkpoint_every
        if folder is not None and every and (done % every == 0 or done == config.steps):
            save_checkpoint(folder, model, opt, result, done, origin)
        if callback is not None:
            callback(step, result)
    return result
