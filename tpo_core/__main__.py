"""The experiment command line.

One run::

    python -m tpo_core train --task reverse_copy --reward terminal --algo tpo \\
        --length 6 --vocab 2 --batch 100 --k 8 --epochs 4 --episodes 200 --seed 0 --out run.json

writes a JSON file with the per-episode ``error``, ``grad_norm``, ``all_fail``
and group-diagnostic curves, ``seconds_per_episode`` (start-up excluded), the
full configuration and its provenance. A grid of runs, resumable::

    python -m tpo_core grid --algos tpo grpo --lengths 7 --seeds 0 1 2 --out results/sparse
    python -m tpo_core grid --preset table3 --seeds 0 1 2 --workers 8 --out results/table3

writes one such file per run into ``--out`` and skips runs already there. The
final errors of finished runs, next to the paper's Table 3 with 95% bootstrap
intervals over seeds and the share of stuck seeds::

    python -m tpo_core summary --preset table3                  # the shipped runs
    python -m tpo_core summary --runs results/table3

Every option of ``train`` and ``grid`` comes from a field of
:class:`~tpo_core.tokens.train.TrainConfig`. Bad names or impossible settings
exit with status 2 and a one-line reason.
"""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import fields
from pathlib import Path

from tpo_core.tokens.experiments import (
    PRESETS,
    grid_configs,
    load_runs,
    provenance,
    run_grid,
    run_name,
    shipped_runs,
    table3_line,
    table3_rows,
    write_json_atomic,
)
from tpo_core.tokens.train import TrainConfig, train

# The settings a grid takes lists of, and the plural names of their options.
GRID_LISTS = {"algo": "algos", "length": "lengths", "seed": "seeds", "match": "matches"}


def add_config_options(parser: argparse.ArgumentParser, config, lists=()) -> None:
    """One ``--option`` per field of the dataclass ``config``, with its default, help and
    choices; the fields named in ``lists`` take one or more values (under the plural name
    :data:`GRID_LISTS` gives them)."""
    hints = typing.get_type_hints(config)
    for f in fields(config):
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not None)
        meta = dict(f.metadata)
        if kind is bool:  # --name / --no-name
            meta |= dict(action=argparse.BooleanOptionalAction)
        help = meta.pop("help")
        if "default" not in help:
            help += f" (default: {f.default})"
        options = dict(help=help, **meta) | ({} if kind is bool else dict(type=kind))
        if f.name in lists:
            options |= dict(nargs="+", default=[f.default])
            parser.add_argument(f"--{GRID_LISTS[f.name]}", dest=GRID_LISTS[f.name], **options)
        else:
            flag = "--" + f.name.replace("_", "-")
            parser.add_argument(flag, dest=f.name, default=f.default, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tpo_core", description="TPO experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run and write its curves as JSON")
    add_config_options(t, TrainConfig)
    t.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    g = sub.add_parser("grid", help="run a resumable grid of (method, H, match, seed) runs")
    add_config_options(g, TrainConfig, lists=GRID_LISTS)
    g.add_argument("--out", type=Path, required=True, help="grid folder")
    g.add_argument("--preset", choices=list(PRESETS), help="the paper's settings for a whole table")
    g.add_argument("--workers", type=int, default=1, help="parallel runs, one thread each")
    g.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="seeds of one setting trained together, in one process (a GPU's way)",
    )
    for p in (t, g):
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("summary", help="final errors of finished runs next to the paper's Table 3")
    s.add_argument("--runs", type=Path, help="a grid folder (default: the shipped runs)")
    s.add_argument("--shipped", default="sparse_h7", help="which shipped grid, without --runs")
    s.add_argument("--preset", choices=list(PRESETS), help="only the methods and H of a preset")
    return parser


def _train(args, argv, parser) -> int:
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    try:
        config.validate()
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    result = train(config, progress=not args.quiet)
    write_json_atomic(args.out, result.to_dict() | {"provenance": provenance(argv)})
    last, last20 = result.final_error(1), result.final_error(20)
    print(f"{config.algo}: final error {last:.4f} (last episode), {last20:.4f} (last 20), "
          f"{result.seconds_per_episode:.3f} s/episode -> {args.out}")  # fmt: skip
    return 0


def _grid(args, argv, parser) -> int:
    settings = {GRID_LISTS.get(f.name, f.name): getattr(args, GRID_LISTS.get(f.name, f.name))
                for f in fields(TrainConfig)}  # fmt: skip
    if args.preset:
        settings |= PRESETS[args.preset]
    try:
        configs = grid_configs(**settings)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    if args.replicas < 1:
        parser.exit(2, f"error: --replicas must be at least 1, got {args.replicas}\n")
    run_grid(configs, args.out, argv, workers=args.workers, progress=not args.quiet,
             replicas=args.replicas)  # fmt: skip
    names = {run_name(c) for c in configs}
    runs = [r for r in load_runs(args.out) if run_name(r.config) in names]  # this grid's runs only
    _print_table3(runs, settings["matches"])
    return 0


def _print_table3(runs, matches) -> None:
    for match in dict.fromkeys(matches):
        for row in table3_rows(runs, match):
            print(table3_line(row, match))


def _summary(args, argv, parser) -> int:
    try:
        runs = load_runs(args.runs) if args.runs else shipped_runs(args.shipped)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    matches = ("prompts", "interactions")
    if args.preset:
        preset = PRESETS[args.preset]
        matches = preset["matches"]
        runs = [r for r in runs if r.config.algo in preset["algos"]
                and r.config.length in preset["lengths"]]  # fmt: skip
    if not runs:
        parser.exit(2, "error: no finished runs to summarise\n")
    _print_table3(runs, matches)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = dict(train=_train, grid=_grid, summary=_summary)
    return commands[args.command](args, argv, parser)


if __name__ == "__main__":
    sys.exit(main())
