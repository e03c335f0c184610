"""Sparse (exact-match) reward at H = 7, prompt-matched: TPO's and GRPO's final error
(the paper's Table 3; notebook 05).

    python benchmarks/sparse_reward.py          # the shipped runs: 4 seeds, 1,000 episodes
    python benchmarks/sparse_reward.py --out runs/h7 --episodes 2000 --seeds 0 1 2 3 4

With ``--out`` it runs (or resumes) the grid there first, with the project's
own runner. It prints each seed's final exact-match error (mean of the last
20 episodes), the mean ± s.e., the paper's figure (20 seeds, 2,000
episodes: TPO 6.9%, GRPO 14.5%), and whether TPO came out lower, as the
paper reports; it exits with status 1 if it did not. GRPO with per-token
ratios (``grpo_per_token``, not in the paper's table) is printed too.
"""

import argparse
import sys

from tpo_core.stats import mean_and_se
from tpo_core.tokens import experiments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", help="run or resume the grid in this folder (default: shipped runs)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.out:
        algos = ["tpo", "grpo", "grpo_per_token"]
        configs = experiments.grid_configs(algos, [7], args.seeds, episodes=args.episodes)
        argv = sys.argv[1:]
        experiments.run_grid(configs, args.out, argv, workers=args.workers)
        runs = experiments.load_runs(args.out)
    else:
        runs = experiments.shipped_runs("sparse_h7")
    finals = experiments.final_errors([r for r in runs if r.config.length == 7])
    means = {}
    for algo in ("tpo", "grpo", "grpo_per_token"):
        values = finals.get((algo, "prompts", 7))
        if not values:
            continue
        mean, se = (float(x) for x in mean_and_se(values))
        means[algo] = mean
        per_seed = " ".join(f"{100 * v:.1f}" for v in values)
        paper = experiments.PAPER_TABLE3.get((algo, "prompts", 7))
        print(f"{algo:>14}: final exact-match error {100 * mean:5.1f} ± {100 * se:.1f}% "
              f"over {len(values)} seeds (per seed: {per_seed}); "
              f"paper {'n/a' if paper is None else f'{paper}%'}")  # fmt: skip
    lower = means["tpo"] < means["grpo"]
    margin = 100 * (means["grpo"] - means["tpo"])
    print(f"TPO lower than GRPO, as in the paper: {'yes' if lower else 'NO'} "
          f"(GRPO - TPO = {margin:.1f} points; compare the s.e.)")  # fmt: skip
    return 0 if lower else 1


if __name__ == "__main__":
    sys.exit(main())
