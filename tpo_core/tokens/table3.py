"""Final errors of finished runs, cell by cell, next to the paper's Table 3 (notebook 05).

A *cell* is one configuration: every setting but the seed and the device
(a grouped method's run counts under both matchings, as in Table 3). Seeds
of one cell are pooled; runs of different configurations never are, so two
cells of one method and H become two rows that say which settings differ.
The paper's number sits only beside a cell run at the paper's protocol
(:data:`PAPER_PROTOCOL`), and a run counted twice (a copied file) is refused::

    python -m tpo_core summary --preset table3
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from tpo_core.stats import bootstrap_interval, mean_and_se, solved_and_relapsed
from tpo_core.tokens.algorithms import get_algorithm
from tpo_core.tokens.train import TrainConfig, TrainResult

# The paper's Table 3 (§3.6): final error (%), 2,000 episodes, V = 2, B = 100, K = 8; None: >95%
PAPER_TABLE3: dict[tuple[str, str, int], float | None] = {
    (method, match, length): value
    for method, prompts, interactions in [
        ("tpo", (6.9, 8.6, 6.1, 7.4), (1.8, 2.8, 5.3, 19.0)),
        ("grpo", (14.5, 27.6, 30.0, 50.4), (9.6, 23.2, 36.2, 48.7)),
        ("grpo_no_kl", (66.6, 92.5, None, None), (78.1, 83.8, None, None)),
        ("ppo", (12.0, 26.3, 90.6, None), (38.6, 62.1, 66.2, None)),
        ("dg", (33.8, 58.8, None, None), (47.7, 69.4, None, None)),
    ]
    for match, row in (("prompts", prompts), ("interactions", interactions))
    for length, value in zip((7, 8, 9, 10), row, strict=True)
}

# The paper's ablations (§3.7: K = 8, B = 100, 20 seeds): no table; at H = 10 all above 99%.
PAPER_ABLATIONS_H10 = ("tpo_no_anchor", "group_pg", "grpo_no_kl")


def paper_error(method: str, match: str, length: int) -> float | str:
    """The paper's final error (%) for a cell: Table 3's number, its bound as text ("> 95",
    or "> 99" for an ablation at H = 10, §3.7), or "n/a" where the paper reports none."""
    if length == 10 and method in PAPER_ABLATIONS_H10:
        return "> 99"
    value = PAPER_TABLE3.get((method, match, length), "n/a")
    return "> 95" if value is None else value


# The settings the paper's Table 3 runs share (each method at its own epochs). How the engine
# implements Muon, LayerNorm or GELU is not part of it, but cells differing there stay apart.
PAPER_PROTOCOL = dict(task="reverse_copy", reward="terminal", vocab=2, batch=100, k=8)
PAPER_PROTOCOL |= dict(episodes=2000, lr=1e-3, eta=1.0, skip_signal_free=False)

GRPO_FAMILY = ["dr_grpo", "dapo", "gspo", "cispo", "rloo"]  # beyond the paper (tpo_core.methods)
PRESETS = {
    "table3": dict(
        methods="tpo grpo grpo_no_kl ppo dg tpo_no_anchor group_pg".split() + GRPO_FAMILY,
        lengths=[7, 8, 9, 10],
        matches=["prompts", "interactions"],
        **{k: PAPER_PROTOCOL[k] for k in "task reward vocab batch k episodes lr eta".split()},
        epochs=None,  # each method's own
    ),
}


def preset_settings(name: str, settings: dict, given: set[str]) -> dict:
    """``settings`` with preset ``name``'s applied; raises ValueError, naming every conflict,
    where a setting in ``given`` (set explicitly) says otherwise. A list (``methods``,
    ``lengths``, ``matches``) given explicitly may pick part of the preset's."""
    preset = PRESETS[name]
    conflicts = []
    for key, value in preset.items():
        if key not in given:
            continue
        if isinstance(value, list):
            outside = [str(v) for v in settings[key] if v not in value]
            if outside:
                conflicts.append(f"--{key} {' '.join(outside)} (the preset's: {value})")
        elif settings[key] != value:
            conflicts.append(f"--{key.replace('_', '-')} {settings[key]} (the preset's: {value})")
    if conflicts:
        raise ValueError(f"--preset {name} conflicts with {'; '.join(conflicts)}")
    return settings | {k: v for k, v in preset.items() if k not in given}


