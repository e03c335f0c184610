"""Shipped LLM runs: ``python -m tpo_core rlvr`` files under ``tpo_core/llm/results/<grid>/``,
one per (method, seed), each with its config, per-step history and provenance."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def shipped_runs(grid: str) -> dict[str, list[dict]]:
    """``{method: [run, ...]}`` of the shipped grid ``grid``, each method's runs by seed; a run
    is its file's JSON (``config``, ``history``, ``evaluations``, ``provenance``)."""
    folder = RESULTS / grid
    if not folder.is_dir():
        known = sorted(p.name for p in RESULTS.iterdir() if p.is_dir()) if RESULTS.is_dir() else []
        raise ValueError(f"no shipped LLM grid {grid!r}; shipped: {', '.join(known) or 'none'}")
    runs = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        runs[run["config"]["method"]].append(run)
    return {m: sorted(r, key=lambda run: run["config"]["seed"]) for m, r in runs.items()}


def final_reward(history: dict, last: int = 3) -> float:
    """A run's final reward: the mean sampled reward of its last ``last`` steps (each step's
    reward is itself a mean over G * K completions, so one step is a noisy reading)."""
    rewards = history["reward"]
    if not 1 <= last <= len(rewards):
        raise ValueError(f"last must be in [1, {len(rewards)}] for this run, got {last}")
    return sum(rewards[-last:]) / last
