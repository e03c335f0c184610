"""Peak memory and run time of an RLVR run, predicted from the shapes before it starts.

Memory (what ``torch.cuda.max_memory_allocated`` reports) is counted term by
term for the two phases of a step:

* generation: the weights, AdamW's state (kept between steps), the KV cache
  ``2 x layers x kv_dim x rows x (prompt + new) `` and a few float32 copies of
  one position's logits per row;
* training, one micro-batch: the weights and every trainable weight's
  gradient and AdamW state, the activations the backward needs (every layer's
  ``8 H + 4 I + 2 kv_dim`` values per token, or with gradient checkpointing
  only its input ``H``, plus one layer rebuilt at a time), and the larger of
  that rebuilt layer and the LM head's chunk (four float32 copies of
  ``chunk x vocab``: logits, their exponentials and both gradients).

The per-token counts were measured on a CPU with transformers' Qwen2 layers in
float32 (tests/test_llm_memory.py checks them against measured peaks); on a GPU
the activations are half precision except the RMSNorms' float32 copies. Time
is a rougher model, stated with its assumptions in :func:`predicted_minutes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """What memory and compute depend on in a decoder-only transformer."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool = True  # the LM head shares the input embedding's weights

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def params(self) -> int:
        h, q = self.hidden, self.heads * self.head_dim
        attention = h * q + 2 * h * self.kv_dim + q * h
        layer = attention + 3 * h * self.intermediate + 2 * h
        return self.vocab * h * (1 if self.tied else 2) + self.layers * layer + h

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear layer of the blocks: ``rank x (in + out)`` for each."""
        h, q, i = self.hidden, self.heads * self.head_dim, self.intermediate
        sides = (h + q) * 2 + (h + self.kv_dim) * 2 + (h + i) * 3
        return self.layers * rank * sides

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """From a transformers config (``AutoConfig.from_pretrained(...)``)."""
        heads = config.num_attention_heads
        return cls(
            vocab=config.vocab_size,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            tied=bool(getattr(config, "tie_word_embeddings", True)),
        )


# the models the scales use, from their published configs
MODEL_SHAPES = {
    "Qwen/Qwen2.5-0.5B-Instruct": ModelShape(151936, 896, 4864, 24, 14, 2, 64),
    "Qwen/Qwen3-1.7B": ModelShape(151936, 2048, 6144, 28, 16, 8, 128),
}
# prompt tokens a step's longest prompt may take, chat template included (a generous guess)
PROMPT_TOKENS = {
    "sums": 8,
    "sum_questions": 48,  # with SmolLM2's system prompt
    "arithmetic": 64,
    "gsm8k": 256,
    "graph_color": 512,
    "knights_knaves": 384,
}


@dataclass(frozen=True)
class Precision:
    """Bytes per value: frozen base weights, activations, KV cache."""

    weights: int
    activations: int

    @classmethod
    def of(cls, half: bool, lora: bool) -> Precision:
        """Half-precision autocast (a GPU) or float32 (a CPU); LoRA keeps its base in half."""
        return cls(weights=2 if half and lora else 4, activations=2 if half else 4)


def static_bytes(shape: ModelShape, settings: dict, precision: Precision) -> tuple[int, int]:
    """(weights, trainable) bytes: every weight and the reference copy; float32 trainable
    weights' AdamW state (8 bytes each; their gradients, 4 more, live only in training)."""
    rank = settings.get("lora_rank", 0)
    weights = shape.params * precision.weights
    trainable = shape.lora_params(rank) if rank else shape.params
    if rank:
        weights += 4 * trainable  # the adapters stay float32
    elif settings.get("beta", 0.0) > 0 or settings.get("track_kl", False):
        weights += shape.params * precision.weights  # a frozen copy of the initial policy
    return weights, trainable


def layer_values(shape: ModelShape) -> int:
    """Values per token that one layer keeps for its backward (measured: Qwen2, float32)."""
    return 8 * shape.hidden + 4 * shape.intermediate + 2 * shape.kv_dim


