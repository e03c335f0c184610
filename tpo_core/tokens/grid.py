"""Grids of token-task runs on disk: resumable, provenance-stamped, one JSON file per run.

Every run of a grid is one JSON file in the grid's folder, named after the
settings that define it (:func:`run_name`). A file is written to a
temporary name and renamed only once it is complete, so a crashed or
interrupted grid never leaves a file that looks finished, and running the
same grid again skips every run whose file is already there::

    python -m tpo_core grid --methods tpo grpo --lengths 7 --seeds 0..2 \\
        --episodes 1000 --out results/sparse

:mod:`tpo_core.tokens.table3` summarises the runs next to the paper's Table 3.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tpo_core.tokens.algorithms import get_algorithm
from tpo_core.tokens.files import (
    RESULTS,
    check_name_length,
    check_ours,
    check_output,
    load_run,
    load_runs,
    read_json,
    shipped,
    shipped_runs,
    write_json_atomic,
    write_run,
)
from tpo_core.tokens.replicas import train_replicas
from tpo_core.tokens.train import TrainConfig, TrainResult, train

PACKAGE = Path(__file__).parents[1]  # tpo_core/

# ---------------------------------------------------------------- provenance


def _git(*args: str) -> str | None:
    """``git -C <the package's folder> args``: its output, or None if that fails."""
    try:
        command = ["git", "-C", str(PACKAGE), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def package_commit() -> str | None:
    """The commit of the git checkout that holds this package (``-dirty`` when the package's
    files had uncommitted changes, untracked files included; results being written are not
    code), whatever the current directory; None when the package is not a tracked part of
    a git checkout (an installed copy, an archive)."""
    if _git("ls-files", "--error-unmatch", "__init__.py") is None:
        return None
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None
    dirty = _git("status", "--porcelain", "--", ".", f":(exclude){RESULTS.relative_to(PACKAGE)}")
    return commit.strip() + ("-dirty" if dirty else "")


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

    ``git_commit`` is the package's own commit (:func:`package_commit`): null, with
    ``git_note`` saying why, when the package is not in a git checkout.
    """
    commit = package_commit()
    stamp = dict(
        command="python -m tpo_core " + " ".join(argv),
        git_commit=commit,
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        hardware=_hardware(),
        python=platform.python_version(),
        torch=torch.__version__,
    )
    if commit is None:
        stamp["git_note"] = "tpo_core was not run from a git checkout: no commit to record"
    return stamp


def provenance_summary(runs: list[TrainResult]) -> str:
    """The provenance of many runs in one line: how many, from which commits, when, on what
    hardware, and the range of their wall times."""
    stamps = [r.provenance for r in runs if r.provenance]
    if not stamps:
        return f"{len(runs)} runs, no provenance recorded"
    commits = sorted({(s.get("git_commit") or "none")[:7] for s in stamps})
    dates = sorted(s["date"][:10] for s in stamps if "date" in s)
    hardware = sorted({s.get("hardware", "unknown") for s in stamps})
    minutes = sorted(s["wall_seconds"] / 60 for s in stamps if "wall_seconds" in s)
    wall = f", {minutes[0]:.0f}-{minutes[-1]:.0f} min each" if minutes else ""
    return (
        f"{len(runs)} runs from commit{'s' * (len(commits) > 1)} {', '.join(commits)}, "
        f"{dates[0]} to {dates[-1]}, on {'; '.join(hardware)}{wall}"
    )


# ---------------------------------------------------------------- run names

# Settings that run_name spells out (or, the device, leaves out: it makes no other run); every
# other setting appears only when it differs from its default, under these short tags.
NAMED_APART = tuple("task reward method length vocab batch k match episodes seed device".split())
TAGS = {"epochs": "ep", "lr": "lr", "eta": "eta", "newton_schulz": "ns-"}


def run_name(config: TrainConfig) -> str:
    """A file name that says which run it holds; settings left at their defaults are omitted.

    Grouped methods are the same run under either matching, so only
    single-sample methods carry the ``match``.
    """
    default = TrainConfig()
    parts = [config.method, config.task, config.reward, f"H{config.length}", f"V{config.vocab}"]
    parts += [f"B{config.batch}", f"K{config.k}"]
    if get_algorithm(config.method).rollout == "single":
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
    if not Path(path).exists():
        return False
    check_ours(path)  # a FIFO, a device, a link or another's file in the folder stops it here
    try:
        data = read_json(path)
        stored = TrainConfig.from_dict(data["config"])
    except (ValueError, KeyError, TypeError):
        return False
    same = replace(stored, device=None) == replace(config, device=None)
    return same and len(data.get("error", ())) == config.episodes


# ---------------------------------------------------------------- running a grid


def grid_configs(
    methods: Iterable[str],
    lengths: Iterable[int],
    seeds: Iterable[int],
    matches: Iterable[str] = ("prompts",),
    **settings,
) -> list[TrainConfig]:
    """Every (method, H, match, seed) run, without duplicates (grouped methods ignore ``match``)."""
    configs, names = [], set()
    for method, length, match, seed in itertools.product(methods, lengths, matches, seeds):
        config = TrainConfig(method=method, length=length, match=match, seed=seed, **settings)
        config.validate()
        if run_name(config) not in names:
            names.add(run_name(config))
            configs.append(config)
    return configs


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
        write_run(path, result, stamp)


def _jobs(todo: list[tuple[TrainConfig, Path]], replicas: int) -> list[list]:
    """``todo`` as jobs: up to ``replicas`` seeds of one config together (token-level methods
    and ``skip_signal_free`` runs, which replicas do not run, one seed a job)."""
    groups: dict[TrainConfig, list] = {}
    for config, path in todo:
        alone = get_algorithm(config.method).rollout == "token" or config.skip_signal_free
        key = config if replicas == 1 or alone else replace(config, seed=0)
        groups.setdefault(key, []).append((config, path))
    return [
        runs[i : i + replicas] for runs in groups.values() for i in range(0, len(runs), replicas)
    ]


PR_SET_PDEATHSIG = 1  # Linux prctl: the signal a process gets when its parent dies


def _start_worker(parent: int) -> None:
    """In each worker: on Linux, ask the kernel to end it if the grid's process dies, however
    it dies; and end at once if that has already happened."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_exits():
    """SIGTERM raises SystemExit in the block (main thread only), so that the pool's ``with``
    ends the workers on the way out instead of leaving them training."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _how_run(stamp: dict) -> tuple[str, int]:
    """(threads, replicas) as a run's provenance records them."""
    threads = stamp.get("hardware", "").rpartition(", ")[2]
    return threads, stamp.get("replicas", 1)


def _warn_if_mixed(finished: list[Path], workers: int, replicas: int) -> None:
    """Warn (stderr) when the runs already in a grid's folder were made with other thread
    counts or replicas than this grid's: their curves differ in rounding (about 1e-5; more
    with replicas), so seeds of one cell would not all be made alike."""
    threads = f"{1 if workers > 1 else torch.get_num_threads()} threads"
    found = set()
    for path in finished:
        try:
            found.add(_how_run(read_json(path).get("provenance", {})))
        except (ValueError, AttributeError):
            continue
    other = {how for how in found if how[0] != threads or (how[1] > 1 and replicas == 1)}
    if other:
        listed = "; ".join(f"{t}, {r} replicas" for t, r in sorted(other))
        print(
            f"warning: runs already in this folder were made with {listed}; this grid runs "
            f"with {threads}, {replicas} replicas, so their rounding differs (about 1e-5)",
            file=sys.stderr,
        )


def run_grid(
    configs: list[TrainConfig],
    out: Path,
    argv: list[str] | None = None,
    workers: int = 1,
    progress: bool = True,
    replicas: int = 1,
) -> list[Path]:
    """Run every config whose result is not yet in ``out``; return the paths of all of them.

    With ``workers > 1`` runs go to separate processes with one thread each,
    which end with the grid's process (SIGTERM included); with ``replicas > 1``
    up to that many seeds of one configuration train together
    (:func:`~tpo_core.tokens.replicas.train_replicas`), still one file per seed.
    """
    if replicas < 1 or workers < 1:
        raise ValueError(f"workers and replicas must be at least 1, got {workers}, {replicas}")
    out = Path(out)
    check_output(out, folder=True)
    stamp = provenance(argv or [])  # the code as it was when the grid started
    paths = [out / run_name(c) for c in configs]
    for path in paths:
        check_name_length(out, path.name)
    todo = [(c, p) for c, p in zip(configs, paths, strict=True) if not is_complete(p, c)]
    waiting = {p for _, p in todo}
    _warn_if_mixed([p for p in paths if p not in waiting], workers, replicas)
    bar = tqdm(
        total=len(configs), initial=len(configs) - len(todo), desc="grid", disable=not progress
    )
    jobs = _jobs(todo, replicas)
    if workers == 1:
        for job in jobs:
            bar.set_postfix_str(job[0][1].stem)
            _run_job(job, stamp, None)
            bar.update(len(job))
    else:
        context = get_context("spawn")
        with _sigterm_exits(), context.Pool(workers, _start_worker, (os.getpid(),)) as pool:
            pending = [(pool.apply_async(_run_job, (job, stamp, 1)), len(job)) for job in jobs]
            for result, runs in pending:
                result.get()
                bar.update(runs)
            pool.close()  # a finished grid lets its workers exit; leaving the block early
            pool.join()  # (an error, SIGTERM) terminates them instead
    bar.close()
    return paths


__all__ = [
    "check_output",
    "grid_configs",
    "is_complete",
    "load_run",
    "load_runs",
    "package_commit",
    "provenance",
    "run_grid",
    "run_name",
    "shipped",
    "shipped_runs",
    "write_json_atomic",
    "write_run",
]