# ---------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One row of a table: a matching and a configuration (seed 0, no device, epochs as used,
    and ``match`` "prompts" for a grouped method, whose runs serve both matchings)."""

    match: str
    config: TrainConfig

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def length(self) -> int:
        return self.config.length

    def off_protocol(self) -> list[str]:
        """The settings (``name=value``) in which this cell differs from the paper's protocol."""
        c = self.config
        protocol = PAPER_PROTOCOL | dict(epochs=get_algorithm(c.method).epochs)
        return [f"{k}={getattr(c, k)}" for k, v in protocol.items() if getattr(c, k) != v]


def configuration(config: TrainConfig) -> TrainConfig:
    """``config`` less what does not make another configuration: the seed, the device, a
    grouped method's matching; epochs as the run uses them."""
    grouped = get_algorithm(config.method).grouped
    match = "prompts" if grouped else config.match
    return replace(config, seed=0, device=None, epochs=config.resolved.epochs, match=match)


def _fingerprint(run: TrainResult) -> tuple:
    """A run's curves, NaN as None (NaN equals nothing, not even a copy of itself)."""
    curves = (run.error, run.grad_norm, run.all_fail)
    return tuple(tuple(None if math.isnan(v) else v for v in curve) for curve in curves)


def check_distinct(runs: list[TrainResult]) -> None:
    """Raise ValueError if two of ``runs`` are one run: the same configuration and seed, or
    the same curves (a copied file is not another seed), unless the curves never change (a
    seed failing every episode without a gradient): distinct seeds share those."""
    seen: dict = {}
    for run in runs:
        keys = [("the same settings and seed", replace(run.config, device=None))]
        if len(set(run.error)) > 1 or len(set(run.grad_norm)) > 1:
            keys.append(("identical curves", _fingerprint(run)))
        for key in keys:
            if key in seen:
                first = seen[key]
                raise ValueError(
                    f"{first.source or first.config} and {run.source or run.config} are one "
                    f"run ({key[0]}): a copy is not another seed; remove one"
                )
            seen[key] = run


def runs_by_cell(runs: list[TrainResult]) -> dict[Cell, list[TrainResult]]:
    """The runs of each cell; a grouped method's run counts for both matchings, as in
    Table 3. Raises ValueError on a run counted twice (:func:`check_distinct`)."""
    check_distinct(runs)
    table: dict[Cell, list[TrainResult]] = {}
    for run in runs:
        config = configuration(run.config)
        single = get_algorithm(config.method).rollout == "single"
        for match in (config.match,) if single else ("prompts", "interactions"):
            table.setdefault(Cell(match, config), []).append(run)
    return table


def differing_settings(cells: list[Cell]) -> dict[Cell, dict]:
    """For each cell, the settings (name: value) in which it differs from another cell of the
    same matching, method and H; empty for a cell that is the only one of its kind."""
    differs = {}
    for cell in cells:
        kind = (cell.match, cell.method, cell.length)
        kin = [c.config for c in cells if (c.match, c.method, c.length) == kind]
        differs[cell] = {n: getattr(cell.config, n) for n in _varied(kin)}
    return differs


def final_errors(runs: list[TrainResult], last: int = 1) -> dict[tuple[str, str, int], list[float]]:
    """Final error of each run, keyed by (method, match, H): the error of the last episode (the
    paper's metric) or, with ``last > 1``, the mean of the last ``last`` episodes.

    Refuses (ValueError) to pool two configurations under one key: select the runs first.
    """
    cells = runs_by_cell(runs)
    settings = differing_settings(list(cells))
    finals: dict[tuple[str, str, int], list[float]] = {}
    for cell, rs in cells.items():
        key = (cell.method, cell.match, cell.length)
        if settings[cell]:
            raise ValueError(
                f"the runs of {key} differ in {', '.join(settings[cell])}: select_runs first"
            )
        finals[key] = [r.final_error(last) for r in rs]
    return finals