def training_peak_gib(
    shape: ModelShape, settings: dict, prompt_tokens: int, half: bool = True
) -> float:
    """Peak GiB of one micro-batch's forward and backward (its groups' rows, whole sequences)."""
    precision = Precision.of(half, bool(settings.get("lora_rank", 0)))
    weights, trainable = static_bytes(shape, settings, precision)
    rows = settings.get("micro_batch_groups", 1) * settings["k"]
    new = settings["max_new_tokens"]
    tokens = rows * (prompt_tokens + new)
    layer = layer_values(shape) * precision.activations + 2 * shape.hidden * 4  # norms in float32
    kept = shape.hidden * precision.activations if settings.get("gradient_checkpointing") else layer
    stored = tokens * (shape.layers * kept + 3 * shape.hidden * 4)
    chunk = settings.get("log_prob_chunk", 1024) or rows * new
    head = 4 * min(chunk, rows * new) * shape.vocab * 4
    rebuilt = tokens * layer if settings.get("gradient_checkpointing") else 0
    return (weights + 12 * trainable + stored + max(rebuilt, head)) / GIB


def generation_peak_gib(
    shape: ModelShape, settings: dict, prompt_tokens: int, half: bool = True
) -> float:
    """Peak GiB of sampling a step's ``prompts_per_step x K`` rows."""
    precision = Precision.of(half, bool(settings.get("lora_rank", 0)))
    weights, trainable = static_bytes(shape, settings, precision)
    rows = settings["prompts_per_step"] * settings["k"]
    length = prompt_tokens + settings["max_new_tokens"]
    cache = 2 * shape.layers * shape.kv_dim * rows * length * precision.activations
    logits = 3 * rows * shape.vocab * 4  # one position's logits per row, float32, and copies
    prefill = rows * prompt_tokens * (4 * shape.hidden + 2 * shape.intermediate)
    return (weights + 8 * trainable + cache + logits + prefill * precision.activations) / GIB


@dataclass(frozen=True)
class Card:
    """A GPU as the models see it: memory torch reports, dense half-precision FLOP/s, bandwidth."""

    name: str
    memory_gib: float
    flops: float  # dense float16/bfloat16 tensor-core FLOP/s
    bandwidth: float  # bytes/s


CARDS = (
    Card("T4", 14.6, 65e12, 320e9),
    Card("L4", 22.5, 121e12, 300e9),
    Card("A100-40", 39.4, 312e12, 1555e9),
    Card("A100-80", 79.2, 312e12, 2039e9),
    Card("H100-80", 79.6, 989e12, 3350e9),
    Card("H200", 140.4, 989e12, 4800e9),
)
# Memory a card needs beyond the predicted peak (both assumed; benchmarks/gpu_check.py records
# the peak reserved against the peak allocated on a real card, to correct them): the CUDA
# context with its lazily loaded kernels and cuBLAS's workspace, outside torch's allocator;
# and what torch's caching allocator reserves beyond what is allocated, in blocks freed by one
# shape that the next, larger one cannot reuse (a KV cache grows by one token per decoding
# step, the micro-batches' activations differ in length), as a share of the peak.
CUDA_CONTEXT_GIB = 0.5
FRAGMENTATION = 0.1
TRAIN_EFFICIENCY = 0.3  # share of the card's peak FLOP/s a training step reaches (assumed)
DECODE_SECONDS_PER_LAYER = 1.2e-3  # Python and kernel launches per layer per decoding step
DECODE_BANDWIDTH_SHARE = 0.7  # share of the bandwidth a memory-bound decoding step reaches
# An unmerged LoRA adapter's cost on the launch-bound part of a decoding step, as a factor
# (unmerged over merged), measured on a CPU with SmolLM2 and rank 8 by
# benchmarks/lora_decoding.py: the sampled batch's seconds (1.06: arithmetic dominates on a
# CPU) and the operators a decoding step launches (1.83: what a launch-bound GPU pays).
# Predictions give both ends: ``bound="low"`` and ``bound="high"``.
UNMERGED_LORA_DECODING = {"low": 1.06, "high": 1.83}


