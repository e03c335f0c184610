"""Grids of token-task runs on disk: resumable, provenance-stamped, summarised like Table 3.

Every run of a grid is one JSON file in the grid's folder, named after the
settings that define it (:func:`run_name`). A file is written to a
temporary name and renamed only once it is complete, so a crashed or
interrupted grid never leaves a file that looks finished, and running the
same grid again skips every run whose file is already there::

    python -m tpo_core grid --algos tpo grpo --lengths 7 --seeds 0 1 2 \\
        --episodes 1000 --out results/sparse

The paper's whole Table 3 grid is one preset away (``--preset table3``):
about a thousand runs, for a long CPU job over many ``--workers``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields, replace
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tpo_core.stats import bootstrap_interval, mean_and_se
from tpo_core.tokens.algorithms import get_algorithm
from tpo_core.tokens.replicas import train_replicas
from tpo_core.tokens.train import TrainConfig, TrainResult, train

# Table 3 of the paper: final exact-match error (%) after 2,000
# episodes, reverse copy, V = 2, B = 100, K = 8. None: above 95%.
PAPER_TABLE3: dict[tuple[str, str, int], float | None] = {
    (algo, match, length): value
    for algo, prompts, interactions in [
        ("tpo", (6.9, 8.6, 6.1, 7.4), (1.8, 2.8, 5.3, 19.0)),
        ("grpo", (14.5, 27.6, 30.0, 50.4), (9.6, 23.2, 36.2, 48.7)),
        ("grpo_no_kl", (66.6, 92.5, None, None), (78.1, 83.8, None, None)),
        ("ppo", (12.0, 26.3, 90.6, None), (38.6, 62.1, 66.2, None)),
        ("dg", (33.8, 58.8, None, None), (47.7, 69.4, None, None)),
    ]
    for match, row in (("prompts", prompts), ("interactions", interactions))
    for length, value in zip((7, 8, 9, 10), row, strict=True)
}

PRESETS = {
    "table3": dict(
        algos=["tpo", "grpo", "grpo_no_kl", "ppo", "dg"],
        lengths=[7, 8, 9, 10],
        matches=["prompts", "interactions"],
        episodes=2000,
        task="reverse_copy",
        reward="terminal",
        vocab=2,
        batch=100,
        k=8,
    ),
}


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def provenance(argv: list[str]) -> dict:
    """Who ran what, where and when: stored next to every result.

    ``git_commit`` ends in ``-dirty`` when the working tree had uncommitted changes.
    """
    commit = _git("rev-parse", "HEAD")
    if commit is not None:
        commit = commit.strip() + (
            "-dirty" if _git("status", "--porcelain", "--untracked-files=no") else ""
        )
    return dict(
        command="python -m tpo_core " + " ".join(argv),
        git_commit=commit,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        hardware=_hardware(),
        python=platform.python_version(),
        torch=torch.__version__,
    )


def _six_digits(x):
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _six_digits(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_six_digits(v) for v in x]
    return x


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` (floats to 6 significant digits) via a temporary file and a rename.

    Readers never see half a file: the rename is the last step.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_six_digits(payload), separators=(",", ":")))
    tmp.replace(path)


# Settings that run_name spells out (or, the device, leaves out: it makes no other run); every
# other setting appears only when it differs from its default, under these short tags.
NAMED_APART = ("task", "reward", "algo", "length", "vocab", "batch", "k", "match", "episodes",
               "seed", "device")  # fmt: skip
TAGS = {"epochs": "ep", "lr": "lr", "eta": "eta", "newton_schulz": "ns-"}


def run_name(config: TrainConfig) -> str:
    """A file name that says which run it holds; settings left at their defaults are omitted.

    Grouped methods are the same run under either matching, so only
    single-sample methods carry the ``match``.
    """
    default = TrainConfig()
    parts = [config.algo, config.task, config.reward, f"H{config.length}", f"V{config.vocab}"]
    parts += [f"B{config.batch}", f"K{config.k}"]
    if get_algorithm(config.algo).rollout == "single":
        parts.append(config.match)
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        if f.name in NAMED_APART or value == getattr(default, f.name):
            continue
        if isinstance(value, bool):
            parts.append(f.name.replace("_", "-") if value else "no-" + f.name.replace("_", "-"))
        else:
            parts.append(f"{TAGS.get(f.name, f.name.replace('_', '-') + '-')}{value}")
    parts += [f"E{config.episodes}", f"seed{config.seed}"]
    return "-".join(parts) + ".json"


def is_complete(path: Path, config: TrainConfig) -> bool:
    """True if ``path`` holds a finished run of ``config`` (a full error curve).

    The device does not make a different run: a grid started on a GPU resumes on a CPU.
    """
    try:
        data = json.loads(path.read_text())
        stored = TrainConfig.from_dict(data["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    same = replace(stored, device=None) == replace(config, device=None)
    return same and len(data.get("error", ())) == config.episodes


def _run_job(job: list[tuple[TrainConfig, Path]], stamp: dict, threads: int | None) -> None:
    """Train the runs of ``job`` (several seeds of one config run as replicas) and write each."""
    if threads is not None:
        torch.set_num_threads(threads)
    configs = [c for c, _ in job]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    if len(job) == 1:
        results = [train(configs[0], progress=False)]
    else:
        results = train_replicas(configs[0], [c.seed for c in configs], progress=False)
    wall = round(time.perf_counter() - start, 1)
    stamp = stamp | dict(date=started, hardware=_hardware(), wall_seconds=wall)
    if len(job) > 1:
        stamp["replicas"] = len(job)  # trained together; wall_seconds is theirs together
    for (_, path), result in zip(job, results, strict=True):
        write_json_atomic(path, result.to_dict() | {"provenance": stamp})


def _jobs(todo: list[tuple[TrainConfig, Path]], replicas: int) -> list[list]:
    """``todo`` as jobs: up to ``replicas`` seeds of one config together (token-level methods,
    which replicas do not run, one seed a job)."""
    groups: dict[TrainConfig, list] = {}
    for config, path in todo:
        together = replicas > 1 and get_algorithm(config.algo).rollout != "token"
        key = replace(config, seed=0) if together else config
        groups.setdefault(key, []).append((config, path))
    return [
        runs[i : i + replicas] for runs in groups.values() for i in range(0, len(runs), replicas)
    ]


def grid_configs(
    algos: Iterable[str],
    lengths: Iterable[int],
    seeds: Iterable[int],
    matches: Iterable[str] = ("prompts",),
    **settings,
) -> list[TrainConfig]:
    """Every (method, H, match, seed) run, without duplicates (grouped methods ignore ``match``)."""
    configs, names = [], set()
    for algo, length, match, seed in itertools.product(algos, lengths, matches, seeds):
        config = TrainConfig(algo=algo, length=length, match=match, seed=seed, **settings)
        config.validate()
        if run_name(config) not in names:
            names.add(run_name(config))
            configs.append(config)
    return configs


def run_grid(
    configs: list[TrainConfig],
    out: Path,
    argv: list[str] | None = None,
    workers: int = 1,
    progress: bool = True,
    replicas: int = 1,
) -> list[Path]:
    """Run every config whose result is not yet in ``out``; return the paths of all of them.

    With ``workers > 1`` runs go to separate processes with one thread each;
    with ``replicas > 1`` up to that many seeds of one configuration train
    together (:func:`~tpo_core.tokens.replicas.train_replicas`), still one
    file per seed.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    out = Path(out)
    stamp = provenance(argv or [])  # the code as it was when the grid started
    paths = [out / run_name(c) for c in configs]
    todo = [(c, p) for c, p in zip(configs, paths, strict=True) if not is_complete(p, c)]
    bar = tqdm(total=len(configs), initial=len(configs) - len(todo), desc="grid",
               disable=not progress)  # fmt: skip
    jobs = _jobs(todo, replicas)
    if workers <= 1:
        for job in jobs:
            bar.set_postfix_str(job[0][1].stem)
            _run_job(job, stamp, None)
            bar.update(len(job))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [(pool.submit(_run_job, job, stamp, 1), len(job)) for job in jobs]
            for future, runs in futures:
                future.result()
                bar.update(runs)
    bar.close()
    return paths


