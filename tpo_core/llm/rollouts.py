"""Rollouts: K sampled completions per prompt, scored by the verifier, and the per-token
log-probs of those completions under a policy (with gradients for the loss, without for the
snapshot and the reference)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from tpo_core.llm.config import LOG_PROB_CHUNK, RLVRConfig
from tpo_core.llm.model import autocast, merged_lora, release_free_heap
from tpo_core.llm.verifiers import Problem, reward


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
    overflowed: bool = False  # float16 sampling overflowed and was drawn again (in_range)

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
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p.prompt}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=enable_thinking,
        )
        for p in problems
    ]


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
        do_sample=True,
        num_beams=1,
        temperature=config.temperature,
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=1.0,
        encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_new_tokens=0,
        renormalize_logits=False,
        suppress_tokens=[],
        begin_suppress_tokens=[],
        max_new_tokens=config.max_new_tokens,
        num_return_sequences=config.k,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=end_token_ids(model, tokenizer),
    )


class NonFiniteLogits(ArithmeticError):
    """A decoding step's logits held NaN or +inf."""


def _finite_logits():
    """A logits processor that changes nothing and raises :class:`NonFiniteLogits` at the
    first NaN or +inf logit, before ``torch.multinomial`` fails on it (or argmax picks junk)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class FiniteLogits(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if not bool((scores < math.inf).all()):  # NaN and +inf both fail
                raise NonFiniteLogits
            return scores

    return LogitsProcessorList([FiniteLogits()])


def in_range(run, device: torch.device):
    """``run()`` under the card's autocast, and again with bfloat16 (float32's exponent range)
    if float16 overflowed: ``(result, overflowed)``.

    Models trained in bfloat16 (Qwen's among them) can exceed float16's 65504 in a
    layer: the logits turn NaN and sampling would crash. ``run`` raises
    :class:`NonFiniteLogits` (or returns a tensor with a non-finite value) to say so;
    the second try casts the matmuls to bfloat16, which cannot overflow there, at
    bfloat16's coarser rounding, and on a T4 without its tensor cores (slower). In any
    other precision a non-finite result is the model's own: ValueError.
    """
    for widened in (False, True):
        context = torch.autocast(device.type, dtype=torch.bfloat16) if widened else autocast(device)
        with context:
            on = torch.is_autocast_enabled(device.type)
            tried = torch.get_autocast_dtype(device.type) if on else torch.float32
            try:
                out = run()
                if not isinstance(out, torch.Tensor) or bool(torch.isfinite(out).all()):
                    return out, widened
            except NonFiniteLogits:
                pass
        if tried != torch.float16:
            break
    raise ValueError(
        f"the model's logits are not finite in {str(tried).removeprefix('torch.')} (NaN or inf "
        "in its weights or activations), and no wider precision is left to try"
    )


def generate_exactly(model, enc, generation):
    """``model.generate`` with ``generation`` and nothing else (but a check that every logit is
    finite, :class:`NonFiniteLogits`).

    ``generate`` fills every option a config leaves unset from the model's own
    ``generation_config`` (a saved ``bad_words_ids`` or ``forced_eos_token_id``
    reshapes the logits; transformers 4.56-4.57 even replaced explicit values
    equal to the library's defaults, such as ``temperature=1``). So for the
    call the model's own config *is* ``generation``: nothing can leak in,
    whatever the version.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    saved = inner.generation_config
    inner.generation_config = generation
    try:
        return model.generate(
            **enc, generation_config=generation, logits_processor=_finite_logits()
        )
    finally:
        inner.generation_config = saved


def completion_mask(completion_ids: torch.Tensor, eos_id: int | list[int]) -> torch.Tensor:
    """True up to and including each row's first end token (everything if there is none)."""
    ends = torch.tensor(eos_id if isinstance(eos_id, list) else [eos_id])
    is_eos = torch.isin(completion_ids, ends.to(completion_ids.device))
    after_first = (is_eos.cumsum(-1) - is_eos.long()) > 0
    return ~after_first


@torch.no_grad()
def sample_rollout(
    model,
    tokenizer,
    problems: list[Problem],
    config: RLVRConfig,
    seed: int,
    sampler_scores: bool = False,
):
    """K sampled completions per problem, decoded and scored; with ``sampler_scores`` also the
    sampler's own log-probs of the tokens it drew (``Rollout.sampler_log_probs``), to check
    them against the training forward's."""
    device = next(model.parameters()).device
    prompts = format_prompts(tokenizer, problems, config.chat_template, config.enable_thinking)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    model.eval()
    generation = sampling_config(model, tokenizer, config)
    generation.output_scores = generation.return_dict_in_generate = sampler_scores

    def draw():
        torch.manual_seed(seed)  # a second try draws with the same seed
        return generate_exactly(model, enc, generation)

    with merged_lora(model, config.merge_lora_for_generation):
        out, overflowed = in_range(draw, device)
    release_free_heap(device)  # the KV cache's freed pieces back to the system, on a CPU
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
    texts = tokenizer.batch_decode(
        completion_ids.masked_fill(~mask, tokenizer.pad_token_id), skip_special_tokens=True
    )
    rewards = torch.tensor(
        [reward(text, problems[i // config.k]) for i, text in enumerate(texts)]
    ).view(len(problems), config.k)  # (G, K)
    attention = torch.cat([enc["attention_mask"].repeat_interleave(config.k, 0), mask.long()], 1)
    # attention: (G*K, prompt + T)
    return Rollout(
        problems,
        prompts,
        texts,
        rewards,
        out,
        attention,
        mask,
        ended=ended,
        sampler_log_probs=sampled,
        overflowed=overflowed,
    )


def token_log_probs(
    model, rollout: Rollout, rows: slice, temperature: float, chunk_tokens: int = LOG_PROB_CHUNK
) -> torch.Tensor:
    """``log pi(y_t | x, y_<t)`` of the completion tokens of ``rows`` (tempered like sampling).

    The rows are cut to their own extent: the padding columns that none of
    them uses (left of their longest prompt, right of their longest
    completion) are dropped. The transformer runs once over the rows (no KV
    cache); the LM head and ``logit[y] - logsumexp(logits)`` (float32) run only
    at the positions that predict a completion token, ``chunk_tokens`` of them
    at a time, each chunk checkpointed: its ``(chunk, vocab)`` logits are
    rebuilt in the backward instead of kept, so memory holds one chunk's
    logits however many tokens the rows have. ``chunk_tokens=0`` (or a model
    whose forward reshapes its logits, as Gemma's soft-capping does) takes
    every logit from the model's own forward at once. Returns (rows, T), 0
    wherever the completion mask is off.
    """
    p, t = rollout.prompt_length, rollout.completion_mask.shape[1]
    attention = rollout.attention_mask[rows]
    first = int(attention[:, :p].any(0).int().argmax())  # the first prompt column in use
    mask = rollout.completion_mask[rows]
    used = int(mask.any(0).nonzero().max()) + 1  # completion columns in use
    mask = mask[:, :used]  # (rows, used)
    ids, attention = rollout.input_ids[rows, first : p + used], attention[:, first : p + used]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: count from the first token
    targets = ids[:, -used:][mask]  # (N,) the completion tokens
    inputs = dict(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=False)

    def forward() -> torch.Tensor:  # (N,)
        if chunk_tokens and _plain_lm_head(model):
            hidden = model.get_decoder()(**inputs).last_hidden_state  # (rows, P' + used, H)
            hidden = hidden[:, -used - 1 : -1][mask]  # (N, H): position P - 1 + t predicts y_t
            return _chunked_head_log_probs(model, hidden, targets, temperature, chunk_tokens)
        logits = model(**inputs, logits_to_keep=used + 1).logits[:, :-1]  # (rows, used, V)
        return _head_log_probs(torch.nn.Identity(), logits[mask], targets, temperature)

    picked, _ = in_range(forward, ids.device)
    log_probs = picked.new_zeros(mask.shape)
    log_probs[mask] = picked  # (rows, used)
    return torch.nn.functional.pad(log_probs, (0, t - used))  # (rows, T), 0 past every end


def _head_log_probs(head, hidden, targets, temperature: float) -> torch.Tensor:
    """``log softmax(head(h) / temperature)[y]`` in float32: (N, H), (N,) -> (N,)."""
    logits = head(hidden).float()  # (N, V)
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(logits, -1)


def _chunked_head_log_probs(model, hidden, targets, temperature, chunk_tokens) -> torch.Tensor:
    """:func:`_head_log_probs` over ``chunk_tokens`` positions at a time, each chunk's logits
    recomputed in the backward (``torch.utils.checkpoint``) rather than stored."""
    head = model.get_output_embeddings()
    parts = zip(hidden.split(chunk_tokens), targets.split(chunk_tokens), strict=True)
    if not torch.is_grad_enabled():
        return torch.cat([_head_log_probs(head, h, y, temperature) for h, y in parts])
    return torch.cat(
        [
            checkpoint(_head_log_probs, head, h, y, temperature, use_reentrant=False)
            for h, y in parts
        ]
    )


# config fields by which a model's forward reshapes the LM head's output (Gemma, Cohere, Granite)
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def _plain_lm_head(model) -> bool:
    """Whether the model's logits are its LM head's output, as in Llama, Qwen and Mistral."""
    return all(getattr(model.config, name, None) is None for name in LOGIT_TRANSFORMS)


def group_slices(n_groups: int, per_micro_batch: int) -> list[slice]:
    """Micro-batches of whole groups: ``[0, m), [m, 2m), ...`` over ``n_groups``."""
    return [
        slice(g, min(g + per_micro_batch, n_groups)) for g in range(0, n_groups, per_micro_batch)
    ]


@torch.no_grad()
def frozen_log_probs(model, rollout: Rollout, config: RLVRConfig) -> torch.Tensor:
    """Every row's per-token log-probs (G*K, T) without gradients, one micro-batch at a time."""
    model.eval()
    parts = group_slices(len(rollout.problems), config.micro_batch_groups)
    return torch.cat(
        [
            token_log_probs(
                model, rollout, rollout.rows(g), config.temperature, config.log_prob_chunk
            )
            for g in parts
        ]
    )


def snapshot_log_probs(model, rollout: Rollout, config: RLVRConfig) -> Rollout:
    """Fill in ``rollout.old_log_probs`` from ``model`` (for inspecting a rollout afterwards)."""
    rollout.old_log_probs = frozen_log_probs(model, rollout, config)
    return rollout
