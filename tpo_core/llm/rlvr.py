"""RLVR on a Hugging Face causal LM: TPO or per-token GRPO, and nothing else differs.

One step (the paper's LLM RLVR experiments, notebook 06):

1. draw ``prompts_per_step`` problems and sample K completions for each
   (``generate``, temperature sampling, batched);
2. score each completion with its verifier (1 or 0);
3. record the rollout snapshot's per-token log-probs ``l_old`` (and the
   initial policy's, for the KL);
4. for ``epochs`` passes, in micro-batches that keep every group of K whole,
   recompute the log-probs with gradients under the completion mask and
   minimise either

   * TPO: ``q = softmax(log_softmax(L_old) + u / eta)`` over the group's
     sequence log-probs ``L = sum_t l_t``, with ``u`` the z-scored rewards,
     and cross-entropy ``-sum_i q_i log softmax(L)_i``; or
   * ``grpo_per_token``: GRPO's clipped surrogate with a ratio per token and
     the group's z-scored advantages, as LLM trainers (TRL, verl) run it,

   plus, for both, ``beta`` times the k3 KL to the initial policy;
5. clip the gradient norm and take one AdamW step per pass.

The model is any causal LM that ``from_pretrained`` loads: a hub name or a
local folder. :func:`build_tiny_sums_model` writes such a folder for CPU
runs. LoRA (``peft``), gradient checkpointing and bf16 autocast (on GPUs
that support it) are switches of :class:`RLVRConfig`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tpo_core.llm.verifiers import LLM_TASKS, Problem, held_out_problems, problem_stream, reward
from tpo_core.objectives import (
    Replay,
    clipped_fraction,
    grpo_advantages,
    grpo_loss,
    kl_k3,
    masked_mean,
    sequence_log_probs,
    standardize_scores,
    tpo_loss,
    tpo_target,
)

LOSSES = ("tpo", "grpo_per_token")


@dataclass(frozen=True)
class RLVRConfig:
    """One RLVR run. Defaults are a CPU teaching size; :func:`choose_scale` picks GPU sizes."""

    model: str  # hub name or local folder
    task: str = "sums"
    loss: str = "tpo"  # one of LOSSES: "tpo" or "grpo_per_token"
    k: int = 8  # completions per prompt
    prompts_per_step: int = 8
    steps: int = 50
    lr: float = 1e-5
    epochs: int = 1  # optimiser steps per batch of rollouts
    max_new_tokens: int = 256
    temperature: float = 1.0
    eta: float = 1.0  # TPO's temperature
    clip_eps: float = 0.2  # GRPO's clip
    beta: float = 0.0  # weight of the k3 KL to the initial policy (both losses)
    track_kl: bool = False  # measure the KL to the start even at beta = 0 (an extra pass)
    micro_batch_groups: int = 1  # groups of K per forward/backward pass
    max_grad_norm: float = 1.0
    lora_rank: int = 0  # 0: train every weight
    merge_lora_for_generation: bool = False  # generate with W + BA merged (faster; rounds in bf16)
    gradient_checkpointing: bool = False
    chat_template: bool | None = None  # None: use the tokenizer's if it has one
    enable_thinking: bool = False  # Qwen3's <think> mode; off, so answers fit the token budget
    gsm8k_path: str | None = None  # a local GSM8K file instead of the hub
    gsm8k_test_path: str | None = None  # a local GSM8K test split, for the evaluations
    warmup_steps: int = 0  # linear learning-rate warmup over the first optimiser steps
    eval_every: int = 0  # evaluate on held-out problems every N steps and at the end (0: never)
    eval_problems: int = 64
    checkpoint_dir: str | None = None  # save trainable weights, optimiser and history here ...
    checkpoint_every: int = 0  # ... every N steps; rlvr_train(resume=True) continues from it
    device: str | None = None  # None: cuda if available, else cpu
    seed: int = 0

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.task not in LLM_TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(LLM_TASKS)}")
        if self.k < 2:
            raise ValueError(f"k must be at least 2 (a group compares completions), got {self.k}")
        for name in ("prompts_per_step", "steps", "epochs", "max_new_tokens", "micro_batch_groups",
                     "eval_problems"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "temperature", "eta", "max_grad_norm"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if not (0 < self.clip_eps < 1):
            raise ValueError(f"clip_eps must lie in (0, 1), got {self.clip_eps}")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a non-negative number, got {self.beta}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError("checkpoint_every needs a checkpoint_dir to save into")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (off) or positive, got {self.lora_rank}")


# ---------------------------------------------------------------- model


def resolve_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The precision the card computes fast: bfloat16 from compute capability 8.0 (A100, L4,
    H100), float16 on older GPUs (a T4 is 7.5: torch reports bf16 as supported there, but only
    emulates it, without tensor cores), full float32 on a CPU (None)."""
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def _autocast(device: torch.device):
    dtype = autocast_dtype(device)
    return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


