"""Sparse (exact-match) reward at H = 7, prompt-matched: TPO's and GRPO's final error
(the paper's Table 3; notebook 05).

    python benchmarks/sparse_reward.py          # the shipped runs: 4 seeds, 1,000 episodes
    python benchmarks/sparse_reward.py --out runs/h7 --episodes 2000 --seeds 0 1 2 3 4

With ``--out`` it runs (or resumes) the grid there first, with the project's
own runner. It prints the final exact-match error as the paper measures it
(the last episode, averaged over seeds) with a 95% bootstrap interval, the
mean of the last 20 episodes ± s.e., the stuck seeds, the paper's figure
(20 seeds, 2,000 episodes: TPO 6.9%, GRPO 14.5%), and whether TPO came out
lower, as the paper reports; it exits with status 1 if it did not. GRPO with per-token
ratios (``grpo_per_token``, not in the paper's table) is printed too.
"""

import argparse
import sys

from tpo_core.tokens.grid import grid_configs, load_run, run_grid, shipped_runs
from tpo_core.tokens.table3 import table3_line, table3_rows


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
        methods = ["tpo", "grpo", "grpo_per_token"]
        configs = grid_configs(methods, [7], args.seeds, episodes=args.episodes)
        paths = run_grid(configs, args.out, sys.argv[1:], workers=args.workers)
        runs = [load_run(path) for path in paths]
    else:
        runs = shipped_runs("sparse_h7")
    rows = {r["method"]: r for r in table3_rows([r for r in runs if r.config.length == 7])}
    for method in ("tpo", "grpo", "grpo_per_token"):
        if method in rows:
            print(table3_line(rows[method], "prompts"))
    tpo, grpo = rows["tpo"], rows["grpo"]
    lower = tpo["ours"] < grpo["ours"]
    apart = tpo["ci"][1] < grpo["ci"][0]
    print(
        f"TPO lower than GRPO, as in the paper: {'yes' if lower else 'NO'} "
        f"(GRPO - TPO = {grpo['ours'] - tpo['ours']:.1f} points; 95% intervals "
        f"{'do not overlap' if apart else 'overlap'})"
    )
    return 0 if lower else 1


if __name__ == "__main__":
    sys.exit(main())
