"""Everything GPU-related, checked in one run (about 8 minutes on one H100 or H200, no internet).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --cpu-smoke --out /tmp/smoke.json   # toy sizes, on the CPU

Models are built locally from their published dimensions with random weights
(as ``llm_step.py`` does), so nothing is downloaded; rewards are coin flips,
so groups are informative and the losses do their full work. In order:

1. ``large``: peak memory and step time at the paper's setting (Qwen3-1.7B's
   dimensions, LoRA r32, checkpointing, K = 16 x 16 prompts x 512 tokens), with
   ``micro_batch_groups`` 2 and 1;
2. ``small_t4``: the small setting (Qwen2.5-0.5B's dimensions) in a T4's 15 GiB,
   in float16 with loss scaling, the precision a T4 gets;
3. ``log_probs``: the completion-only log-probs against the naive full
   log-softmax: time, peak memory, largest difference;
4. ``generation``: tokens/s with the LoRA adapter merged and unmerged;
5. ``sampler``: the sampler's own log-probs against the training forward's, on
   left-padded prompts of mixed lengths;
6. ``token_engine``: the token tasks' seconds per episode, one seed and 20 replicas.

It writes one JSON file with every figure and its provenance.
"""

import argparse
import dataclasses
import json
import random
import string
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from llm_step import QWEN25_05B, TOY, build_model, coin_flip_rewards  # noqa: E402

from tpo_core import llm  # noqa: E402
from tpo_core.llm import model as llm_model  # noqa: E402
from tpo_core.llm import rollouts  # noqa: E402
from tpo_core.llm import train as llm_train  # noqa: E402
from tpo_core.tokens.grid import provenance  # noqa: E402
from tpo_core.tokens.replicas import train_replicas  # noqa: E402
from tpo_core.tokens.train import TrainConfig, train  # noqa: E402

# Qwen3-1.7B's dimensions in Qwen2 blocks (no q/k norm): the memory and compute of the paper's model
QWEN3_17B = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, vocab_size=151936,
                 max_position_embeddings=40960, rope_theta=1e6,
                 tie_word_embeddings=True)  # fmt: skip
T4_GIB = 15.0


@contextmanager
def measured(device: str):
    """Wall time and peak GPU memory (GiB) of the block, in the yielded dict."""
    out = {}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    yield out
    if device == "cuda":
        torch.cuda.synchronize()
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out["seconds"] = time.perf_counter() - start


def rlvr_config(folder, device, **settings):
    base = dict(model=str(folder), task="arithmetic", steps=2, lr=1e-6, chat_template=False,
                device=device, lora_rank=32, beta=1e-3, gradient_checkpointing=True)  # fmt: skip
    return llm.RLVRConfig(**(base | settings))


def steps(config, device) -> dict:
    """Seconds per step (after the first) and peak memory of a short run, or the OOM."""
    try:
        with measured(device) as m:
            history = llm.rlvr_train(config, progress=False).history
    except torch.OutOfMemoryError as err:
        return dict(out_of_memory=str(err).splitlines()[0])
    later = history["seconds"][1:] or history["seconds"]
    return dict(seconds_per_step=sum(later) / len(later), peak_gib=m.get("peak_gib"),
                generation_tokens_per_second=history["tokens_per_second"][-1],
                truncated=history["truncated"][-1])  # fmt: skip


def check_large(folder, device, smoke) -> dict:
    size = dict(k=4, prompts_per_step=2, max_new_tokens=8) if smoke else dict(
        k=16, prompts_per_step=16, max_new_tokens=512)  # fmt: skip
    return {f"micro_batch_groups={m}": steps(rlvr_config(folder, device, micro_batch_groups=m,
                                                         **size), device)
            for m in (2, 1)}  # fmt: skip


def check_small_t4(folder, device, smoke) -> dict:
    size = dict(k=4, prompts_per_step=2, max_new_tokens=8) if smoke else dict(
        k=8, prompts_per_step=8, max_new_tokens=256)  # fmt: skip
    real = llm_model.autocast_dtype
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, T4_GIB / total))
        float16 = lambda d: torch.float16 if d.type == "cuda" else None  # noqa: E731
        llm_model.autocast_dtype = llm_train.autocast_dtype = float16
    try:
        return steps(rlvr_config(folder, device, micro_batch_groups=1, **size), device) | dict(
            precision="float16 with loss scaling" if device == "cuda" else "float32 (CPU)"
        )
    finally:
        llm_model.autocast_dtype = llm_train.autocast_dtype = real
        if device == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0)