def _varied(configs: list[TrainConfig]) -> list[str]:
    """The settings whose values differ among ``configs``."""
    return [f.name for f in fields(TrainConfig) if len({getattr(c, f.name) for c in configs}) > 1]


# ---------------------------------------------------------------- selecting and sweeping runs


def is_stuck(run: TrainResult, last: int = 20, floor: float = 0.01) -> bool:
    """A run stuck on prompts it cannot learn from: its error over the last ``last`` episodes
    (not the final error, the last episode's) is at least ``floor``, 80% of it in all-fail groups.

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
    return run.config.resolved.epochs if name == "epochs" else getattr(run.config, name)


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

    Only runs whose settings equal ``where`` count (:func:`select_runs`). Runs of a
    method that differ in another setting are not pooled: each configuration is its
    own line, ``"ppo (match=interactions)"``. Returns ``{line: (values, mean, s.e.)}``,
    sorted by value.
    """
    chosen = select_runs(runs, **where)
    check_distinct(chosen)
    lines: dict[TrainConfig, dict] = {}  # configuration less the swept setting -> value -> errors
    for run in chosen:
        line = replace(configuration(run.config), **{setting: getattr(TrainConfig, setting)})
        by_value = lines.setdefault(line, {})
        by_value.setdefault(_setting(run, setting), []).append(run.final_error(last))
    sweeps = {}
    for line, by_value in lines.items():
        varied = _varied([other for other in lines if other.method == line.method])
        spelled = ", ".join(f"{n}={getattr(line, n)}" for n in varied)
        label = line.method + (f" ({spelled})" if varied else "")
        xs = sorted(by_value)
        mean, se = zip(*(mean_and_se(by_value[x]) for x in xs), strict=True)
        sweeps[label] = (xs, [float(m) for m in mean], [float(s) for s in se])
    return sweeps


