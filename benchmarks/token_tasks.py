"""Faithfulness and speed of the token-task engine
(the paper's token-reversal experiments; notebooks 04-05).

    python benchmarks/token_tasks.py speed      # this tree against commit 7f1f327, side by side
    python benchmarks/token_tasks.py speed --baseline HEAD~3 --episodes 100 --rounds 1
    python benchmarks/token_tasks.py replicas   # one seed vs 20 seeds together (for a GPU)
    python benchmarks/token_tasks.py terminal   # TPO, H=6 terminal, seeds 0-2, 200 episodes
    python benchmarks/token_tasks.py dense      # TPO_token, H=10 bag, steps to 1% over 3 seeds
    python benchmarks/token_tasks.py dense --methods tpo_token grpo_token dg ppo --seeds 3

Each prints its figures next to the paper's (or the seed code's) yardstick.

``speed`` extracts the baseline commit's ``tpo_core`` with ``git archive`` and
trains the same runs with it and with this tree, alternately, each in a fresh
process on this machine (so both see the same CPU, threads and load). It
prints seconds per episode (start-up excluded; the mean over a whole run, as
a grid pays it), peak memory, and the ratio this tree / baseline: the goal
for sequence-level TPO at H = 6 is <= 0.53, which is 3x the seed code on the
machine where both were timed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch

from tpo_core.tokens.replicas import train_replicas
from tpo_core.tokens.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = dict(task="reverse_copy", reward="terminal", length=6, vocab=2, batch=100, k=8)
DENSE = dict(task="reverse_copy", reward="bag", length=10, vocab=2, batch=100, k=8)
PAPER_DENSE_STEPS = {"tpo_token": 58, "grpo_token": 904, "dg": 199, "ppo": 872}
SPEED_RUNS = {  # name: (settings, method); the first is the one the goal is set on
    "tpo H=6 terminal": (TERMINAL, "tpo"),
    "grpo H=6 terminal": (TERMINAL, "grpo"),
    "tpo_token H=10 bag": (DENSE, "tpo_token"),
}
GOAL = 0.53

# Runs one training in a fresh process with whichever tpo_core is first on sys.path.
TIMED_RUN = """
import json, resource, sys
try:
    from tpo_core.tokens.train import TrainConfig, train
except ImportError:  # a tree from before the stage layout
    from tpo_core.train import TrainConfig, train
r = train(TrainConfig(**json.loads(sys.argv[1])), progress=False)
print(json.dumps(dict(seconds=r.seconds_per_episode, final=r.final_error(20),
                      peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def extract(ref: str, into: Path) -> Path:
    """``tpo_core`` as it was at commit ``ref``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "archive", ref, "tpo_core"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def timed_run(tree: Path, settings: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", TIMED_RUN, json.dumps(settings)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(args):
    episodes = args.episodes or 200
    names = [n for n in SPEED_RUNS if not args.methods or SPEED_RUNS[n][1] in args.methods]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"baseline": extract(args.baseline, Path(tmp)), "this tree": ROOT}
        threads = torch.get_num_threads()
        print(
            f"baseline {args.baseline} vs this tree, {episodes} episodes, seed 0, "
            f"{threads} threads, {args.rounds} round(s), alternating"
        )
        for name in names:
            settings, method = SPEED_RUNS[name]
            config = dict(settings, method=method, episodes=episodes, seed=0)
            times = {label: [] for label in trees}
            for _ in range(args.rounds):
                for label, tree in trees.items():
                    run = timed_run(tree, config)
                    times[label].append(run["seconds"])
                    seconds, final, peak = run["seconds"], run["final"], run["peak_mb"]
                    print(
                        f"  {name:>20} {label:>9}: {seconds:.3f} s/episode, "
                        f"final error {final:.3f}, peak {peak:.0f} MB"
                    )
            base, ours = (statistics.median(times[label]) for label in trees)
            goal = f" (goal <= {GOAL})" if name == next(iter(SPEED_RUNS)) else ""
            print(f"{name:>22}: {ours:.3f} vs {base:.3f} s/episode, ratio {ours / base:.2f}{goal}")


def replicas(args):
    """One seed alone against ``--replicas`` seeds trained together, on this machine's device."""
    episodes = args.episodes or 30
    config = TrainConfig(
        method=(args.methods or ["tpo"])[0],
        episodes=episodes,
        length=7,
        **{k: v for k, v in TERMINAL.items() if k != "length"},
    )
    device = config.resolved.device
    alone = train(config, progress=False).seconds_per_episode
    together = train_replicas(config, list(range(args.replicas)), progress=False)
    per_episode = together[0].seconds_per_episode
    print(
        f"{config.method} H=7 on {device}: one seed {alone:.3f} s/episode; {args.replicas} "
        f"replicas {per_episode:.3f} s/episode, {per_episode / args.replicas:.3f} per seed "
        f"({alone * args.replicas / per_episode:.1f}x the throughput of one seed at a time)"
    )


def terminal(args):
    for method in args.methods or ["tpo"]:
        finals = []
        for seed in range(args.seeds):
            r = train(
                TrainConfig(method=method, seed=seed, episodes=args.episodes or 200, **TERMINAL),
                progress=False,
            )
            finals.append(r.final_error(20))
            curve = " ".join(f"{e:.2f}" for e in r.error[::20])
            print(
                f"{method} seed {seed}: final exact-match error {finals[-1]:.3f}  every 20: {curve}"
            )
        mean = statistics.mean(finals)
        print(
            f"{method}: mean final error over seeds 0-{args.seeds - 1}: {mean:.3f} "
            "(seed code TPO: 0.039; goal < 0.06)"
        )


def dense(args):
    for method in args.methods or ["tpo_token"]:
        steps = []
        for seed in range(args.seeds):
            r = train(
                TrainConfig(method=method, seed=seed, episodes=args.episodes or 150, **DENSE),
                progress=False,
            )
            steps.append(r.steps_to(0.01))
            print(
                f"{method} seed {seed}: steps to 1% token error {steps[-1]}  "
                f"({r.seconds_per_episode:.2f} s/episode)"
            )
        reached = [s for s in steps if s is not None]
        mean = (
            f"{statistics.mean(reached):.0f}"
            if len(reached) == len(steps)
            else "not all seeds reached 1%"
        )
        print(
            f"{method}: mean steps to 1% = {mean} "
            f"(paper Table 1, V=2: {PAPER_DENSE_STEPS.get(method)})"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=("speed", "replicas", "terminal", "dense"))
    parser.add_argument("--methods", nargs="*")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int)
    parser.add_argument("--baseline", default="7f1f327", help="speed: the commit to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="speed: alternating repeats")
    parser.add_argument("--replicas", type=int, default=20, help="replicas: how many seeds")
    args = parser.parse_args()
    suites = dict(speed=speed, replicas=replicas, terminal=terminal, dense=dense)
    suites[args.suite](args)


if __name__ == "__main__":
    main()