def a_rollout(folder, device, smoke):
    size = dict(k=4, prompts_per_step=2, max_new_tokens=8) if smoke else dict(
        k=16, prompts_per_step=8, max_new_tokens=256)  # fmt: skip
    config = rlvr_config(folder, device, **size)
    tokenizer, model = llm.load_policy(config)
    rng = random.Random(0)
    problems = [llm.verifiers.Problem(prompt="".join(rng.choices(string.ascii_letters,
                                                                 k=rng.randint(3, 40))),
                                      answer="0", task="arithmetic")
                for _ in range(config.prompts_per_step)]  # fmt: skip  # mixed prompt lengths
    rollout = llm.sample_rollout(model, tokenizer, problems, config, seed=0)
    return config, tokenizer, model, problems, rollout


def check_log_probs(folder, device, smoke) -> dict:
    config, _, model, _, rollout = a_rollout(folder, device, smoke)
    rows = slice(0, len(rollout.completions))
    t = rollout.completion_mask.shape[1]
    out = {}
    with measured(device) as m:
        new = llm.token_log_probs(model, rollout, rows, config.temperature)
        new.sum().backward()
    out["completion_only"] = m
    model.zero_grad()
    with measured(device) as m, llm_model.autocast(torch.device(device)):
        logits = model(
            input_ids=rollout.input_ids,
            attention_mask=rollout.attention_mask,
            position_ids=(rollout.attention_mask.cumsum(-1) - 1).clamp(min=0),
        ).logits
        naive = torch.log_softmax(logits.float(), -1)[:, -t - 1 : -1]
        naive = naive.gather(-1, rollout.input_ids[:, -t:, None])[..., 0]
        naive.sum().backward()
    out["naive"] = m
    mask = rollout.completion_mask
    out["largest_difference"] = (new - naive).detach()[mask].abs().max().item()
    return out


def check_generation(folder, device, smoke) -> dict:
    config, tokenizer, model, problems, _ = a_rollout(folder, device, smoke)
    out = {}
    for merged in (False, True):
        merging = dataclasses.replace(config, merge_lora_for_generation=merged)
        with measured(device) as m:
            rollout = llm.sample_rollout(model, tokenizer, problems, merging, seed=1)
        out["merged" if merged else "unmerged"] = dict(
            tokens_per_second=int(rollout.completion_mask.sum()) / m["seconds"], **m
        )
    return out


def check_sampler(folder, device, smoke) -> dict:
    config, tokenizer, model, problems, _ = a_rollout(folder, device, smoke)
    rollout = llm.sample_rollout(model, tokenizer, problems, config, 0, sampler_scores=True)
    with torch.no_grad():
        trainer = llm.token_log_probs(model, rollout, slice(0, len(rollout.completions)), 1.0)
    diff = (rollout.sampler_log_probs - trainer)[rollout.completion_mask].abs()
    return dict(largest_difference=diff.max().item(), mean_difference=diff.mean().item(),
                prompt_lengths=sorted({len(p) for p in rollout.prompts}))  # fmt: skip


def check_token_engine(device, smoke) -> dict:
    settings = dict(task="reverse_copy", reward="terminal", length=3 if smoke else 7, vocab=2,
                    batch=8 if smoke else 100, k=4 if smoke else 8, episodes=3 if smoke else 30,
                    device=device)  # fmt: skip
    config = TrainConfig(**settings)
    replicas = 2 if smoke else 20
    one = train(config, progress=False).seconds_per_episode
    many = train_replicas(config, list(range(replicas)), progress=False)[0].seconds_per_episode
    return dict(one_seed_seconds_per_episode=one, replicas=replicas,
                replicas_seconds_per_episode=many,
                throughput_vs_one_seed=one * replicas / many)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every check at toy size, CPU")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    args = parser.parse_args()
    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        parser.exit(2, "error: no CUDA GPU here; use --cpu-smoke to check the script on a CPU\n")
    rollouts.reward = coin_flip_rewards(0.3, seed=0)  # a random model never answers right
    tmp = Path(tempfile.mkdtemp())
    large = build_model(tmp / "large", TOY if smoke else QWEN3_17B)
    small = build_model(tmp / "small", TOY if smoke else QWEN25_05B)
    report = dict(provenance=provenance(sys.argv[1:]), smoke=smoke,
                  device=torch.cuda.get_device_name() if device == "cuda" else "cpu")  # fmt: skip
    checks = dict(
        large=lambda: check_large(large, device, smoke),
        small_t4=lambda: check_small_t4(small, device, smoke),
        log_probs=lambda: check_log_probs(large, device, smoke),
        generation=lambda: check_generation(small, device, smoke),
        sampler=lambda: check_sampler(small, device, smoke),
        token_engine=lambda: check_token_engine(device, smoke),
    )
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            report[name] = check()
        except Exception as err:  # one failed check must not hide the others' figures
            report[name] = dict(error=f"{type(err).__name__}: {err}")
        report[name]["check_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {json.dumps(report[name])}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))  # what is done survives a timeout
    return 1 if any("error" in report[name] for name in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
