"""TPO as the policy loss of TRL's ``GRPOTrainer``: TRL's multi-GPU machinery, TPO's update.

:class:`TPOTrainer` is a ``GRPOTrainer`` whose loss is TPO's. Generation
(including vLLM), reward functions, accelerate / DeepSpeed / FSDP, LoRA,
logging and checkpoints are TRL's, unchanged; only two things differ:

* the loss. For each prompt's group of K = ``num_generations`` completions,
  ``u`` is the z-score (population std) of their rewards within the group,
  ``q = softmax(log_softmax(L_old) + u / eta)`` over the sequence log-probs
  ``L_old`` of the rollout snapshot, and the loss is the cross-entropy
  ``-sum_i q_i log softmax(L)_i``, plus ``beta`` times the k3 KL to the
  reference model as in GRPO. ``u`` is computed from TRL's advantages:
  they are an increasing affine function of the rewards within a group, and
  z-scoring undoes any such function;
* the order of the rollouts. TPO's target is a softmax over the whole group,
  so every loss computation must hold whole groups. TRL spreads groups over
  processes and shuffles completions between gradient-accumulation steps;
  this trainer shuffles whole groups instead, and insists that
  ``per_device_train_batch_size`` be a multiple of ``num_generations``, so
  every process and every micro-batch holds whole groups.

With ``use_vllm=True`` the completions come from vLLM's copy of the policy,
whose numerics differ slightly from the trainer's. TRL then computes the
trainer's own snapshot log-probs (``old_per_token_logps``) and a per-token
importance ratio trainer / vLLM that it multiplies into GRPO's per-token
loss, an estimate of an expectation under the trainer's policy. TPO's loss is
no such estimate: it fits a target over the K candidates at hand, built from
the trainer's snapshot log-probs, so which sampler proposed the candidates
does not enter it, and the ratio is deliberately not applied.

Usage is GRPOTrainer's, plus ``eta``::

    trainer = TPOTrainer(model="Qwen/Qwen3-1.7B", reward_funcs=my_reward, args=GRPOConfig(...),
                         train_dataset=dataset, eta=1.0)
    trainer.train()
"""

from __future__ import annotations

import torch
from trl import GRPOTrainer

from tpo_core.objectives import (
    check_eta,
    kl_k3,
    masked_mean,
    sequence_log_probs,
    tpo_loss,
    tpo_target,
)


def check_group_layout(per_device_train_batch_size: int, num_generations: int) -> None:
    """Fail early, naming the settings, if a micro-batch could split a group."""
    if per_device_train_batch_size % num_generations:
        raise ValueError(
            "TPO needs each prompt's whole group of completions in one loss computation: set "
            f"per_device_train_batch_size ({per_device_train_batch_size}) to a multiple of "
            f"num_generations ({num_generations})"
        )


def check_whole_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, k: int) -> None:
    """Every block of ``k`` consecutive rows must be one prompt's group."""
    n = prompt_ids.shape[0]
    if n % k:
        raise ValueError(
            f"this micro-batch has {n} completions, not a multiple of num_generations ({k}): "
            "set per_device_train_batch_size to a multiple of num_generations"
        )
    ids = prompt_ids.masked_fill(prompt_mask == 0, -1).view(n // k, k, -1)
    if not (ids == ids[:, :1]).all():
        raise ValueError(
            "a block of num_generations consecutive completions mixes prompts: TPO needs "
            "whole groups in order (per_device_train_batch_size a multiple of num_generations, "
            "and no reordering of completions within a generation batch)"
        )


def _rows(value) -> int | None:
    """How many rows a batch entry has (None for scalars and other per-batch values)."""
    if isinstance(value, torch.Tensor):
        return value.shape[0] if value.dim() > 0 else None
    return len(value) if isinstance(value, list) else None


def _take(value, rows: torch.Tensor):
    if isinstance(value, torch.Tensor):
        return value[rows.to(value.device)]
    return [value[i] for i in rows.tolist()]


def shuffle_groups(batch: dict, k: int, generator: torch.Generator | None = None) -> dict:
    """Shuffle a batch of rows by whole groups of ``k`` (members keep their order)."""
    n = next(r for r in map(_rows, batch.values()) if r)
    order = torch.randperm(n // k, generator=generator)
    rows = (order[:, None] * k + torch.arange(k)).flatten()
    return {key: _take(v, rows) if _rows(v) == n else v for key, v in batch.items()}


def split_rows(batch: dict, parts: int) -> list[dict]:
    """``parts`` consecutive, equal slices of a batch's rows (other entries are shared)."""
    n = next(r for r in map(_rows, batch.values()) if r)
    size = n // parts
    return [
        {key: _take(v, torch.arange(i * size, (i + 1) * size)) if _rows(v) == n else v
         for key, v in batch.items()}
        for i in range(parts)
    ]  # fmt: skip


def tpo_trl_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    num_generations: int,
    eta: float = 1.0,
) -> torch.Tensor:
    """TPO's loss on a TRL batch: rows in whole groups of ``num_generations``."""
    mask = completion_mask.bool()
    k = num_generations
    seq_new = sequence_log_probs(per_token_logps, mask).view(-1, k)
    seq_old = sequence_log_probs(old_per_token_logps, mask).view(-1, k)
    scores = advantages.reshape(-1, k)  # affine in the rewards within each group
    return tpo_loss(seq_new, tpo_target(seq_old, scores, eta))


class TPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with TPO's loss (see the module docstring); ``eta`` is TPO's temperature."""

    def __init__(self, *args, eta: float = 1.0, **kwargs):
        self.eta = check_eta(eta)
        super().__init__(*args, **kwargs)
        check_group_layout(self.args.per_device_train_batch_size, self.num_generations)

    def _prepare_inputs(self, generation_batch):
        if not self.model.training:
            return super()._prepare_inputs(generation_batch)
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            batch = shuffle_groups(batch, self.num_generations)
            self._buffered_inputs = split_rows(batch, self.args.steps_per_generation)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _compute_loss(self, model, inputs):
        k = self.num_generations
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        check_whole_groups(prompt_ids, prompt_mask, k)
        mask = (
            completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        )
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1)
        )
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old
        loss = tpo_trl_loss(per_token_logps, old, inputs["advantages"], mask, k, self.eta)
        mode = "train" if self.model.training else "eval"
        if self.beta != 0.0:
            kl = masked_mean(kl_k3(per_token_logps, inputs["ref_per_token_logps"]), mask.bool())
            loss = loss + self.beta * kl
            self._metrics[mode]["kl"].append(self.accelerator.gather(kl.detach()).mean().item())
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        return loss