@dataclass(frozen=True)
class LearningMarks:
    """How one method's seeds learned: ``steps`` to ``solved`` error per seed (``episodes + 1``
    for never), the seeds that solved and that relapsed after solving (error settled at or
    below 1%, :func:`~tpo_core.stats.solved_and_relapsed`), that ended stuck
    (:func:`is_stuck`), and each seed's ``finals`` (seed: the last episode's error)."""

    steps: list[int]
    solved: list[int]  # only a solved seed can relapse
    relapsed: list[int]
    stuck: list[int]
    finals: dict[int, float]
    episodes: int  # the runs' length: a step beyond it means never

    @property
    def worst_unstuck(self) -> float | None:
        """The highest final error of a seed that did not end stuck (None if all did)."""
        return max((v for s, v in self.finals.items() if s not in self.stuck), default=None)

    @property
    def reached(self) -> list[int]:
        """The steps of the seeds that got there, sorted."""
        return sorted(s for s in self.steps if s <= self.episodes)

    @property
    def median(self) -> int | None:
        return self.reached[len(self.reached) // 2] if self.reached else None


def learning_marks(runs: list[TrainResult], method: str, solved: float = 0.05) -> LearningMarks:
    """:class:`LearningMarks` of ``method``'s runs among ``runs``, seeds in order."""
    seeds = sorted((r for r in runs if r.config.method == method), key=lambda r: r.config.seed)
    if not seeds:
        raise ValueError(f"no runs of {method!r} to mark")
    return LearningMarks(
        steps=[r.steps_to(solved) or r.config.episodes + 1 for r in seeds],  # 1-based: 0 is never
        solved=[r.config.seed for r in seeds if solved_and_relapsed(r.error)[0] is not None],
        relapsed=[r.config.seed for r in seeds if solved_and_relapsed(r.error)[1] is not None],
        stuck=[r.config.seed for r in seeds if is_stuck(r)],
        finals={r.config.seed: r.final_error() for r in seeds},
        episodes=max(r.config.episodes for r in seeds),
    )


# ---------------------------------------------------------------- Table 3


def table3_rows(runs: list[TrainResult], match: str = "prompts") -> list[dict]:
    """Our final errors (%) next to the paper's Table 3, one row per cell we ran: ``ours``, the
    paper's metric (the last episode's error, mean over seeds) with ``ci`` its 95% bootstrap
    interval over seeds; ``last20`` (± ``last20_se``), the last 20 episodes; ``stuck``, the
    share of seeds that :func:`is_stuck`; ``settings``, what sets the row apart from the other
    rows of its method and H; ``paper`` (:func:`paper_error`), "n/a" also off its protocol
    (``off_protocol`` then says where)."""
    cells = {c: rs for c, rs in runs_by_cell(runs).items() if c.match == match}
    settings = differing_settings(list(cells))
    rows = []
    for cell in sorted(cells, key=lambda c: (c.method, c.length, str(settings[c]))):
        rs = cells[cell]
        last = [r.final_error(1) for r in rs]
        last20, last20_se = (float(x) for x in mean_and_se([r.final_error(20) for r in rs]))
        paper = paper_error(cell.method, match, cell.length)
        off = [] if paper == "n/a" else cell.off_protocol()
        rows.append(
            dict(
                method=cell.method,
                H=cell.length,
                settings=settings[cell],
                seeds=len(rs),
                episodes=[cell.config.episodes],
                ours=100 * sum(last) / len(last),
                ci=tuple(100 * x for x in bootstrap_interval(last)),
                last20=100 * last20,
                last20_se=100 * last20_se,
                stuck=sum(is_stuck(r) for r in rs) / len(rs),
                paper="n/a" if off else paper,
                off_protocol=off,
            )
        )
    return rows


def _labels(row: dict) -> tuple[str, str]:
    """A row's settings, `` (k=4, eta=0.5)``, and its paper column."""
    settings = ", ".join(f"{k}={v}" for k, v in row.get("settings", {}).items())
    off = ", ".join(row.get("off_protocol", []))
    paper = f"{row['paper']}" + (f" (not its protocol: {off})" if off else "")
    return (f" ({settings})" if settings else ""), paper


def table3_line(row: dict, match: str) -> str:
    """One :func:`table3_rows` row as a line of text, ours next to the paper's."""
    lo, hi = row["ci"]
    episodes = "/".join(str(e) for e in row["episodes"])
    settings, paper = _labels(row)
    return (
        f"{match:>12} {row['method']:>14} H={row['H']}{settings}: {row['ours']:5.1f}% "
        f"[95% CI {lo:.1f}, {hi:.1f}] last episode, {row['last20']:5.1f} ± "
        f"{row['last20_se']:.1f}% last 20; {round(row['stuck'] * row['seeds'])} of "
        f"{row['seeds']} seeds stuck; {episodes} episodes; paper {paper}"
    )


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
        settings, paper = _labels(r)
        lines.append(
            f"| {r['method']}{settings} | {r['H']} | {r['seeds']} | {episodes} "
            f"| {r['ours']:.1f} [{lo:.1f}, {hi:.1f}] | {r['last20']:.1f} ± {r['last20_se']:.1f} "
            f"| {round(r['stuck'] * r['seeds'])} of {r['seeds']} | {paper} |"
        )
    return "\n".join(lines)


__all__ = [
    "PAPER_ABLATIONS_H10",
    "PAPER_PROTOCOL",
    "PAPER_TABLE3",
    "PRESETS",
    "Cell",
    "check_distinct",
    "configuration",
    "differing_settings",
    "final_error_by",
    "final_errors",
    "is_stuck",
    "learning_marks",
    "LearningMarks",
    "paper_error",
    "preset_settings",
    "runs_by_cell",
    "select_runs",
    "table3_line",
    "table3_markdown",
    "table3_rows",
]
