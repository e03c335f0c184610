"""Faithfulness and speed of the token-task engine
(the paper's token-reversal experiments; notebooks 04-05).

    python benchmarks/token_tasks.py speed      # s/episode, terminal reward, H=6 V=2 B=100 K=8
    python benchmarks/token_tasks.py terminal   # TPO, H=6 terminal, seeds 0-2, 200 episodes
    python benchmarks/token_tasks.py dense      # TPO_token, H=10 bag, steps to 1% over 3 seeds
    python benchmarks/token_tasks.py dense --algos tpo_token grpo_token dg ppo --seeds 3

Each prints its figures next to the paper's (or the seed code's) yardstick.
"""

import argparse
import statistics

import torch

from tpo_core.tokens.train import TrainConfig, train

TERMINAL = dict(task="reverse_copy", reward="terminal", length=6, vocab=2, batch=100, k=8)
DENSE = dict(task="reverse_copy", reward="bag", length=10, vocab=2, batch=100, k=8)
PAPER_DENSE_STEPS = {"tpo_token": 58, "grpo_token": 904, "dg": 199, "ppo": 872}


def speed(args):
    for algo in args.algos or ["tpo", "grpo"]:
        r = train(TrainConfig(algo=algo, episodes=args.episodes or 30, **TERMINAL), progress=False)
        threads = torch.get_num_threads()
        print(f"{algo:>10}: {r.seconds_per_episode:.3f} s/episode ({threads} threads; "
              "seed code ~0.67 s, goal <= 0.22 s)")  # fmt: skip


def terminal(args):
    for algo in args.algos or ["tpo"]:
        finals = []
        for seed in range(args.seeds):
            r = train(TrainConfig(algo=algo, seed=seed, episodes=args.episodes or 200, **TERMINAL),
                      progress=False)  # fmt: skip
            finals.append(r.final_error(20))
            curve = " ".join(f"{e:.2f}" for e in r.error[::20])
            print(
                f"{algo} seed {seed}: final exact-match error {finals[-1]:.3f}  every 20: {curve}"
            )
        mean = statistics.mean(finals)
        print(f"{algo}: mean final error over seeds 0-{args.seeds - 1}: {mean:.3f} "
              "(seed code TPO: 0.039; goal < 0.06)")  # fmt: skip


def dense(args):
    for algo in args.algos or ["tpo_token"]:
        steps = []
        for seed in range(args.seeds):
            r = train(TrainConfig(algo=algo, seed=seed, episodes=args.episodes or 150, **DENSE),
                      progress=False)  # fmt: skip
            steps.append(r.steps_to(0.01))
            print(f"{algo} seed {seed}: steps to 1% token error {steps[-1]}  "
                  f"({r.seconds_per_episode:.2f} s/episode)")  # fmt: skip
        reached = [s for s in steps if s is not None]
        mean = (
            f"{statistics.mean(reached):.0f}"
            if len(reached) == len(steps)
            else "not all seeds reached 1%"
        )
        print(
            f"{algo}: mean steps to 1% = {mean} (paper Table 1, V=2: {PAPER_DENSE_STEPS.get(algo)})"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=("speed", "terminal", "dense"))
    parser.add_argument("--algos", nargs="*")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int)
    args = parser.parse_args()
    {"speed": speed, "terminal": terminal, "dense": dense}[args.suite](args)


if __name__ == "__main__":
    main()
