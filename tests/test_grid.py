"""Grids of runs on disk (tokens.grid): names, exact resume, provenance, standard JSON, checks
before training, presets, and workers that end with the grid."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tpo_core import __main__ as cli
from tpo_core.tokens import grid
from tpo_core.tokens.train import TrainConfig, TrainResult

TINY = dict(task="copy", length=3, batch=4, k=3, episodes=2)


def small_grid(**changes):
    settings = dict(methods=["tpo", "ppo"], lengths=[3], seeds=[0, 1], batch=4, k=3, episodes=2)
    return grid.grid_configs(**(settings | changes))


def counting_train(monkeypatch) -> list:
    """Record the configs that ``run_grid`` trains."""
    calls, real = [], grid.train
    monkeypatch.setattr(grid, "train", lambda c, **kw: calls.append(c) or real(c, **kw))
    return calls


def test_grid_configs_share_grouped_runs_across_matchings():
    configs = small_grid(matches=["prompts", "interactions"])
    names = [grid.run_name(c) for c in configs]
    assert len(configs) == 6  # tpo x 2 seeds once, ppo x 2 seeds x 2 matchings
    assert len(set(names)) == 6 and sum("interactions" in n for n in names) == 2


def test_grid_rejects_impossible_settings():
    with pytest.raises(ValueError, match="unknown method"):
        small_grid(methods=["tpo", "sac"])


def test_run_grid_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    configs = small_grid()
    paths = grid.run_grid(configs, tmp_path, progress=False)
    assert all(grid.is_complete(p, c) for p, c in zip(paths, configs, strict=True))
    data = json.loads(paths[0].read_text())
    assert data["provenance"]["wall_seconds"] >= 0 and "git_commit" in data["provenance"]

    # A crash mid-write leaves a temporary file and a truncated one: neither counts as done.
    paths[1].write_text(paths[1].read_text()[:50])
    (tmp_path / f".{paths[2].name}.123.tmp").write_text("{")
    paths[3].unlink()
    calls = counting_train(monkeypatch)
    grid.run_grid(configs, tmp_path, progress=False)
    assert calls == [configs[1], configs[3]]
    assert len(grid.load_runs(tmp_path)) == 4


def test_a_run_with_any_float_setting_resumes_and_records_what_it_used(tmp_path, monkeypatch):
    config = TrainConfig(lr=0.0012345678, eta=0.123456789, **TINY)
    (path,) = grid.run_grid([config], tmp_path, progress=False)
    stored = json.loads(path.read_text())["config"]
    assert stored["lr"] == 0.0012345678 and stored["eta"] == 0.123456789  # not rounded
    assert grid.is_complete(path, config)
    calls = counting_train(monkeypatch)
    grid.run_grid([config], tmp_path, progress=False)
    assert calls == []  # nothing retrained


def test_run_with_other_settings_is_not_taken_for_finished(tmp_path):
    config = small_grid()[0]
    path = grid.run_grid([config], tmp_path, progress=False)[0]
    assert grid.is_complete(path, config)
    assert not grid.is_complete(path, replace(config, episodes=3))
    assert not grid.is_complete(path, replace(config, skip_signal_free=True))


def test_a_grid_run_finished_on_one_device_is_complete_on_another(tmp_path):
    config = TrainConfig(episodes=2, device="cpu")
    path = tmp_path / "run.json"
    grid.write_run(path, TrainResult(config, error=[0.5, 0.4]), {})
    assert grid.is_complete(path, replace(config, device=None))
    assert grid.is_complete(path, replace(config, device="cuda"))
    assert not grid.is_complete(path, replace(config, seed=1))


def test_loaded_runs_are_train_results(tmp_path):
    path = grid.run_grid(small_grid()[:1], tmp_path, progress=False)[0]
    (run,) = grid.load_runs(tmp_path)
    assert run.config == small_grid()[0] and len(run.error) == 2 and run.skipped == [0, 0]
    assert run.provenance["command"].startswith("python -m tpo_core") and path.exists()
    with pytest.raises(ValueError, match="no folder"):
        grid.load_runs(tmp_path / "nowhere")


# ---------------------------------------------------------------- JSON


def strict_json(text: str):
    """Parse ``text`` as standard JSON: NaN and Infinity are not JSON."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not standard JSON"))


