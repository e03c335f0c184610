"""The experiment command line.

One run::

    python -m tpo_core train --task reverse_copy --reward terminal --algo tpo \\
        --length 6 --vocab 2 --batch 100 --k 8 --epochs 4 --episodes 200 --seed 0 --out run.json

writes a JSON file with the per-episode ``error``, ``grad_norm``, ``all_fail``
and group-diagnostic curves, ``seconds_per_episode`` (start-up excluded), the
full configuration and its provenance. A grid of runs, resumable::

    python -m tpo_core grid --algos tpo grpo --lengths 7 --seeds 0 1 2 --out results/sparse
    python -m tpo_core grid --preset table3 --seeds 0 1 2 --workers 8 --out results/table3

writes one such file per run into ``--out`` and skips runs already there.
Bad names or impossible settings exit with status 2 and a one-line reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tpo_core.algorithms import ALGORITHMS
from tpo_core.experiments import (
    PRESETS,
    grid_configs,
    load_runs,
    provenance,
    run_grid,
    run_name,
    table3_rows,
    write_json_atomic,
)
from tpo_core.tasks import REWARDS, TASKS
from tpo_core.train import TrainConfig, train


def _add_settings(p: argparse.ArgumentParser, grid: bool) -> None:
    """The run settings shared by ``train`` and ``grid`` (a grid takes lists of some)."""
    many = dict(nargs="+") if grid else {}
    p.add_argument("--task", choices=TASKS, default="reverse_copy")
    p.add_argument("--reward", choices=REWARDS, default="terminal")
    p.add_argument(f"--algo{'s' if grid else ''}", choices=list(ALGORITHMS),
                   default=["tpo"] if grid else "tpo", **many)  # fmt: skip
    p.add_argument(f"--length{'s' if grid else ''}", type=int, default=[6] if grid else 6,
                   help="H: prompt and answer length", **many)  # fmt: skip
    p.add_argument("--vocab", type=int, default=2, help="V: vocabulary size")
    p.add_argument("--batch", type=int, default=100, help="B: prompts per episode")
    p.add_argument("--k", type=int, default=8, help="K: candidates per group")
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs per batch (default: the method's)"
    )
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eta", type=float, default=1.0, help="TPO's temperature (TPO variants only)")
    p.add_argument(f"--seed{'s' if grid else ''}", type=int, default=[0] if grid else 0, **many)
    p.add_argument(f"--match{'es' if grid else ''}", choices=("prompts", "interactions"),
                   default=["prompts"] if grid else "prompts", **many)  # fmt: skip
    p.add_argument("--out", type=Path, required=True,
                   help="grid folder" if grid else "where to write the JSON results")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tpo_core", description="TPO experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_settings(sub.add_parser("train", help="train one run and write its curves as JSON"), False)
    g = sub.add_parser("grid", help="run a resumable grid of (method, H, match, seed) runs")
    _add_settings(g, True)
    g.add_argument("--preset", choices=list(PRESETS), help="the paper's settings for a whole table")
    g.add_argument("--workers", type=int, default=1, help="parallel runs, one thread each")
    return parser


def _train(args, argv, parser) -> int:
    config = TrainConfig(**{f: getattr(args, f) for f in TrainConfig.__dataclass_fields__})
    try:
        config.validate()
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    result = train(config, progress=not args.quiet)
    write_json_atomic(args.out, result.to_dict() | {"provenance": provenance(argv)})
    final = result.final_error()
    print(f"{config.algo}: final error (last 20 episodes) {final:.4f}, "
          f"{result.seconds_per_episode:.3f} s/episode -> {args.out}")  # fmt: skip
    return 0


def _grid(args, argv, parser) -> int:
    settings = dict(algos=args.algos, lengths=args.lengths, seeds=args.seeds, matches=args.matches,
                    task=args.task, reward=args.reward, vocab=args.vocab, batch=args.batch,
                    k=args.k, epochs=args.epochs, episodes=args.episodes, lr=args.lr,
                    eta=args.eta)  # fmt: skip
    if args.preset:
        settings |= PRESETS[args.preset]
    try:
        configs = grid_configs(**settings)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    run_grid(configs, args.out, argv, workers=args.workers, progress=not args.quiet)
    names = {run_name(c) for c in configs}
    runs = [r for r in load_runs(args.out) if run_name(r.config) in names]  # this grid's runs only
    for match in dict.fromkeys(settings["matches"]):
        for row in table3_rows(runs, match):
            ours = f"{row['ours']:5.1f} ± {row['se']:.1f}%"
            print(f"{match:>12} {row['method']:>12} H={row['H']}: {ours} "
                  f"over {row['seeds']} seeds (paper {row['paper']})")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    return (_train if args.command == "train" else _grid)(args, argv, parser)


if __name__ == "__main__":
    sys.exit(main())