def load_runs(folder: Path) -> list[TrainResult]:
    """Every finished run in ``folder`` (temporary files are ignored), with its provenance."""
    return [
        TrainResult.from_dict(json.loads(path.read_text()))
        for path in sorted(Path(folder).glob("*.json"))
    ]


def shipped_runs(name: str) -> list[TrainResult]:
    """The runs of a grid shipped with the package (``tpo_core/tokens/results/<name>``)."""
    folder = Path(__file__).parent / "results" / name
    if not folder.is_dir():
        known = sorted(p.name for p in folder.parent.glob("*") if p.is_dir())
        raise ValueError(f"no shipped results named {name!r}; there are: {', '.join(known)}")
    return load_runs(folder)


def runs_by_cell(runs: list[TrainResult]) -> dict[tuple[str, str, int], list[TrainResult]]:
    """The runs of each Table 3 cell, keyed by (algo, match, H).

    A grouped method's run counts for both matchings, as in Table 3.
    """
    table: dict[tuple[str, str, int], list[TrainResult]] = {}
    for run in runs:
        c = run.config
        single = get_algorithm(c.algo).rollout == "single"
        for match in (c.match,) if single else ("prompts", "interactions"):
            table.setdefault((c.algo, match, c.length), []).append(run)
    return table


def final_errors(runs: list[TrainResult], last: int = 1) -> dict[tuple[str, str, int], list[float]]:
    """Final error of each run, keyed by (algo, match, H): the error of the last episode (the
    paper's metric) or, with ``last > 1``, the mean of the last ``last`` episodes."""
    return {cell: [r.final_error(last) for r in rs] for cell, rs in runs_by_cell(runs).items()}


