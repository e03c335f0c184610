"""The experiment command line.

One run::

    python -m tpo_core train --task reverse_copy --reward terminal --method tpo \\
        --length 6 --vocab 2 --batch 100 --k 8 --epochs 4 --episodes 200 --seed 0 --out run.json

writes a JSON file with the per-episode ``error``, ``grad_norm``, ``all_fail``
and ``skipped`` curves, ``seconds_per_episode`` (start-up excluded), the full
configuration and its provenance. A grid of runs, resumable::

    python -m tpo_core grid --methods tpo grpo --lengths 7 --seeds 0..2 --out results/sparse
    python -m tpo_core grid --preset table3 --seeds 0..2 --workers 8 --out results/table3

writes one such file per run into ``--out`` and skips runs already there (``0..2``
is seeds 0, 1 and 2). A preset fixes the paper's settings: an option that says
otherwise is refused, and ``--methods``, ``--lengths`` or ``--matches`` may pick part
of it. The final errors of finished runs, one row per configuration, next to
the paper's Table 3 with 95% bootstrap intervals over seeds and the share of
stuck seeds::

    python -m tpo_core summary --preset table3                  # the shipped runs
    python -m tpo_core summary --runs results/table3

Every option of ``train`` and ``grid`` comes from a field of
:class:`~tpo_core.tokens.train.TrainConfig`. Bad names, impossible settings or an
output that cannot be written exit with status 2 and a one-line reason, before
any training.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

import torch

from tpo_core.llm.config import RLVRConfig
from tpo_core.tokens.files import write_json_atomic
from tpo_core.tokens.grid import (
    check_output,
    grid_configs,
    load_run,
    load_runs,
    package_commit,
    provenance,
    run_grid,
    shipped,
    shipped_runs,
    write_run,
)
from tpo_core.tokens.table3 import PRESETS, preset_settings, table3_line, table3_rows
from tpo_core.tokens.train import TrainConfig, train

# The settings a grid takes lists of, and the plural names of their options.
GRID_LISTS = {"method": "methods", "length": "lengths", "seed": "seeds", "match": "matches"}


MAX_VALUES = 10_000  # values one list option may take (a range beyond it is a typo)


def integers(text: str) -> list[int]:
    """``"3"`` -> [3]; ``"0..19"`` -> [0, 1, ..., 19] (both ends included)."""
    first, dots, last = text.partition("..")
    try:
        low, high = (int(first), int(last)) if dots else (int(text), int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or a range a..b: {text!r}") from None
    if high < low:
        raise argparse.ArgumentTypeError(f"the range {text} is empty: write low..high")
    if high - low >= MAX_VALUES:
        raise argparse.ArgumentTypeError(
            f"the range {text} holds {high - low + 1} values; at most {MAX_VALUES} at once"
        )
    return list(range(low, high + 1))


def add_config_options(
    parser: argparse.ArgumentParser, config, lists=(), defaults: bool = True
) -> None:
    """One ``--option`` per field of the dataclass ``config``, with its default, help and
    choices; the fields named in ``lists`` take one or more values (under the plural name
    :data:`GRID_LISTS` gives them; integers also as ranges ``a..b``). Without ``defaults``,
    an option not given is absent from the parsed arguments."""
    hints = typing.get_type_hints(config)
    for f in fields(config):
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not None)
        meta = dict(f.metadata)
        if kind is bool:  # --name / --no-name
            meta |= dict(action=argparse.BooleanOptionalAction)
        help = meta.pop("help")
        if f.default is MISSING:
            meta["required"] = True
        elif "default" not in help:
            help += f" (default: {f.default})"
        options = dict(help=help, **meta) | ({} if kind is bool else dict(type=kind))
        if f.name in lists:
            options |= dict(nargs="+", default=[f.default])
            if kind is int:
                options |= dict(type=integers, default=[[f.default]])
        elif f.default is not MISSING:
            options |= dict(default=f.default)
        if not defaults:
            options["default"] = argparse.SUPPRESS
        name = GRID_LISTS[f.name] if f.name in lists else f.name
        parser.add_argument("--" + name.replace("_", "-"), dest=name, **options)


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The command line; ``defaults=False`` leaves out every option not given (to tell the
    options given from the defaults)."""
    parser = argparse.ArgumentParser(prog="python -m tpo_core", description="TPO experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run and write its curves as JSON")
    add_config_options(t, TrainConfig, defaults=defaults)
    t.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    g = sub.add_parser("grid", help="run a resumable grid of (method, H, match, seed) runs")
    add_config_options(g, TrainConfig, lists=GRID_LISTS, defaults=defaults)
    g.add_argument("--out", type=Path, required=True, help="grid folder")
    g.add_argument("--preset", choices=list(PRESETS), help="the paper's settings for a whole table")
    g.add_argument("--workers", type=int, default=1, help="parallel runs, one thread each")
    g.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="seeds of one setting trained together, in one process (a GPU's way)",
    )
    r = sub.add_parser("rlvr", help="one RLVR run on a language model, its history as JSON")
    add_config_options(r, RLVRConfig, defaults=defaults)
    r.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    r.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own)")
    for p in (t, g, r):
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("summary", help="final errors of finished runs next to the paper's Table 3")
    s.add_argument("--runs", type=Path, help="a grid folder (default: the shipped runs)")
    s.add_argument(
        "--shipped", nargs="+", help="which shipped grids, without --runs (default: all of them)"
    )
    s.add_argument("--preset", choices=list(PRESETS), help="only the methods and H of a preset")
    return parser