def test_write_json_atomic_writes_standard_json_and_leaves_no_temporary_file(tmp_path):
    payload = {"x": 1 / 3, "y": [2 / 3, math.nan], "z": {"w": math.inf}}
    grid.write_json_atomic(tmp_path / "a" / "r.json", payload)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]
    assert strict_json((tmp_path / "a" / "r.json").read_text()) == {
        "x": 1 / 3,
        "y": [2 / 3, None],
        "z": {"w": None},
    }


def test_result_files_have_null_for_nan_and_read_back_as_nan(tmp_path):
    config = TrainConfig(**TINY | dict(episodes=1))  # one episode: no time per episode
    (path,) = grid.run_grid([config], tmp_path, progress=False)
    data = strict_json(path.read_text())
    assert data["seconds_per_episode"] is None
    (run,) = grid.load_runs(tmp_path)
    assert math.isnan(run.seconds_per_episode)


def test_run_files_round_only_the_curves(tmp_path):
    config = TrainConfig(lr=1 / 3, episodes=2)
    result = TrainResult(config, error=[1 / 3, 2 / 3], grad_norm=[1 / 7, 0.0])
    grid.write_run(tmp_path / "r.json", result, {"wall_seconds": 1 / 3})
    data = strict_json((tmp_path / "r.json").read_text())
    assert data["error"] == [0.333333, 0.666667] and data["grad_norm"] == [0.142857, 0.0]
    assert data["config"]["lr"] == 1 / 3 and data["resolved"]["lr"] == 1 / 3


# ---------------------------------------------------------------- provenance


def git(*args, cwd):
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout


def other_repository(where: Path) -> Path:
    where.mkdir()
    git("init", "-q", cwd=where)
    git("commit", "-q", "--allow-empty", "-m", "another project", cwd=where)
    return where


def test_provenance_records_the_package_commit_wherever_it_runs_from(tmp_path, monkeypatch):
    tracked = subprocess.run(
        ["git", "-C", str(grid.PACKAGE), "ls-files", "--error-unmatch", "__init__.py"],
        capture_output=True,
    )
    head = git("rev-parse", "HEAD", cwd=grid.PACKAGE).strip() if tracked.returncode == 0 else None
    for where in (tmp_path, other_repository(tmp_path / "other")):
        monkeypatch.chdir(where)
        commit = grid.provenance(["grid"])["git_commit"]
        assert (commit or "").removesuffix("-dirty") == (head or "")


def test_provenance_outside_a_git_checkout_is_null_and_says_so(tmp_path, monkeypatch):
    loose = tmp_path / "loose" / "tpo_core"  # an unpacked copy
    inside = other_repository(tmp_path / "repo") / "venv" / "tpo_core"  # untracked in a repo
    for package in (loose, inside):
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        monkeypatch.setattr(grid, "PACKAGE", package)
        stamp = grid.provenance(["grid"])
        assert stamp["git_commit"] is None and "not run from a git checkout" in stamp["git_note"]


# ---------------------------------------------------------------- the command line


def refused(monkeypatch, capsys, *argv) -> str:
    """Run the command line in-process, failing if it trains; return its one-line error."""
    monkeypatch.setattr(cli, "train", lambda *a, **k: pytest.fail("trained first"))
    monkeypatch.setattr(cli, "run_grid", lambda *a, **k: pytest.fail("ran the grid first"))
    with pytest.raises(SystemExit) as exit:
        cli.main(list(argv))
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("where", ["a folder", "/proc/x.json", "under a file"])
def test_train_checks_its_output_before_training(tmp_path, monkeypatch, capsys, where):
    (tmp_path / "afile").write_text("")
    out = {"a folder": str(tmp_path), "under a file": str(tmp_path / "afile" / "x.json")}
    err = refused(monkeypatch, capsys, "train", "--length", "3", "--out", out.get(where, where))
    assert err.startswith("error:") and ("folder" in err or "cannot write" in err)