def is_stuck(run: TrainResult, last: int = 20, floor: float = 0.01) -> bool:
    """A run stuck on prompts it cannot learn from: its final error (mean of the last ``last``
    episodes) is at least ``floor`` and at least 80% of it sits in all-fail groups.

    Under exact-match reward an all-fail share equal to the error means every
    mistake is on a prompt where all K answers fail: no group method gets a
    signal there. A stuck policy is not quite deterministic, so a few of its
    wrong answers share a group with a right one; the shipped H = 7 runs that
    stall keep 84-97% of their error in all-fail groups, the ones that learn 0%.
    """
    error, tail = run.final_error(last), run.all_fail[-last:]
    return bool(tail) and error >= floor and sum(tail) / len(tail) >= 0.8 * error


def _setting(run: TrainResult, name: str):
    """A run's setting; ``epochs`` is the number actually used (the method's default if unset)."""
    return run.config.resolved()["epochs"] if name == "epochs" else getattr(run.config, name)


def select_runs(runs: list[TrainResult], **where) -> list[TrainResult]:
    """The runs whose settings equal ``where`` (e.g. ``k=8, eta=1.0, epochs=4``).

    ``epochs=None`` selects the runs left at their method's own default.
    """

    def matches(run: TrainResult, name: str, value) -> bool:
        if name == "epochs" and value is None:
            return run.config.epochs is None
        return _setting(run, name) == value

    return [r for r in runs if all(matches(r, name, v) for name, v in where.items())]


def final_error_by(
    runs: list[TrainResult], setting: str, last: int = 20, **where
) -> dict[str, tuple[list, list, list]]:
    """Per method, final error against one ``setting`` (``"k"``, ``"eta"``, ``"epochs"``, ...).

    Only runs whose other settings equal ``where`` count (:func:`select_runs`).
    Returns ``{algo: (values, mean, s.e.)}`` sorted by value.
    """
    groups: dict[str, dict] = {}
    for run in select_runs(runs, **where):
        by_value = groups.setdefault(run.config.algo, {})
        by_value.setdefault(_setting(run, setting), []).append(run.final_error(last))
    sweeps = {}
    for algo, by_value in groups.items():
        xs = sorted(by_value)
        mean, se = zip(*(mean_and_se(by_value[x]) for x in xs), strict=True)
        sweeps[algo] = (xs, [float(m) for m in mean], [float(s) for s in se])
    return sweeps


