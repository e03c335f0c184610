"""The experiment command line.

    python -m tpo_core train --task reverse_copy --reward terminal --algo tpo \\
        --length 6 --vocab 2 --batch 100 --k 8 --epochs 4 --episodes 200 --seed 0 --out run.json

writes a JSON file with the per-episode ``error``, ``grad_norm`` and
``all_fail`` curves, ``seconds_per_episode`` (start-up excluded) and the full
configuration. Bad names or impossible settings exit with status 2 and a
one-line reason.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from tpo_core.algorithms import ALGORITHMS
from tpo_core.tasks import REWARDS, TASKS
from tpo_core.train import TrainConfig, train


def provenance(argv: list[str]) -> dict:
    """Who ran what, where and when: stored next to every result."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return dict(
        command="python -m tpo_core " + " ".join(argv),
        git_commit=commit,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        hardware=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        python=platform.python_version(),
        torch=torch.__version__,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tpo_core", description="TPO experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run on a token task and write its curves as JSON")
    t.add_argument("--task", choices=TASKS, default="reverse_copy")
    t.add_argument("--reward", choices=REWARDS, default="terminal")
    t.add_argument("--algo", choices=list(ALGORITHMS), default="tpo")
    t.add_argument("--length", type=int, default=6, help="H: prompt and answer length")
    t.add_argument("--vocab", type=int, default=2, help="V: vocabulary size")
    t.add_argument("--batch", type=int, default=100, help="B: prompts per episode")
    t.add_argument("--k", type=int, default=8, help="K: candidates per group")
    t.add_argument(
        "--epochs", type=int, default=None, help="epochs per batch (default: the method's)"
    )
    t.add_argument("--episodes", type=int, default=200)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--match", choices=("prompts", "interactions"), default="prompts")
    t.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    fields = {f: getattr(args, f) for f in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**fields)
    try:
        config.validate()
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    result = train(config, progress=not args.quiet)
    payload = result.to_dict() | {"provenance": provenance(argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(args.out)  # never leave a half-written result behind
    final = result.final_error()
    print(f"{config.algo}: final error (last 20 episodes) {final:.4f}, "
          f"{result.seconds_per_episode:.3f} s/episode -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
