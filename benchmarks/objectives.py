"""Time TPO's loss against GRPO's on LLM-sized groups (CPU or GPU).

    python benchmarks/objectives.py [--groups 16] [--k 16] [--tokens 512]

Prints milliseconds per forward+backward for each loss on random per-token
log-probs; TPO sums tokens into sequence log-probs first, GRPO works per token.
"""

import argparse
import time

import torch

import tpo_core as tc


def time_it(fn, repeats):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    shape = (args.groups, args.k, args.tokens)
    token_lp = -torch.rand(shape, generator=g)
    mask = torch.rand(shape, generator=g) > 0.2
    rewards = (torch.rand(shape[:2], generator=g) > 0.5).float()
    old = token_lp.clone()

    def tpo():
        lp = token_lp.clone().requires_grad_()
        q = tc.tpo_target(tc.sequence_log_probs(old, mask), rewards)
        tc.tpo_loss(tc.sequence_log_probs(lp, mask), q).backward()

    def grpo():
        lp = token_lp.clone().requires_grad_()
        adv = tc.grpo_advantages(rewards)[..., None]
        tc.grpo_loss(lp, old, adv, beta=0.04, mask=mask).backward()

    for name, fn in [("tpo", tpo), ("grpo", grpo)]:
        print(f"{name:>5}: {time_it(fn, args.repeats):7.3f} ms per loss+backward, shape {shape}")


if __name__ == "__main__":
    main()
