"""What a careless or hostile user types: refused before any work, with one clear line.

Outputs that are not ours are never written over, run files are read strictly, values that
would crash later or learn nothing are refused up front, and the objectives refuse inputs
that would give a silent NaN.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tpo_core import objectives
from tpo_core.llm import RLVRConfig
from tpo_core.tokens import grid, table3
from tpo_core.tokens.grid import check_output, load_run, load_runs, write_run
from tpo_core.tokens.train import TrainConfig, TrainResult

TINY = ["--episodes", "1", "--batch", "4", "--k", "2", "--length", "3", "--quiet"]


def cli(*args, timeout=120):
    command = [sys.executable, "-m", "tpo_core", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def refused(proc, message):
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 2 and message in lines[-1] and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- never write over others' files


def test_a_device_a_fifo_a_link_or_another_file_is_never_an_output(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "target.txt").write_text("keep me")
    (tmp_path / "link.json").symlink_to(tmp_path / "target.txt")
    (tmp_path / "notes.json").write_text('{"mine": true}')
    with pytest.raises(ValueError, match="not a regular file"):
        check_output(Path("/dev/null"))  # refused before anything is written
    for name, message in [
        ("fifo.json", "not a regular file"),
        ("link.json", "symbolic link"),
        ("notes.json", "not a run's file"),
    ]:
        proc = cli("train", *TINY, "--out", str(tmp_path / name))
        assert refused(proc, message), proc.stderr
    assert (tmp_path / "target.txt").read_text() == "keep me"
    assert (tmp_path / "fifo.json").is_fifo() and (tmp_path / "link.json").is_symlink()
    run = tmp_path / "run.json"
    assert cli("train", *TINY, "--out", str(run)).returncode == 0
    assert cli("train", *TINY, "--out", str(run)).returncode == 0  # our own run: replaced


def test_a_grid_stops_at_a_fifo_in_its_folder_before_training(tmp_path):
    config = TrainConfig(episodes=1, batch=4, k=2, length=3)
    os.mkfifo(tmp_path / grid.run_name(config))
    proc = cli("grid", *TINY, "--out", str(tmp_path), timeout=60)  # a read would hang
    assert refused(proc, "not a regular file"), proc.stderr


def test_a_grid_never_writes_over_another_file_named_like_one_of_its_runs(tmp_path):
    config = TrainConfig(episodes=1, batch=4, k=2, length=3)
    notes = tmp_path / grid.run_name(config)
    notes.write_text("someone's notes")
    proc = cli("grid", *TINY, "--out", str(tmp_path))
    assert refused(proc, "exists and is not a run's file"), proc.stderr
    assert notes.read_text() == "someone's notes"


def test_a_name_too_long_for_the_file_system_is_refused_before_training(tmp_path):
    proc = cli("train", *TINY, "--out", str(tmp_path / ("a" * 245 + ".json")))
    assert refused(proc, "bytes; this file system holds names up to"), proc.stderr


# ---------------------------------------------------------------- reading run files strictly


def good_run(tmp_path) -> dict:
    config = TrainConfig(episodes=3, batch=4, k=2, length=3)
    result = TrainResult(config, [1.0, 0.5, 0.0], [0.1, 0.2, 0.3], [0.5, 0.25, 0.0], [0, 0, 0])
    write_run(tmp_path / "good.json", result, {"command": "test"})
    return json.loads((tmp_path / "good.json").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d | {"error": d["error"][:1]}, "must hold 3 values"),
        (lambda d: d | {"error": []}, "must hold 3 values"),
        (lambda d: d | {"error": "x" * 1000}, "must hold 3 values"),
        (lambda d: d | {"error": [1e308, 0.5, 0.0]}, "outside [0, 1]"),
        (lambda d: d | {"skipped": [0, 2, 0]}, "outside [0, 1]"),
        (lambda d: d | {"config": d["config"] | {"k": 0}}, "k must be"),
        (lambda d: d | {"config": d["config"] | {"episodes": 2.5}}, "episodes must be int"),
        (lambda d: d | {"config": "tpo"}, "holds an object with its config"),
        (lambda d: [d], "holds an object with its config"),
    ],
)
def test_a_run_file_that_does_not_hold_what_its_config_says_is_refused(tmp_path, edit, message):
    (tmp_path / "bad.json").write_text(json.dumps(edit(good_run(tmp_path))))
    with pytest.raises(ValueError, match="not a finished run") as err:
        load_run(tmp_path / "bad.json")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"error": [NaN]}', "NaN is not standard JSON"),
        ('{"error": [Infinity]}', "Infinity is not standard JSON"),
        ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
        ('{"error": [0.5', "not valid JSON"),
    ],
)
def test_run_files_are_parsed_strictly(tmp_path, text, message):
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_run(tmp_path / "x.json")


def test_summary_reads_regular_files_only_and_says_what_was_wrong(tmp_path):
    good_run(tmp_path)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(ValueError, match="folder.json is not a regular file"):
        load_runs(tmp_path)
    (tmp_path / "folder.json").rmdir()
    os.mkfifo(tmp_path / "pipe.json")
    proc = cli("summary", "--runs", str(tmp_path), timeout=60)  # a read would hang
    assert refused(proc, "pipe.json is not a regular file"), proc.stderr


def test_seeds_that_never_learn_share_their_curves_and_are_still_distinct_seeds():
    """Every seed stuck at error 1 with no gradient has the same curves: that is no copy."""
    runs = [
        TrainResult(TrainConfig(episodes=3, seed=s), [1.0] * 3, [0.0] * 3, [1.0] * 3, [0] * 3)
        for s in range(3)
    ]
    (row,) = table3.table3_rows(runs, "prompts")
    assert row["seeds"] == 3
    learned = TrainResult(TrainConfig(episodes=3, seed=3), [1.0, 0.5, 0.0], [0.1, 0.2, 0.3])
    copy = TrainResult(TrainConfig(episodes=3, seed=4), learned.error, learned.grad_norm)
    with pytest.raises(ValueError, match="identical curves"):
        table3.check_distinct([learned, copy])


# ---------------------------------------------------------------- values refused up front


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--eta", "1e-300"], "eta must be finite and at least"),
        (["train", "--lr", "1e308"], "lr must be in (0, 1]"),
        (["train", "--k", "1000000000"], "GiB for its rollouts"),
        (["train", "--batch", "1000000000"], "GiB for its rollouts"),
        (["train", "--vocab", "1000000000"], "GiB for its rollouts"),
        (["train", "--length", "100000"], "GiB for its rollouts"),
        (["grid", "--seeds", "3..1"], "is empty"),
        (["grid", "--seeds", "0..1000000000000"], "at most 10000 at once"),
        (["grid", "--workers", "100000"], "CPUs, one per worker"),
        (["grid", "--preset", "table3", "--lr", "0.5"], "--preset table3 conflicts with --lr"),
        (["summary", "--runs", ".", "--shipped", "paper_h10"], "give one only"),
    ],
)
def test_values_that_cannot_work_exit_2_with_one_line(tmp_path, args, message):
    command, *rest = args
    out = ["--out", str(tmp_path / ("run.json" if command == "train" else "grid"))]
    proc = cli(command, *rest, *(out if command != "summary" else []))
    assert refused(proc, message), proc.stderr


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (dict(steps=2.5), TypeError, "steps must be int"),
        (dict(k="8"), TypeError, "k must be int"),
        (dict(seed=2**64), ValueError, "seed must be in"),
        (dict(device="tpu"), ValueError, "device must be"),
        (dict(temperature=1e-30), ValueError, "temperature must be at least"),
        (dict(eta=1e-300), ValueError, "eta must be finite and at least"),
        (dict(lr=1e308), ValueError, "lr must be at most"),
    ],
)
def test_an_rlvr_config_that_would_crash_or_learn_nothing_is_refused(changes, error, message):
    with pytest.raises(error, match=message):
        RLVRConfig("some-model", **changes).validate()


def test_explorers_refuse_what_their_sliders_would_clamp():
    from tpo_core import teaching as explorers
    from tpo_core.group import random_group

    for kwargs in (dict(eta=0.0), dict(k=17), dict(k=1)):
        with pytest.raises(ValueError, match="the slider's range"):
            explorers.GroupExplorer(**kwargs)
    with pytest.raises(ValueError, match="the slider's range"):
        explorers.OvershootExplorer(epochs=10_000)
    with pytest.raises(ValueError, match="at most|in \\[2, "):
        random_group(10**9)


# ---------------------------------------------------------------- objectives


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: objectives.grpo_loss(
                torch.zeros(4), torch.full((4,), torch.nan), torch.ones(4)
            ),
            "old_log_probs contains NaN",
        ),
        (
            lambda: objectives.grpo_loss(
                torch.zeros(4), torch.zeros(4), torch.ones(4), ref_log_probs=torch.zeros(4).log()
            ),
            "ref_log_probs contains infinite",
        ),
        (
            lambda: objectives.grpo_loss(
                torch.zeros(4), torch.zeros(4), torch.ones(4), ref_log_probs=torch.zeros(3)
            ),
            "ref_log_probs has shape (3,)",
        ),
        (
            lambda: objectives.ppo_loss(torch.zeros(4), torch.zeros(4), torch.ones(2, 4)),
            "do not broadcast to log_probs of shape (4,)",
        ),
        (lambda: objectives.grpo_advantages(torch.ones(2, 4), eps=0.0), "eps must be a positive"),
        (
            lambda: objectives.tpo_loss(torch.zeros(2, 3), torch.full((2, 3), 0.5)),
            "must sum to 1",
        ),
        (
            lambda: objectives.tpo_target(torch.zeros(3), torch.tensor([1.0, 0, 0]), eta=1e-300),
            "eta must be finite and at least",
        ),
    ],
)
def test_objectives_refuse_inputs_that_would_give_a_silent_nan(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


def test_huge_float32_scores_standardise_like_small_ones():
    """3e38 squared overflows float32; the z-scores are scale-free, so they must not care."""
    small = torch.tensor([[3.0, 0.0, -3.0, 1.0]])
    huge = small * 1e38
    torch.testing.assert_close(
        objectives.standardize_scores(huge), objectives.standardize_scores(small)
    )
    torch.testing.assert_close(objectives.grpo_advantages(huge), objectives.grpo_advantages(small))
    target = objectives.tpo_target(torch.zeros(1, 4), huge)
    assert torch.isfinite(target).all()


# ---------------------------------------------------------------- provenance


def test_provenance_calls_a_package_with_untracked_code_dirty(tmp_path, monkeypatch):
    package = tmp_path / "repo" / "tpo_core"
    (package / "tokens" / "results").mkdir(parents=True)
    (package / "__init__.py").write_text("")

    def git(*args):
        subprocess.run(["git", "-C", str(package.parent), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    monkeypatch.setattr(grid, "PACKAGE", package)
    monkeypatch.setattr(grid, "RESULTS", package / "tokens" / "results")
    assert not grid.package_commit().endswith("-dirty")
    (package / "tokens" / "results" / "run.json").write_text("{}")  # a result, not code
    assert not grid.package_commit().endswith("-dirty")
    (package / "new_module.py").write_text("x = 1\n")
    assert grid.package_commit().endswith("-dirty")


def test_a_resumed_grid_warns_when_its_finished_runs_were_made_another_way(tmp_path, capsys):
    """Runs made with other thread counts (or as replicas) round differently: say so."""
    config = TrainConfig(episodes=3, batch=4, k=2, length=3)
    result = TrainResult(config, [1.0, 0.5, 0.0], [0.1, 0.2, 0.3], [0.5, 0.25, 0.0], [0, 0, 0])
    stamp = {"command": "test", "hardware": "some CPU, 64 threads", "replicas": 4}
    write_run(tmp_path / grid.run_name(config), result, stamp)
    grid.run_grid([config], tmp_path, progress=False)  # nothing left to train
    assert "64 threads, 4 replicas" in capsys.readouterr().err
    write_run(
        tmp_path / grid.run_name(config),
        result,
        {"hardware": f"x, {torch.get_num_threads()} threads"},
    )
    grid.run_grid([config], tmp_path, progress=False)
    assert "warning" not in capsys.readouterr().err