def reserve_gib(peak_gib: float) -> float:
    """The memory a card needs beyond a predicted peak: :data:`CUDA_CONTEXT_GIB` plus
    :data:`FRAGMENTATION` of the peak."""
    return CUDA_CONTEXT_GIB + FRAGMENTATION * peak_gib


def fits(card: Card, peak_gib: float) -> bool:
    """Whether a step whose larger peak (sampling or training) is ``peak_gib`` fits ``card``,
    with :func:`reserve_gib` to spare."""
    return peak_gib + reserve_gib(peak_gib) <= card.memory_gib


def step_seconds(
    shape: ModelShape, settings: dict, prompt_tokens: int, card: Card, bound: str = "high"
) -> dict:
    """Seconds of one step on ``card``: generation and training, by a simple model.

    Generation decodes ``max_new_tokens`` steps (a batch waits for its longest
    completion); each step takes the longer of ``DECODE_SECONDS_PER_LAYER``
    per layer (HF ``generate`` is bound by Python and kernel launches at these
    sizes), times :data:`UNMERGED_LORA_DECODING`'s ``bound`` end with an adapter
    left unmerged, and reading the weights and the KV cache at
    ``DECODE_BANDWIDTH_SHARE`` of the bandwidth. Training costs ``2 N`` FLOPs
    per token per pass (forward, backward of the activations, one more for a
    full fine-tune's weight gradients, one for checkpointing's rebuild, one
    per extra no-gradient pass: snapshot, reference), at ``TRAIN_EFFICIENCY``
    of the card's peak.
    """
    rows = settings["prompts_per_step"] * settings["k"]
    new = settings["max_new_tokens"]
    weight_bytes = shape.params * 2
    cache_bytes = 2 * shape.layers * shape.kv_dim * rows * (prompt_tokens + new / 2) * 2
    memory_bound = (weight_bytes + cache_bytes) / (card.bandwidth * DECODE_BANDWIDTH_SHARE)
    unmerged = settings.get("lora_rank") and not settings.get("merge_lora_for_generation")
    launches = shape.layers * DECODE_SECONDS_PER_LAYER
    launches *= UNMERGED_LORA_DECODING[bound] if unmerged else 1.0
    generate = new * max(launches, memory_bound)
    passes = 2 + (0 if settings.get("lora_rank") else 1)
    passes += 1 if settings.get("gradient_checkpointing") else 0
    passes *= settings.get("epochs", 1)
    passes += 1 if settings.get("epochs", 1) > 1 else 0  # the snapshot
    passes += 1 if settings.get("beta", 0.0) > 0 or settings.get("track_kl") else 0
    flops = 2 * shape.params * rows * (prompt_tokens + new) * passes
    train = flops / (card.flops * TRAIN_EFFICIENCY)
    return dict(generate=generate, train=train, total=generate + train)


def predicted_minutes(
    settings: dict, card: Card, shape: ModelShape | None = None, bound: str = "high"
) -> float:
    """Minutes of one run of ``settings`` on ``card`` (steps, plus evaluations if any), by
    :func:`step_seconds` at its ``bound`` ("low" or "high"; "high" plans for the worse
    end); ``shape`` defaults to the model's entry in ``MODEL_SHAPES``."""
    if bound not in UNMERGED_LORA_DECODING:
        raise ValueError(f"bound must be one of {sorted(UNMERGED_LORA_DECODING)}, got {bound!r}")
    shape = shape or MODEL_SHAPES[settings["model"]]
    prompt = PROMPT_TOKENS[settings["task"]]
    step = step_seconds(shape, settings, prompt, card, bound)
    every = settings.get("eval_every", 0)
    evaluations = math.ceil(settings["steps"] / every) if every else 0
    # an evaluation decodes its problems in chunks of a step's size: greedy (rows of one
    # problem each) and sampled (K rows each); decoding time is about a step's per chunk
    problems, chunk = settings.get("eval_problems", 64), settings["prompts_per_step"]
    chunks = math.ceil(problems / (chunk * settings["k"])) + math.ceil(problems / chunk)
    return (settings["steps"] * step["total"] + evaluations * chunks * step["generate"]) / 60