def after_solving(
    run: TrainResult, solved: float = 0.05, late: int = 500, settled: int = 300, last: int = 20
) -> dict:
    """How a run behaves once it has learned: first episode at or below ``solved`` error,
    median first-epoch gradient norm after episode ``late``, the number of episodes
    after ``settled`` whose error is above 10% (collapses), and the final error next to
    the final all-fail share (means of the last ``last`` episodes).

    Under exact-match reward, an all-fail share as large as the error means every
    mistake sits on a prompt where all K answers fail: the policy is sure of a wrong
    answer there, the group has no signal, and neither TPO nor GRPO can fix it.
    """
    grads = sorted(run.grad_norm[late:])
    tail = run.all_fail[-last:]
    return dict(
        steps_to_solved=run.steps_to(solved),
        late_grad_median=grads[len(grads) // 2] if grads else math.nan,
        collapses=sum(e > 0.1 for e in run.error[settled:]),
        final_error=run.final_error(last),
        final_all_fail=sum(tail) / len(tail) if tail else math.nan,
    )


def table3_rows(runs: list[TrainResult], match: str = "prompts") -> list[dict]:
    """Our final errors (%) next to the paper's Table 3, one row per (method, H) we ran.

    ``ours`` is the paper's metric, the last episode's error averaged over seeds,
    with ``ci`` its 95% bootstrap interval over seeds; ``last20`` and
    ``last20_se`` are the mean of the last 20 episodes and its standard error;
    ``stuck`` is the share of seeds that :func:`is_stuck`.
    """
    rows = []
    for (algo, m, length), cell in sorted(runs_by_cell(runs).items()):
        if m != match:
            continue
        last = [r.final_error(1) for r in cell]
        last20, last20_se = (float(x) for x in mean_and_se([r.final_error(20) for r in cell]))
        paper = PAPER_TABLE3.get((algo, match, length), "n/a")
        rows.append(
            dict(method=algo, H=length, seeds=len(cell),
                 episodes=sorted({r.config.episodes for r in cell}),
                 ours=100 * sum(last) / len(last),
                 ci=tuple(100 * x for x in bootstrap_interval(last)),
                 last20=100 * last20, last20_se=100 * last20_se,
                 stuck=sum(is_stuck(r) for r in cell) / len(cell),
                 paper="> 95" if paper is None else paper)
        )  # fmt: skip
    return rows


def table3_line(row: dict, match: str) -> str:
    """One :func:`table3_rows` row as a line of text, ours next to the paper's."""
    lo, hi = row["ci"]
    episodes = "/".join(str(e) for e in row["episodes"])
    return (f"{match:>12} {row['method']:>14} H={row['H']}: {row['ours']:5.1f}% "
            f"[95% CI {lo:.1f}, {hi:.1f}] last episode, {row['last20']:5.1f} ± "
            f"{row['last20_se']:.1f}% last 20; {round(row['stuck'] * row['seeds'])} of "
            f"{row['seeds']} seeds stuck; {episodes} episodes; paper {row['paper']}")  # fmt: skip


def table3_markdown(rows: list[dict]) -> str:
    """:func:`table3_rows` as a Markdown table."""
    lines = [
        "| method | H | seeds | episodes | ours (%), last episode [95% CI] | ours (%), last 20 "
        "| stuck seeds | paper (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        episodes = ", ".join(str(e) for e in r["episodes"])
        lo, hi = r["ci"]
        lines.append(
            f"| {r['method']} | {r['H']} | {r['seeds']} | {episodes} "
            f"| {r['ours']:.1f} [{lo:.1f}, {hi:.1f}] | {r['last20']:.1f} ± {r['last20_se']:.1f} "
            f"| {round(r['stuck'] * r['seeds'])} of {r['seeds']} | {r['paper']} |"
        )
    return "\n".join(lines)


__all__ = [
    "PAPER_TABLE3",
    "PRESETS",
    "after_solving",
    "final_error_by",
    "final_errors",
    "grid_configs",
    "is_complete",
    "is_stuck",
    "load_runs",
    "provenance",
    "run_grid",
    "run_name",
    "runs_by_cell",
    "select_runs",
    "shipped_runs",
    "table3_line",
    "table3_markdown",
    "table3_rows",
    "write_json_atomic",
]
