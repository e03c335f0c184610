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
does not enter it, and the ratio is deliberately not applied: with vLLM the trainer
asks for ``vllm_importance_sampling_correction=False`` (TRL's default is True), so that
nothing it computes is silently dropped.

Usage is GRPOTrainer's, with :class:`TPOConfig` (a ``GRPOConfig`` with TPO's
settings as fields, so ``HfArgumentParser`` sets them from the command line)::

    args = TPOConfig(output_dir="tpo", num_generations=16, per_device_train_batch_size=16, eta=1.0)
    trainer = TPOTrainer(model="Qwen/Qwen3-1.7B", reward_funcs=my_reward, args=args,
                         train_dataset=dataset)
    trainer.train()

GRPO options whose meaning is GRPO's per-token loss (``loss_type``, the
clip's ``epsilon``, entropy masks and bonuses, ...) have no counterpart in
TPO's loss: the trainer refuses them with an error naming each one rather
than ignoring them, as it refuses sampling options that would draw the completions from
another distribution than the policy (``top_p``, ``top_k``, ``min_p``,
``repetition_penalty``, ``generation_kwargs``). A completion masked out entirely
(``mask_truncated_completions``) drops out of its group's target and softmax, as if it had
not been sampled.

Not to be confused with ``trl.experimental.tpo.TPOTrainer``: that is Triple
Preference Optimization, an offline preference method on fixed datasets. This
one is Target Policy Optimization, an online RL update (the paper's).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from trl import GRPOConfig, GRPOTrainer

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
        {
            key: _take(v, torch.arange(i * size, (i + 1) * size)) if _rows(v) == n else v
            for key, v in batch.items()
        }
        for i in range(parts)
    ]


def tpo_trl_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    num_generations: int,
    eta: float = 1.0,
) -> torch.Tensor:
    """TPO's loss on a TRL batch: rows in whole groups of ``num_generations``, a mean over groups.

    A row whose completion mask is off everywhere (a truncated completion under
    ``mask_truncated_completions``) is no candidate: its sequence log-prob
    would be 0, ``p_old`` near 1, and the group's target silenced. It is left
    out of its group's z-scores, target and softmax; a group with no candidate
    left adds 0.
    """
    mask = completion_mask.bool()
    k = num_generations
    candidates = mask.any(-1).view(-1, k)  # (G, K)
    live = candidates.any(-1)  # (G,) groups with a candidate
    if not live.any():
        return per_token_logps.sum() * 0.0  # nothing to fit; keeps the graph
    seq_new = sequence_log_probs(per_token_logps, mask).view(-1, k)[live]
    seq_old = sequence_log_probs(old_per_token_logps, mask).view(-1, k)[live]
    scores = advantages.reshape(-1, k)[live]  # affine in the rewards within each group
    kept = candidates[live]
    target = tpo_target(seq_old, scores, eta, mask=kept)
    return tpo_loss(seq_new, target, mask=kept) * live.sum() / live.numel()


@dataclass
class TPOConfig(GRPOConfig):
    """``GRPOConfig`` plus TPO's settings, as fields ``HfArgumentParser`` can set."""

    eta: float = field(
        default=1.0,
        metadata={"help": "TPO's temperature: q = softmax(log p_old + u / eta) over each group."},
    )

    def __post_init__(self):
        super().__post_init__()
        check_eta(self.eta)
        check_supported(self)


def _defaults(*names: str) -> dict:
    return {n: next(f.default for f in fields(GRPOConfig) if f.name == n) for n in names}


# GRPO options TPO's loss has no counterpart for, with the value that leaves them off
LOSS_OPTIONS = _defaults(
    "loss_type",  # GRPO's token aggregation (TPO's loss is a mean over groups)
    "epsilon",  # GRPO's clip (TPO has none)
    "epsilon_high",
    "delta",
    "importance_sampling_level",
    "top_entropy_quantile",
    "off_policy_mask_threshold",
    "entropy_coef",
    "use_adaptive_entropy",
)
# Sampling options that reshape the logits: the completions would come from another
# distribution than the policy the loss trains (its target's p_old), with their neutral values
SAMPLING_OPTIONS = _defaults("top_p", "top_k", "min_p", "repetition_penalty", "generation_kwargs")


def check_supported(args: GRPOConfig) -> None:
    """Refuse, naming each, the options that TPO's loss would silently ignore: GRPO's loss
    options, sampling options that make sampling off-policy, and with vLLM, TRL's
    importance-sampling correction (TPO's target uses the trainer's own snapshot log-probs,
    whichever sampler proposed the candidates; the module docstring says why)."""
    problems = []
    for options, why in (
        (LOSS_OPTIONS, "these shape GRPO's per-token loss, which TPO's loss replaces"),
        (SAMPLING_OPTIONS, "these reshape the sampling distribution, so the completions would "
         "not come from the policy TPO's target is built on"),
    ):  # fmt: skip
        changed = {n: getattr(args, n) for n, off in options.items() if getattr(args, n) != off}
        if changed:
            settings = ", ".join(f"{name}={value!r}" for name, value in changed.items())
            problems.append(f"{settings} ({why}: leave them at their defaults)")
    if args.use_vllm and args.vllm_importance_sampling_correction:
        problems.append(
            "vllm_importance_sampling_correction=True (TPO's loss applies no sampler/trainer "
            "ratio; set it to False)"
        )
    if problems:
        raise ValueError("TPOTrainer does not use " + "; nor ".join(problems))


class TPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with TPO's loss (see the module docstring); ``args`` is a :class:`TPOConfig`
    (a plain ``GRPOConfig`` runs TPO at ``eta = 1``).

    This is Target Policy Optimization. ``trl.experimental.tpo.TPOTrainer`` is another method:
    Triple Preference Optimization, an offline preference method.
    """

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if config is not None:  # before TRL loads a model or starts vLLM
            check_supported(config)
        super().__init__(*args, **kwargs)
        self.eta = check_eta(getattr(self.args, "eta", 1.0))
        check_group_layout(self.args.per_device_train_batch_size, self.num_generations)
        if self.args.eval_strategy != "no":
            check_group_layout(self.args.per_device_eval_batch_size, self.num_generations_eval)

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
        mode = "train" if self.model.training else "eval"
        k = self.num_generations if mode == "train" else self.num_generations_eval
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        check_whole_groups(prompt_ids, prompt_mask, k)
        mask = (
            completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        )
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        per_token_logps, _, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_aux_loss=self.aux_loss_enabled,
        )
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old
        loss = tpo_trl_loss(per_token_logps, old, inputs["advantages"], mask, k, self.eta)
        if self.beta != 0.0:  # the same on every process: each one reaches the gather below
            kl = kl_k3(per_token_logps, inputs["ref_per_token_logps"])
            if self.args.use_bias_correction_kl:  # TRL's importance weight on the KL, as GRPO's
                kl = kl * torch.exp(per_token_logps - old)
            # a batch with no completion token left (all masked) adds no KL
            kl = masked_mean(kl, mask.bool()) if mask.any() else kl.sum() * 0.0
            loss = loss + self.beta * kl
            self._metrics[mode]["kl"].append(self.accelerator.gather(kl.detach()).mean().item())
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        if self.aux_loss_enabled:  # a mixture-of-experts router's balancing loss, as GRPO adds it
            normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / normalizer
        return loss