def test_grid_checks_its_output_before_training(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("")
    for out in (tmp_path / "afile", tmp_path / "afile" / "grid"):
        err = refused(monkeypatch, capsys, "grid", "--lengths", "3", "--out", str(out))
        assert "is a file" in err


def test_a_preset_refuses_options_that_say_otherwise(tmp_path, monkeypatch, capsys):
    err = refused(
        monkeypatch,
        capsys,
        "grid",
        "--preset",
        "table3",
        "--episodes",
        "10",
        "--batch",
        "4",
        "--out",
        str(tmp_path),
    )
    assert "--episodes 10" in err and "--batch 4" in err
    err = refused(
        monkeypatch,
        capsys,
        "grid",
        "--preset",
        "table3",
        "--methods",
        "tpo",
        "pg",
        "--out",
        str(tmp_path),
    )
    assert "--methods pg" in err


def test_a_preset_takes_part_of_its_cells_at_its_settings(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(cli, "run_grid", lambda configs, *a, **k: ran.append(configs) or [])
    argv = ["grid", "--preset", "table3", "--methods", "tpo", "--lengths", "10", "--seeds", "0..1"]
    assert cli.main(argv + ["--episodes", "2000", "--out", str(tmp_path)]) == 0
    (configs,) = ran
    settings = [(c.method, c.length, c.seed, c.episodes, c.batch, c.k) for c in configs]
    assert settings == [("tpo", 10, 0, 2000, 100, 8), ("tpo", 10, 1, 2000, 100, 8)]


def test_workers_and_replicas_must_be_positive(tmp_path, monkeypatch, capsys):
    err = refused(monkeypatch, capsys, "grid", "--workers", "0", "--out", str(tmp_path))
    assert "at least 1" in err


def test_cli_grid_runs_and_summarises(tmp_path):
    args = "--methods tpo --lengths 3 --seeds 0 --batch 4 --k 3 --episodes 2 --quiet"
    proc = subprocess.run(
        [sys.executable, "-m", "tpo_core", "grid", *args.split(), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tpo H=3" in proc.stdout and len(list(tmp_path.glob("*.json"))) == 1
    bad = subprocess.run(
        [sys.executable, "-m", "tpo_core", "grid", "--methods", "dg", "--eta", "2", "--out", "x"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no temperature" in bad.stderr


# ---------------------------------------------------------------- workers


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return True


GRID_WITH_WORKERS = textwrap.dedent(
    """
    import multiprocessing, sys, threading, time
    from tpo_core.tokens.grid import grid_configs, run_grid

    def report():  # the worker processes' ids, once both exist
        while len(multiprocessing.active_children()) < 2:
            time.sleep(0.1)
        print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)

    threading.Thread(target=report, daemon=True).start()
    configs = grid_configs(["tpo"], [3], [0, 1], task="copy", batch=4, k=3, episodes=10**6)
    run_grid(configs, sys.argv[1], workers=2, progress=False)
    """
)


def test_workers_end_with_the_grid_when_it_gets_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", GRID_WITH_WORKERS, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    workers = []
    try:
        workers = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        time.sleep(1.0)  # let them get going
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if alive(pid)], "workers outlived the grid"
    finally:
        proc.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_provenance_summary_is_one_line_over_many_runs():
    from tpo_core.tokens.grid import provenance_summary

    def run(commit, date, minutes):
        stamp = dict(git_commit=commit, date=date, hardware="cpu, 1 threads")
        return TrainResult(TrainConfig(), provenance=stamp | dict(wall_seconds=60 * minutes))

    runs = [run("abcdef123", "2026-12-01T10:00", 6), run("abcdef123", "2026-12-03T09:00", 9)]
    runs.append(run("0123456ff", "2026-12-02T12:00", 7.4))
    assert provenance_summary(runs) == (
        "3 runs from commits 0123456, abcdef1, 2026-12-01 to 2026-12-03, on cpu, 1 threads, "
        "6-9 min each"
    )
    assert provenance_summary([TrainResult(TrainConfig())]) == "1 runs, no provenance recorded"
