"""TPO's exact skip of unanimous groups, timed: seconds per episode with and without it, side by
side, on a model late in training (most groups then hold K copies of one answer).

    python benchmarks/unanimous_skip.py                     # H = 6: 300 episodes, then 30 timed
    python benchmarks/unanimous_skip.py --length 3 --late 3 --timed 2     # a quick check

It trains one run to get late, then times episodes (rollout + the method's
epochs of updates) of two copies of that model, one with the skip and one
without, alternating so that both see the same machine load. Both copies
sample from the same generator state each episode, and the skip changes
nothing but float rounding, so they see the same batches.
"""

import argparse
import copy
import functools
import statistics
import time

import torch

from tpo_core.tokens.algorithms import get_algorithm
from tpo_core.tokens.rollouts import sequence_rollouts
from tpo_core.tokens.train import TrainConfig, optimizers_for, train, update


def timed_episode(config, model, optimizers, loss, generator) -> tuple[float, float, float]:
    """One episode; returns its seconds, the update's seconds and the unanimous share."""
    run = config.resolved
    start = time.perf_counter()
    model.eval()
    batch = sequence_rollouts(model, config.task, config.reward, run.batch, run.k, generator)
    model.train()
    sampled = time.perf_counter()
    update(model, optimizers, loss, batch, run.epochs)
    end = time.perf_counter()
    return end - start, end - sampled, batch.unanimous.float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="tpo", choices=["tpo", "tpo_no_anchor"])
    parser.add_argument("--length", type=int, default=6, help="H")
    parser.add_argument("--late", type=int, default=300, help="episodes trained before timing")
    parser.add_argument("--timed", type=int, default=30, help="episodes timed, each way")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig(
        method=args.method, length=args.length, episodes=args.late, seed=args.seed, device="cpu"
    )
    late = train(config, progress=False)
    loss = get_algorithm(args.method).loss
    ways = {
        "with the skip": functools.partial(loss, eta=config.eta),
        "without": functools.partial(loss, eta=config.eta, skip_unanimous=False),
    }
    models = {way: copy.deepcopy(late.model) for way in ways}
    optimizers = {way: optimizers_for(config, models[way]) for way in ways}
    generator = torch.Generator().manual_seed(args.seed + 1)
    seconds = {way: [] for way in ways}
    updates = {way: [] for way in ways}
    shares = []
    for _ in range(args.timed):
        state = generator.get_state()
        for way, loss_fn in ways.items():
            generator.set_state(state)  # both ways sample the same batch
            episode, step, share = timed_episode(
                config, models[way], optimizers[way], loss_fn, generator
            )
            seconds[way].append(episode)
            updates[way].append(step)
        shares.append(share)
    with_skip, without = (statistics.median(seconds[way]) for way in ways)
    update_skip, update_plain = (statistics.median(updates[way]) for way in ways)
    print(
        f"{args.method} H={args.length} after {args.late} episodes (error "
        f"{late.final_error(20):.3f}, {statistics.mean(shares):.0%} of groups unanimous), "
        f"{args.threads} thread(s), median of {args.timed} episodes:"
    )
    print(
        f"  per episode: {with_skip:.4f} s with the skip, {without:.4f} s without; "
        f"ratio {without / with_skip:.2f}"
    )
    print(
        f"  update only: {update_skip:.4f} s with the skip, {update_plain:.4f} s without; "
        f"ratio {update_plain / update_skip:.2f}"
    )


if __name__ == "__main__":
    main()
