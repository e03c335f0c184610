"""The RLVR loop: sample, score, snapshot, fit by micro-batches of whole groups, evaluate,
checkpoint; and what it records."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tpo_core.llm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from tpo_core.llm.config import RLVRConfig
from tpo_core.llm.losses import rlvr_loss
from tpo_core.llm.model import (
    autocast,
    autocast_dtype,
    load_policy,
    reference_context,
    reference_policy,
)
from tpo_core.llm.rollouts import (
    Rollout,
    end_token_ids,
    format_prompts,
    frozen_log_probs,
    group_slices,
    sample_rollout,
    token_log_probs,
)
from tpo_core.llm.verifiers import Problem, held_out_problems, problem_stream, reward
from tpo_core.objectives import clipped_fraction, grpo_advantages, kl_k3


@dataclass
class RLVRResult:
    config: RLVRConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    model: object = field(default=None, repr=False)
    tokenizer: object = field(default=None, repr=False)
    last_rollout: Rollout | None = field(default=None, repr=False)
    evaluations: list[dict] = field(default_factory=list)  # {step, greedy, pass_at_k}

    def to_dict(self) -> dict:
        return dict(config=asdict(self.config), history=self.history, evaluations=self.evaluations)


METRICS = (
    "reward",
    "pass_at_k",
    "zero_variance",
    "truncated",
    "completion_length",
    "grad_norm",
    "skipped",
    "clipped",
    "kl",
    "seconds",
    "generate_seconds",
    "completion_tokens",
    "tokens_per_second",
    "peak_gpu_gb",
)


def rollout_metrics(rollout: Rollout) -> dict[str, float]:
    """Mean reward, pass@K (groups with a success), the share of zero-variance groups, the
    share of completions cut off by ``max_new_tokens`` (no end token), the mean length."""
    r, lengths = rollout.rewards, rollout.completion_mask.sum(-1)  # lengths include the end
    return dict(
        reward=r.mean().item(),
        pass_at_k=(r.amax(-1) > 0).float().mean().item(),
        zero_variance=(r.amax(-1) == r.amin(-1)).float().mean().item(),
        truncated=math.nan if rollout.ended is None else 1 - rollout.ended.float().mean().item(),
        completion_length=lengths.float().mean().item(),
    )


@torch.no_grad()
def evaluate(model, tokenizer, problems: list[Problem], config: RLVRConfig) -> dict[str, float]:
    """Held-out accuracy: ``greedy`` (one greedy completion per problem) and ``pass_at_k`` (a
    problem counts if any of K sampled completions is right)."""
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
    with autocast(device):
        out = model.generate(**enc, generation_config=greedy)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    sampled = sample_rollout(model, tokenizer, problems, config, seed=evaluation_seed(config))
    return dict(
        greedy=sum(reward(t, p) for t, p in zip(texts, problems, strict=True)) / len(problems),
        pass_at_k=(sampled.rewards.amax(-1) > 0).float().mean().item(),
    )


def evaluation_seed(config: RLVRConfig) -> int:
    """The sampling seed of evaluations: fixed, so two evaluations of one policy agree."""
    return config.seed * 100_003 + 99_991


def rlvr_train(
    config: RLVRConfig,
    callback: Callable[[int, RLVRResult], None] | None = None,
    progress: bool = True,
    policy: tuple | None = None,
    resume: bool = False,
) -> RLVRResult:
    """Run ``config.steps`` RLVR steps; ``callback(step, result)`` runs after each.

    ``policy`` is an already loaded ``(tokenizer, model)`` pair (default: :func:`load_policy`).
    With ``resume`` and a checkpoint in ``config.checkpoint_dir``, the run continues after its
    last saved step, exactly as if it had never stopped.
    """
    config.validate()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    tokenizer, model = policy or load_policy(config)
    ref = reference_policy(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    device = next(model.parameters()).device
    # float16 autocast (GPUs before compute capability 8.0) needs loss scaling
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda done: min(1.0, (done + 1) / warmup) if warmup else 1.0
    )
    stream = problem_stream(config.task, config.seed, config.gsm8k_path)
    result = RLVRResult(config, {m: [] for m in METRICS}, model, tokenizer)
    held_out = (
        held_out_problems(config.task, config.eval_problems, config.gsm8k_test_path)
        if config.eval_every
        else None
    )
    folder = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    first = 0
    if resume and folder is not None and (folder / CHECKPOINT).exists():
        first = load_checkpoint(folder, model, optimizer, scaler, scheduler, result)
    for _ in range(first * config.prompts_per_step):  # the problems the earlier steps drew
        next(stream)
    for step in tqdm(
        range(first, config.steps),
        desc=f"{config.loss} on {config.task}",
        disable=not progress,
        initial=first,
        total=config.steps,
    ):
        start = time.perf_counter()
        problems = list(itertools.islice(stream, config.prompts_per_step))
        rollout = sample_rollout(
            model, tokenizer, problems, config, seed=config.seed * 100_003 + step
        )
        generated = time.perf_counter()
        if config.epochs > 1:  # later passes need the snapshot; one pass reuses its own forward
            rollout.old_log_probs = frozen_log_probs(model, rollout, config)
        if ref is not None:
            with reference_context(ref, config):
                rollout.ref_log_probs = frozen_log_probs(ref, rollout, config)
        model.train()
        kl_sum, kl_tokens, skipped, clipped = 0.0, 0, 0, 0.0
        total_tokens = int(rollout.completion_mask.sum())
        for epoch in range(config.epochs):
            optimizer.zero_grad(set_to_none=True)
            for part in group_slices(len(problems), config.micro_batch_groups):
                rows = rollout.rows(part)
                new = token_log_probs(model, rollout, rows, config.temperature)
                old = new.detach() if rollout.old_log_probs is None else rollout.old_log_probs[rows]
                mask = rollout.completion_mask[rows]
                ref_rows = None if ref is None else rollout.ref_log_probs[rows]
                rewards = rollout.rewards[part].to(new.device)
                loss = rlvr_loss(
                    config,
                    new,
                    old,
                    rewards,
                    mask,
                    ref_rows,
                    total_groups=len(problems),
                    total_tokens=total_tokens,
                )
                scaler.scale(loss).backward()
                if config.loss == "grpo_per_token":  # tokens whose clip is active
                    advantages = grpo_advantages(rewards).view(-1, 1)
                    share = clipped_fraction(new, old, advantages, config.clip_eps, mask)
                    clipped += float(share) * int(mask.sum()) / (total_tokens * config.epochs)
                if ref_rows is not None and epoch == 0:  # KL of the rollout, over every token
                    kl_sum += kl_k3(new.detach(), ref_rows)[mask].sum().item()
                    kl_tokens += int(mask.sum())
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm).item()
            if math.isfinite(grad_norm):
                scaler.step(optimizer)
            else:  # an overflow or a NaN: drop this update rather than the run
                skipped += 1
            scaler.update()
            scheduler.step()
        seconds = time.perf_counter() - start
        metrics = rollout_metrics(rollout) | dict(
            grad_norm=grad_norm,
            skipped=skipped,
            clipped=clipped if config.loss == "grpo_per_token" else math.nan,
            kl=kl_sum / kl_tokens if kl_tokens else math.nan,
            seconds=seconds,
            generate_seconds=generated - start,
            completion_tokens=total_tokens,
            tokens_per_second=total_tokens / (generated - start),
            peak_gpu_gb=torch.cuda.max_memory_allocated(device) / 2**30
            if device.type == "cuda"
            else math.nan,
        )
        for name, value in metrics.items():
            result.history[name].append(value)
        result.last_rollout = rollout
        done = step + 1
        if held_out is not None and (done % config.eval_every == 0 or done == config.steps):
            result.evaluations.append(
                dict(step=done, **evaluate(model, tokenizer, held_out, config))
            )
        if (
            folder is not None
            and config.checkpoint_every
            and (done % config.checkpoint_every == 0 or done == config.steps)
        ):
            save_checkpoint(folder, model, optimizer, scaler, scheduler, result, done)
        if callback is not None:
            callback(step, result)
    return result
