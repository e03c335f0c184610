"""RLVR step cost on a real-sized model, TPO against GRPO (a GPU check; never part of CI).

    python benchmarks/llm_step.py              # Qwen2.5-0.5B's published shape, on the GPU
    python benchmarks/llm_step.py --tiny       # a toy shape, to check the script on a CPU

Builds a randomly initialised model with Qwen2.5-0.5B's dimensions locally
(no download), saves it and loads it back through ``from_pretrained``, then
runs a few RLVR steps with each loss through :func:`tpo_core.llm.rlvr_train`.
Rewards are random coin flips (a random model never answers right), so groups
are informative and both losses do their full work. Prints JSON: seconds per
step, generation tokens/s, peak GPU memory, and the time of the loss
computation itself (from per-token log-probs to the scalar, forward and
backward) for TPO and GRPO, with TPO's extra cost as a share of a step
(goal: at most 2%).
"""

import argparse
import json
import random
import statistics
import string
import tempfile
import time
from pathlib import Path

import torch

from tpo_core import llm
from tpo_core.llm import rollouts
from tpo_core.llm.memory import GIB, MODEL_SHAPES, ModelShape


def qwen2_config(shape: ModelShape, max_positions: int) -> dict:
    """``Qwen2Config`` arguments for the memory model's ``shape`` of a published model."""
    return dict(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        vocab_size=shape.vocab,
        max_position_embeddings=max_positions,
        rope_theta=1e6,
        tie_word_embeddings=shape.tied,
    )


QWEN25_05B = qwen2_config(MODEL_SHAPES["Qwen/Qwen2.5-0.5B-Instruct"], 32768)
TOY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def build_model(folder: Path, shape: dict, architecture: str = "qwen2") -> Path:
    """A random model of ``shape`` and a character tokenizer padded to its vocabulary:
    Qwen2 blocks, or Qwen3's (``architecture="qwen3"``: an RMSNorm on each head's queries and
    keys before attention, as in the paper's Qwen3-1.7B)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    blocks = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}
    if architecture not in blocks:
        raise ValueError(f"architecture must be one of {sorted(blocks)}, got {architecture!r}")
    config_class, model_class = blocks[architecture]

    chars = list(dict.fromkeys(string.printable))
    tokens = ["<pad>", "<eos>", "<unk>"] + chars
    tokens += [f"<t{i}>" for i in range(shape["vocab_size"] - len(tokens))]
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = config_class(**shape, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def coin_flip_rewards(p: float, seed: int):
    rng = random.Random(seed)
    return lambda completion, problem: float(rng.random() < p)


def loss_seconds(config: llm.RLVRConfig, rollout: llm.Rollout, repeats: int = 5) -> float:
    """Time of ``rlvr_loss`` forward + backward on one step's log-probs (the model excluded)."""
    device = rollout.input_ids.device
    g, k = rollout.rewards.shape
    old = -torch.rand(g * k, rollout.completion_mask.shape[1], device=device)
    rewards = rollout.rewards.to(device)
    mask = rollout.completion_mask
    times = []
    for _ in range(repeats + 1):
        new = (old + 0.01).requires_grad_()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        llm.rlvr_loss(config, new, old, rewards, mask).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first call pays one-off costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy shape (checks the script on CPU)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = build_model(Path(tempfile.mkdtemp()) / "model", TOY if args.tiny else QWEN25_05B)
    rollouts.reward = coin_flip_rewards(0.3, seed=0)  # a random model never answers right
    report = dict(
        model="toy" if args.tiny else "Qwen2.5-0.5B shape, random weights",
        device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
        k=args.k,
        prompts_per_step=args.prompts,
        max_new_tokens=args.max_new_tokens,
    )
    for loss in ("tpo", "grpo_per_token"):
        config = llm.RLVRConfig(
            model=str(folder),
            task="arithmetic",
            method=loss,
            k=args.k,
            prompts_per_step=args.prompts,
            steps=args.steps,
            lr=1e-6,
            max_new_tokens=args.max_new_tokens,
            chat_template=False,
            track_kl=False,
            micro_batch_groups=2,
            gradient_checkpointing=not args.tiny,
            device=device,
        )
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = llm.rlvr_train(config, progress=False)
        h = result.history
        steady = slice(1, None) if args.steps > 1 else slice(None)  # step 0 warms up kernels
        report[loss] = dict(
            seconds_per_step=statistics.mean(h["seconds"][steady]),
            generation_tokens_per_second=sum(h["completion_tokens"][steady])
            / sum(h["generate_seconds"][steady]),
            loss_seconds=loss_seconds(config, result.last_rollout),
            peak_gpu_memory_gib=torch.cuda.max_memory_allocated() / GIB
            if device == "cuda"
            else None,
        )
        del result
    extra = report["tpo"]["loss_seconds"] - report["grpo_per_token"]["loss_seconds"]
    report["tpo_loss_overhead_share_of_step"] = extra / report["grpo_per_token"]["seconds_per_step"]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