def load_policy(config: RLVRConfig):
    """Tokenizer and model from ``config.model`` (``from_pretrained``), LoRA and checkpointing on.

    Weights stay in float32 (AdamW's master copy); with LoRA on a GPU the frozen
    base is loaded in the card's :func:`autocast_dtype` (peft keeps the adapters
    in float32). No ``trust_remote_code``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    tokenizer.padding_side = "left"  # generation continues at the right edge of every prompt
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = (autocast_dtype(device) if config.lora_rank else None) or torch.float32
    model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).to(device)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if config.lora_rank:
        from peft import LoraConfig, get_peft_model

        if config.gradient_checkpointing:
            model.enable_input_require_grads()
        lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank,
                          target_modules="all-linear", task_type="CAUSAL_LM")  # fmt: skip
        model = get_peft_model(model, lora)
    return tokenizer, model


def _reference(model, config: RLVRConfig):
    """A way to run the initial policy: LoRA's disabled adapter, or a frozen copy."""
    if not (config.beta > 0 or config.track_kl):
        return None
    if config.lora_rank:
        return model  # the base without adapters is the initial policy
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def _ref_context(ref, config: RLVRConfig):
    return ref.disable_adapter() if config.lora_rank else contextlib.nullcontext()


# ---------------------------------------------------------------- rollouts


@dataclass
class Rollout:
    """One step's groups: G problems x K completions, flattened group-major (G*K rows)."""

    problems: list[Problem]
    prompts: list[str]
    completions: list[str]  # G*K texts
    rewards: torch.Tensor  # (G, K)
    input_ids: torch.Tensor  # (G*K, P + T) prompt then completion
    attention_mask: torch.Tensor  # (G*K, P + T)
    completion_mask: torch.Tensor  # (G*K, T) bool: tokens up to and including the first EOS
    old_log_probs: torch.Tensor | None = None  # (G*K, T) at the rollout snapshot
    ref_log_probs: torch.Tensor | None = None  # (G*K, T) under the initial policy
    ended: torch.Tensor | None = None  # (G*K,) bool: the completion emitted an end token
    sampler_log_probs: torch.Tensor | None = None  # (G*K, T), the sampler's own, if asked

    @property
    def k(self) -> int:
        return self.rewards.shape[1]

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1] - self.completion_mask.shape[1]

    def rows(self, groups: slice) -> slice:
        return slice(groups.start * self.k, groups.stop * self.k)


def format_prompts(
    tokenizer, problems: list[Problem], chat: bool | None, enable_thinking: bool = False
) -> list[str]:
    """Prompts as the model sees them: through the chat template if there is (or should be) one.

    ``enable_thinking`` reaches templates that read it (Qwen3's); others ignore it.
    """
    use_chat = tokenizer.chat_template is not None if chat is None else chat
    if not use_chat:
        return [p.prompt for p in problems]
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p.prompt}], tokenize=False,
                                      add_generation_prompt=True, enable_thinking=enable_thinking)
        for p in problems
    ]  # fmt: skip


def end_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a completion: the model's generation EOS ids (Qwen's instruct
    models have two) and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return sorted(set(ids) | ({tokenizer.eos_token_id} - {None}))


def sampling_config(model, tokenizer, config: RLVRConfig):
    """An explicit ``GenerationConfig`` that samples from the policy the loss trains.

    ``generate`` fills every option left unset from the model's own
    ``generation_config``, which may hold a repetition penalty, top-k or top-p
    (Qwen2.5-Instruct ships ``repetition_penalty=1.1``): rollouts would then
    come from another distribution than ``pi_theta / temperature``. So every
    option that reshapes the logits is set here to its neutral value.
    """
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True, num_beams=1, temperature=config.temperature, top_k=0, top_p=1.0,
        min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0,
        encoder_repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
        renormalize_logits=False, suppress_tokens=[], begin_suppress_tokens=[],
        max_new_tokens=config.max_new_tokens, num_return_sequences=config.k,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=end_token_ids(model, tokenizer),
    )  # fmt: skip


