"""What an unmerged LoRA adapter costs a decoding step, measured on the CPU as two ratios
(unmerged over merged): the seconds of a sampled batch and the number of operators a
decoding step launches.

    python benchmarks/lora_decoding.py            # SmolLM2-135M-Instruct, LoRA rank 8
    python benchmarks/lora_decoding.py --model DIR

peft keeps the adapter beside each base weight, so every adapted linear layer runs its base
matmul plus the adapter's two small matmuls, a scale and an add. On a GPU a decoding step of
a small model is bound by operator launches, not arithmetic, so the operator ratio is the
upper end of the slowdown there, and the CPU's time ratio (arithmetic counts too) the lower
end; ``tpo_core.llm.memory.UNMERGED_LORA_DECODING`` holds the two. Prints JSON.
"""

import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from tpo_core import llm


def sample_seconds(model, tokenizer, problems, config, repeats: int) -> float:
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        llm.sample_rollout(model, tokenizer, problems, config, seed=seed)
        times.append(time.perf_counter() - start)
    return min(times)


def operators_per_token(model, tokenizer, problems, config) -> float:
    """aten operators launched per generated token (prefill included, so an upper bound)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rollout = llm.sample_rollout(model, tokenizer, problems, config, seed=0)
    ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    return ops / rollout.completion_mask.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a local model folder instead of SmolLM2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = llm.choose_scale(0).settings | dict(prompts_per_step=4, max_new_tokens=16)
    if args.model:
        settings |= dict(model=args.model, chat_template=False)
    report = {}
    for merged in (False, True):
        config = llm.RLVRConfig(**(settings | dict(merge_lora_for_generation=merged)))
        tokenizer, model = llm.load_policy(config, progress=False)
        with torch.no_grad():  # an adapter that is not zero, as after training
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 1e-3)
        problems = llm.verifiers.make_problems(config.task, config.prompts_per_step, seed=0)
        name = "merged" if merged else "unmerged"
        report[name] = dict(
            seconds=sample_seconds(model, tokenizer, problems, config, args.repeats),
            operators_per_token=operators_per_token(model, tokenizer, problems, config),
        )
    u, m = report["unmerged"], report["merged"]
    report["unmerged_over_merged"] = dict(
        seconds=round(u["seconds"] / m["seconds"], 3),
        operators=round(u["operators_per_token"] / m["operators_per_token"], 3),
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