def _train(args, argv, parser) -> int:
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    try:
        config.validate()
        check_output(args.out)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    result = train(config, progress=not args.quiet)
    write_run(args.out, result, provenance(argv))
    last, last20 = result.final_error(1), result.final_error(20)
    print(
        f"{config.method}: final error {last:.4f} (last episode), {last20:.4f} (last 20), "
        f"{result.seconds_per_episode:.3f} s/episode -> {args.out}"
    )
    return 0


def _rlvr(args, argv, parser) -> int:
    from tpo_core.llm import rlvr_train

    config = RLVRConfig(**{f.name: getattr(args, f.name) for f in fields(RLVRConfig)})
    try:
        config.validate()
        check_output(args.out)
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
    except (TypeError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = rlvr_train(config, progress=not args.quiet)
    write_json_atomic(args.out, result.to_dict() | {"provenance": provenance(argv)})
    reward = result.history["reward"]
    print(f"{config.method}: reward {reward[0]:.3f} (first step) -> {reward[-1]:.3f} -> {args.out}")
    return 0


def _grid(args, argv, parser) -> int:
    names = [GRID_LISTS.get(f.name, f.name) for f in fields(TrainConfig)]
    settings = {name: getattr(args, name) for name in names}
    for name in ("lengths", "seeds"):  # each value may have been a range
        settings[name] = [n for values in settings[name] for n in values]
    try:
        if args.preset:
            given = set(vars(build_parser(defaults=False).parse_args(argv)))
            settings = preset_settings(args.preset, settings, given)
        if args.workers < 1 or args.replicas < 1:
            raise ValueError("--workers and --replicas must be at least 1")
        if args.workers > (os.cpu_count() or 1):
            raise ValueError(
                f"--workers {args.workers}: this machine has {os.cpu_count()} CPUs, one per worker"
            )
        configs = grid_configs(**settings)
        check_output(args.out, folder=True)
        if package_commit() is None:
            print(
                "note: tpo_core is not in a git checkout; the runs record no commit",
                file=sys.stderr,
            )
        paths = run_grid(
            configs,
            args.out,
            argv,
            workers=args.workers,
            progress=not args.quiet,
            replicas=args.replicas,
        )
        _print_table3([load_run(p) for p in paths], settings["matches"])
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    return 0


def _print_table3(runs, matches) -> None:
    for match in dict.fromkeys(matches):
        for row in table3_rows(runs, match):
            print(table3_line(row, match))


def _summary(args, argv, parser) -> int:
    try:
        if args.runs and args.shipped:
            raise ValueError("--shipped picks among the shipped grids; with --runs give one only")
        if args.runs:
            runs = load_runs(args.runs)
        else:
            runs = [run for name in args.shipped or shipped() for run in shipped_runs(name)]
        matches = ("prompts", "interactions")
        if args.preset:
            preset = PRESETS[args.preset]
            matches = preset["matches"]
            runs = [
                r
                for r in runs
                if r.config.method in preset["methods"] and r.config.length in preset["lengths"]
            ]
        if not runs:
            raise ValueError("no finished runs to summarise")
        _print_table3(runs, matches)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = dict(train=_train, grid=_grid, rlvr=_rlvr, summary=_summary)
    return commands[args.command](args, argv, parser)


if __name__ == "__main__":
    sys.exit(main())