def completion_mask(completion_ids: torch.Tensor, eos_id: int | list[int]) -> torch.Tensor:
    """True up to and including each row's first end token (everything if there is none)."""
    ends = torch.tensor(eos_id if isinstance(eos_id, list) else [eos_id])
    is_eos = torch.isin(completion_ids, ends.to(completion_ids.device))
    after_first = (is_eos.cumsum(-1) - is_eos.long()) > 0
    return ~after_first


@contextlib.contextmanager
def _merged_lora(model, merge: bool):
    """With ``merge``, the LoRA adapter folded into its base weights for the block: one matmul per
    layer instead of three. Exact in float32; in a bf16 base the merged weight is rounded, so
    the sampler then differs from the trained policy by that rounding."""
    if not (merge and hasattr(model, "merge_adapter")):
        yield
        return
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()


@torch.no_grad()
def sample_rollout(
    model, tokenizer, problems: list[Problem], config: RLVRConfig, seed: int,
    sampler_scores: bool = False,
):  # fmt: skip
    """K sampled completions per problem, decoded and scored; with ``sampler_scores`` also the
    sampler's own log-probs of the tokens it drew (``Rollout.sampler_log_probs``), to check
    them against the training forward's."""
    device = next(model.parameters()).device
    prompts = format_prompts(tokenizer, problems, config.chat_template, config.enable_thinking)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    torch.manual_seed(seed)
    model.eval()
    generation = sampling_config(model, tokenizer, config)
    generation.output_scores = generation.return_dict_in_generate = sampler_scores
    with _autocast(device), _merged_lora(model, config.merge_lora_for_generation):
        out = model.generate(**enc, generation_config=generation)
    sampled = None
    if sampler_scores:
        out, scores = out.sequences, out.scores  # scores: T x (G*K, vocab), as sampled from
        sampled = torch.stack([torch.log_softmax(x.float(), -1) for x in scores], 1)
    prompt_len = enc["input_ids"].shape[1]
    completion_ids = out[:, prompt_len:]  # (G*K, T), grouped by problem
    if sampled is not None:
        sampled = sampled.gather(-1, completion_ids[..., None])[..., 0]  # (G*K, T)
    ends = end_token_ids(model, tokenizer)
    mask = completion_mask(completion_ids, ends)  # (G*K, T)
    ended = torch.isin(completion_ids, torch.tensor(ends, device=device)).any(-1)  # (G*K,)
    texts = tokenizer.batch_decode(completion_ids.masked_fill(~mask, tokenizer.pad_token_id),
                                   skip_special_tokens=True)  # fmt: skip
    rewards = torch.tensor(
        [reward(text, problems[i // config.k]) for i, text in enumerate(texts)]
    ).view(len(problems), config.k)  # (G, K)
    attention = torch.cat([enc["attention_mask"].repeat_interleave(config.k, 0), mask.long()], 1)
    # attention: (G*K, prompt + T)
    return Rollout(problems, prompts, texts, rewards, out, attention, mask, ended=ended,
                   sampler_log_probs=sampled)  # fmt: skip


def token_log_probs(model, rollout: Rollout, rows: slice, temperature: float) -> torch.Tensor:
    """``log pi(y_t | x, y_<t)`` of the completion tokens of ``rows`` (tempered like sampling).

    The rows are cut to their own extent: the padding columns that none of
    them uses (left of their longest prompt, right of their longest
    completion) are dropped, and the log-probs there are returned as 0. Only
    the positions that predict completion tokens get logits
    (``logits_to_keep``), and each log-prob is ``logit[y] - logsumexp(logits)``
    in float32: no full-vocabulary log-softmax is built, nor a second copy for
    the temperature when it is 1. No KV cache is kept (``use_cache=False``).
    """
    p, t = rollout.prompt_length, rollout.completion_mask.shape[1]
    attention = rollout.attention_mask[rows]
    first = int(attention[:, :p].any(0).int().argmax())  # the first prompt column in use
    used = int(rollout.completion_mask[rows].any(0).nonzero().max()) + 1  # completion columns
    ids, attention = rollout.input_ids[rows, first : p + used], attention[:, first : p + used]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: count from the first token
    with _autocast(ids.device):
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions,
                       use_cache=False, logits_to_keep=used + 1).logits  # fmt: skip
    logits = logits[:, :-1].float()  # (rows, used, vocab): position P - 1 + t predicts y_t
    if temperature != 1.0:
        logits = logits / temperature
    targets = ids[:, -used:]  # (rows, used)
    log_probs = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, -1)
    return torch.nn.functional.pad(log_probs, (0, t - used))  # (rows, T), 0 past every end


def group_slices(n_groups: int, per_micro_batch: int) -> list[slice]:
    """Micro-batches of whole groups: ``[0, m), [m, 2m), ...`` over ``n_groups``."""
    return [
        slice(g, min(g + per_micro_batch, n_groups)) for g in range(0, n_groups, per_micro_batch)
    ]


@torch.no_grad()
def _snapshot_log_probs(model, rollout: Rollout, config: RLVRConfig) -> torch.Tensor:
    model.eval()
    parts = group_slices(len(rollout.problems), config.micro_batch_groups)
    return torch.cat(
        [token_log_probs(model, rollout, rollout.rows(g), config.temperature) for g in parts]
    )


# ---------------------------------------------------------------- losses


def rlvr_loss(
    config: RLVRConfig,
    new: torch.Tensor,
    old: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    ref: torch.Tensor | None = None,
    total_groups: int | None = None,
    total_tokens: int | None = None,
) -> torch.Tensor:
    """One micro-batch of whole groups' share of the step's policy loss.

    ``new``, ``old``, ``ref``: per-token log-probs (G*K, T); ``rewards`` (G, K);
    ``mask`` (G*K, T) marks completion tokens. TPO fits the group target over
    sequence log-probs (a mean over groups); ``grpo_per_token`` applies the
    clipped surrogate per token to the group z-scored advantages (a mean over
    tokens). Both add ``beta * k3 KL`` to ``ref`` (a mean over tokens). Means
    are over the whole step: ``total_groups`` groups and ``total_tokens``
    completion tokens (default: this micro-batch's), so how the step is cut
    into micro-batches changes nothing.
    """
    g, k = rewards.shape
    tokens = int(mask.sum())
    group_share = g / (total_groups or g)
    token_share = tokens / (total_tokens or tokens)
    if config.loss == "tpo":
        seq_new = sequence_log_probs(new, mask).view(g, k)  # (G, K): log pi(y|x) per completion
        seq_old = sequence_log_probs(old, mask).view(g, k)
        loss = group_share * tpo_loss(seq_new, tpo_target(seq_old, rewards, config.eta))
    else:
        advantages = grpo_advantages(rewards).view(g * k, 1)  # (G*K, 1), on every token
        surrogate = grpo_loss(new, old, advantages, beta=0.0, clip_eps=config.clip_eps, mask=mask)
        loss = token_share * surrogate
    if config.beta > 0:
        loss = loss + config.beta * token_share * masked_mean(kl_k3(new, ref), mask)
    return loss


# ---------------------------------------------------------------- training


@dataclass
class RLVRResult:
    config: RLVRConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    model: object = field(default=None, repr=False)
    tokenizer: object = field(default=None, repr=False)
    last_rollout: Rollout | None = field(default=None, repr=False)
    evaluations: list[dict] = field(default_factory=list)  # {step, greedy, pass_at_k}

    def to_dict(self) -> dict:
        return dict(config=asdict(self.config), history=self.history,
                    evaluations=self.evaluations)  # fmt: skip


METRICS = ("reward", "pass_at_k", "zero_variance", "truncated", "completion_length",
           "grad_norm", "skipped", "clipped", "kl", "seconds", "generate_seconds",
           "completion_tokens", "tokens_per_second", "peak_gpu_gb")  # fmt: skip


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
    greedy = GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=1.0,
                              no_repeat_ngram_size=0, max_new_tokens=config.max_new_tokens,
                              pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=end_token_ids(model, tokenizer))  # fmt: skip
    model.eval()
    with _autocast(device):
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


CHECKPOINT = "state.pt"


def save_checkpoint(folder: Path, model, optimizer, scaler, scheduler, result, step: int):
    """After ``step`` steps: the trainable weights, optimiser, loss scaler, LR schedule, RNG and
    history, in one file written to a temporary name and renamed (a crash never leaves half a
    checkpoint); a LoRA adapter also as peft's own folder, for ``PeftModel.from_pretrained``."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(folder / "adapter")
    state = dict(step=step, history=result.history, evaluations=result.evaluations,
                 weights={n: p.detach().cpu() for n, p in model.named_parameters()
                          if p.requires_grad},
                 optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                 scheduler=scheduler.state_dict(), torch_rng=torch.get_rng_state(),
                 python_rng=random.getstate())  # fmt: skip
    tmp = folder / f".{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / CHECKPOINT)


def load_checkpoint(folder: Path, model, optimizer, scaler, scheduler, result) -> int:
    """Restore what :func:`save_checkpoint` wrote; return the number of steps already done."""
    state = torch.load(folder / CHECKPOINT, weights_only=False)
    missing = set(state["weights"]) - {n for n, p in model.named_parameters() if p.requires_grad}
    if missing:
        raise ValueError(
            f"the checkpoint holds weights this model does not train: {sorted(missing)[:3]}"
        )
    model.load_state_dict(state["weights"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    steps = len(state["history"]["reward"])
    # a checkpoint from an earlier version lacks the metrics added since: NaN for its steps
    result.history = {m: state["history"].get(m, [math.nan] * steps) for m in METRICS}
    result.evaluations = state["evaluations"]
    return state["step"]


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
    ref = _reference(model, config)
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
    for step in tqdm(range(first, config.steps), desc=f"{config.loss} on {config.task}",
                     disable=not progress, initial=first, total=config.steps):  # fmt: skip
        start = time.perf_counter()
        problems = list(itertools.islice(stream, config.prompts_per_step))
        rollout = sample_rollout(
            model, tokenizer, problems, config, seed=config.seed * 100_003 + step
        )
        generated = time.perf_counter()
        if config.epochs > 1:  # later passes need the snapshot; one pass reuses its own forward
            rollout.old_log_probs = _snapshot_log_probs(model, rollout, config)
        if ref is not None:
            with _ref_context(ref, config):
                rollout.ref_log_probs = _snapshot_log_probs(ref, rollout, config)
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
                loss = rlvr_loss(config, new, old, rewards, mask, ref_rows,
                                 total_groups=len(problems), total_tokens=total_tokens)  # fmt: skip
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


def group_table(rollout: Rollout, group: int, eta: float = 1.0) -> dict:
    """One prompt's group, as notebook 01 draws it: completions, rewards, ``p_old``, ``u``, ``q``
    and GRPO's advantages (``p_old`` over the group, from the snapshot's sequence log-probs)."""
    if rollout.old_log_probs is None:
        raise ValueError(
            "the rollout has no snapshot log-probs; compute them with snapshot_log_probs"
        )
    rows = rollout.rows(slice(group, group + 1))
    seq_old = sequence_log_probs(rollout.old_log_probs[rows], rollout.completion_mask[rows])
    r = rollout.rewards[group].to(seq_old)
    return dict(
        prompt=rollout.prompts[group],
        completions=rollout.completions[rows],
        rewards=r.tolist(),
        p_old=torch.softmax(seq_old, -1).tolist(),
        u=standardize_scores(r).tolist(),
        q=tpo_target(seq_old, r, eta).tolist(),
        advantages=grpo_advantages(r).tolist(),
    )


def refit_group(model, rollout: Rollout, group: int, config: RLVRConfig, epochs: int) -> Replay:
    """Fit one prompt's group for ``epochs`` epochs of ``config.loss`` and watch its policy.

    A copy of ``model`` takes AdamW steps at ``config.lr`` on that group alone
    (no KL term), and after each epoch the completions' sequence log-probs
    give the group policy ``p = softmax(log pi(y|x))``, measured against TPO's
    target (:class:`tpo_core.objectives.Replay`). ``model`` is left untouched.
    """
    if rollout.old_log_probs is None:
        raise ValueError(
            "the rollout has no snapshot log-probs; compute them with snapshot_log_probs"
        )
    if not 0 <= group < len(rollout.problems):
        raise ValueError(f"group must be in [0, {len(rollout.problems)}), got {group}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    trained = copy.deepcopy(model)
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    no_kl = replace(config, beta=0.0)
    rows = rollout.rows(slice(group, group + 1))
    old, mask = rollout.old_log_probs[rows], rollout.completion_mask[rows]  # (K, T)
    rewards = rollout.rewards[group : group + 1].to(old.device)  # (1, K)
    history = [sequence_log_probs(old, mask).view(1, -1)]
    for _ in range(epochs):
        trained.train()
        optimizer.zero_grad(set_to_none=True)
        new = token_log_probs(trained, rollout, rows, config.temperature)
        rlvr_loss(no_kl, new, old, rewards, mask).backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        trained.eval()
        with torch.no_grad():
            new = token_log_probs(trained, rollout, rows, config.temperature)
        history.append(sequence_log_probs(new, mask).view(1, -1))
    return Replay.from_epochs(config.loss, history[0], rewards, history, config.eta)


def snapshot_log_probs(model, rollout: Rollout, config: RLVRConfig) -> Rollout:
    """Fill in ``rollout.old_log_probs`` from ``model`` (for inspecting a rollout afterwards)."""
    rollout.old_log_probs = _snapshot_log_probs(model, rollout, config)
    return rollout


# ---------------------------------------------------------------- scale and the tiny model


SUM_CHARACTERS = list("0123456789+=")


def build_tiny_sums_model(path: str | Path, seed: int = 0, warmup_steps: int = 50) -> Path:
    """Write a tiny causal LM and its tokenizer to ``path``, loadable with ``from_pretrained``.

    A 2-layer Llama-architecture model over the characters of ``a+b=c``,
    character-level tokenizer, pretrained for only ``warmup_steps`` steps of
    64 examples on ``a+b=c<eos>``. Like a small base model it knows the
    format and leans towards the right sums without being sure of them: at
    the default 50 steps it puts about 0.3 on the right digit, and RL
    sharpens it.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tpo_core.llm.verifiers import SUM_PAIRS

    path = Path(path)
    specials = ["<pad>", "<eos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + SUM_CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>",
                                        eos_token="<eos>", unk_token="<unk>",
                                        padding_side="left")  # fmt: skip
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=16,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    rng = random.Random(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(warmup_steps):
        pairs = [rng.choice(SUM_PAIRS) for _ in range(64)]
        texts = [f"{a}+{b}={a + b}" for a, b in pairs]
        ids = torch.tensor([tokenizer(t)["input_ids"] + [1] for t in texts])
        labels = ids.clone()
        labels[:, :4] = -100  # learn only what follows "a+b="
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# torch reports memory in GiB: a 40 GB A100 shows 39.4, an 80 GB card 79.2, a T4 14.6.
SMALL_GPU_GIB = 35


@dataclass(frozen=True)
class Scale:
    name: str
    reason: str
    settings: dict


def choose_scale(gpu_memory_gb: float | None = None, tiny_model: str | None = None) -> Scale:
    """The run size for the hardware: GPU memory in GB (None: no GPU, measured if omitted).

    * no GPU: the tiny local model on single-digit sums (CI, Binder, laptops);
    * a small GPU (under 35 GiB, e.g. Colab's T4 at 15 GiB, an L4, a 32 GB V100):
      Qwen2.5-0.5B-Instruct with LoRA on GSM8K;
    * a large GPU: Qwen3-1.7B with LoRA rank 32 and KL 1e-3 on GSM8K, the paper's setting.
    """
    if gpu_memory_gb is None and torch.cuda.is_available():
        gpu_memory_gb = torch.cuda.get_device_properties(0).total_memory / 2**30
    if not gpu_memory_gb:
        if tiny_model is None:
            raise ValueError("no GPU: pass tiny_model, a folder from build_tiny_sums_model")
        return Scale(
            "cpu",
            "no GPU found: a tiny local model learns single-digit sums on the CPU",
            dict(model=str(tiny_model), task="sums", k=8, prompts_per_step=16, steps=80,
                 lr=1e-3, max_new_tokens=2, chat_template=False, device="cpu",
                 track_kl=True),  # the KL pass costs little on a tiny model
        )  # fmt: skip
    if gpu_memory_gb < SMALL_GPU_GIB:
        return Scale(
            "small-gpu",
            f"a {gpu_memory_gb:.0f} GB GPU: a 0.5B instruct model with LoRA fits",
            dict(model="Qwen/Qwen2.5-0.5B-Instruct", task="gsm8k", k=8, prompts_per_step=8,
                 steps=100, lr=1e-5, max_new_tokens=256, lora_rank=32, beta=1e-3,
                 micro_batch_groups=1, gradient_checkpointing=True),
        )  # fmt: skip
    return Scale(
        "large-gpu",
        f"a {gpu_memory_gb:.0f} GB GPU: the paper's 1.7B model, K = 16, 16 prompts per step",
        dict(model="Qwen/Qwen3-1.7B", task="gsm8k", k=16, prompts_per_step=16, steps=200,
             lr=1e-5, max_new_tokens=512, lora_rank=32, beta=1e-3, micro_batch_groups=2,
             gradient_checkpointing=True),
    )  # fmt: skip
