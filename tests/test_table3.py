"""Final errors next to the paper's Table 3 (tokens.table3): cells are whole configurations,
never pooled; the paper's number only beside its protocol; a copied run is not another seed."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from tpo_core.teaching.figures.tokens import paper_bound
from tpo_core.tokens import table3
from tpo_core.tokens.grid import load_runs, shipped, shipped_runs, write_run
from tpo_core.tokens.table3 import (
    PAPER_TABLE3,
    PRESETS,
    final_error_by,
    final_errors,
    is_stuck,
    learning_marks,
    select_runs,
    table3_line,
    table3_markdown,
    table3_rows,
)
from tpo_core.tokens.train import TrainConfig, TrainResult

PROTOCOL = dict(length=7, episodes=2000)  # with the defaults: the paper's Table 3 settings


def run(method="tpo", errors=(0.9, 0.1), seed=0, **settings):
    config = TrainConfig(method=method, seed=seed, **(PROTOCOL | settings))
    return TrainResult(config, error=list(errors))


def test_final_errors_and_table3_rows():
    runs = [run("tpo", [0.9, 0.1]), run("tpo", [0.9, 0.3], seed=1), run("dg", [0.5, 0.5])]
    finals = final_errors(runs)  # the paper's metric: the last episode
    assert finals[("tpo", "prompts", 7)] == [0.1, 0.3]
    assert finals[("tpo", "interactions", 7)] == [0.1, 0.3]  # grouped: both matchings
    assert ("dg", "interactions", 7) not in finals
    assert final_errors(runs, last=2)[("tpo", "prompts", 7)] == [0.5, 0.6]
    rows = {r["method"]: r for r in table3_rows(runs)}
    assert rows["tpo"]["ours"] == pytest.approx(20.0)  # (0.1 + 0.3) / 2
    assert rows["tpo"]["ci"] == pytest.approx((10.0, 30.0))  # resamples of two seeds
    assert rows["tpo"]["last20"] == pytest.approx(55.0)  # means 0.5 and 0.6
    assert rows["tpo"]["last20_se"] == pytest.approx(100 * 0.05)  # std 0.0707 / sqrt(2)
    assert rows["tpo"]["paper"] == 6.9 and rows["dg"]["paper"] == 33.8
    assert rows["tpo"]["settings"] == {} and rows["tpo"]["off_protocol"] == []
    assert PAPER_TABLE3[("grpo", "interactions", 10)] == 48.7
    assert PAPER_TABLE3[("dg", "prompts", 9)] is None


def test_the_paper_column_gives_table_3_its_bounds_and_the_ablations_at_h10():
    assert table3.paper_error("grpo", "prompts", 10) == 50.4
    assert table3.paper_error("dg", "prompts", 9) == "> 95"  # Table 3's "-"
    for ablation in ("tpo_no_anchor", "group_pg", "grpo_no_kl"):  # section 3.5: all above 99%
        assert table3.paper_error(ablation, "interactions", 10) == "> 99"
    assert table3.paper_error("grpo_no_kl", "prompts", 9) == "> 95"
    assert table3.paper_error("tpo_no_anchor", "prompts", 8) == "n/a"  # no number reported
    assert table3.paper_error("tpo", "prompts", 6) == "n/a"
    assert [paper_bound(v) for v in (7.4, "> 95", "> 99")] == [7.4, 95.0, 99.0]
    rows = table3_rows([run("tpo_no_anchor", length=10), run("tpo_no_anchor", [1, 1], length=8)])
    assert [(r["H"], r["paper"]) for r in rows] == [(8, "n/a"), (10, "> 99")]
    off = table3_rows([run("tpo_no_anchor", length=10, episodes=300)])
    assert off[0]["paper"] == "n/a" and off[0]["off_protocol"] == ["episodes=300"]


def test_runs_of_different_configurations_are_separate_rows_that_say_how():
    runs = [
        run(errors=[0.5, 0.1]),
        run(errors=[0.5, 0.3], seed=1),
        run(errors=[0.5, 0.2], k=4),
        run(errors=[0.5, 0.4], lr=0.01),
        run(errors=[0.5, 0.6], task="copy", episodes=300),
    ]
    rows = table3_rows(runs)
    assert len(rows) == 4 and sum(r["seeds"] for r in rows) == 5
    settings = {frozenset(r["settings"].items()): r for r in rows}
    paper = settings[frozenset(dict(task="reverse_copy", k=8, episodes=2000, lr=1e-3).items())]
    assert paper["seeds"] == 2 and paper["ours"] == pytest.approx(20.0) and paper["paper"] == 6.9
    others = [r for r in rows if r is not paper]
    assert all(r["paper"] == "n/a" for r in others)  # not the paper's protocol
    assert sorted(tuple(r["off_protocol"]) for r in others) == [
        ("k=4",),
        ("lr=0.01",),
        ("task=copy", "episodes=300"),
    ]
    line = table3_line(others[0], "prompts")
    assert "tpo H=7 (" in line and "not its protocol" in line and "k=4" in table3_markdown(rows)
    with pytest.raises(ValueError, match="differ in task, k, episodes, lr"):
        final_errors(runs)  # refuses to pool: select first
    assert final_errors(select_runs(runs, k=8, lr=1e-3, task="reverse_copy")) == {
        ("tpo", m, 7): [0.1, 0.3] for m in ("prompts", "interactions")
    }


def write_copied_runs(folder, seed_of_copy: int):
    """Two seeds of one cell, and a copy of the first under another name (and seed)."""
    for seed, errors in ((0, [0.5, 0.1]), (1, [0.5, 0.3])):
        config = replace(run(seed=seed).config, episodes=len(errors))
        result = TrainResult(
            config, error=errors, grad_norm=[1.0, 0.5 + seed], all_fail=[0.0, 0.0], skipped=[0, 0]
        )
        write_run(folder / f"seed{seed}.json", result, {})
    data = json.loads((folder / "seed0.json").read_text())
    data["config"]["seed"] = seed_of_copy
    (folder / "copy.json").write_text(json.dumps(data))


@pytest.mark.parametrize("seed_of_copy", [0, 7], ids=["same seed", "seed edited"])
def test_a_copied_run_is_not_another_seed(tmp_path, seed_of_copy):
    write_copied_runs(tmp_path, seed_of_copy)
    runs = load_runs(tmp_path)
    with pytest.raises(ValueError, match="are one run"):
        table3_rows(runs)
    with pytest.raises(ValueError, match="are one run"):
        final_error_by(runs, "k", last=1)
    (tmp_path / "copy.json").unlink()
    assert table3_rows(load_runs(tmp_path))[0]["seeds"] == 2


def test_final_error_by_sweeps_one_setting_with_the_others_fixed():
    def run(method, errors, **settings):
        return TrainResult(
            TrainConfig(method=method, episodes=len(errors), **settings), error=errors
        )

    runs = [
        run("tpo", [0.4], k=4),
        run("tpo", [0.2], k=4, seed=1),
        run("tpo", [0.1], k=16),
        run("grpo", [0.5], k=4),
        run("tpo", [0.9], k=4, eta=2.0),  # another temperature: not part of the K sweep
        run("tpo", [0.3], epochs=1),
    ]
    sweep = final_error_by(runs, "k", last=1, eta=1.0, epochs=4)
    xs, means, ses = sweep["tpo"]
    assert xs == [4, 16] and means == pytest.approx([0.3, 0.1]) and ses[0] == pytest.approx(0.1)
    assert sweep["grpo"] == ([4], [0.5], [0.0])
    by_epochs = final_error_by(runs, "epochs", last=1, k=8)
    assert by_epochs["tpo"][0] == [1]


def test_final_error_by_keeps_configurations_apart():
    def run(match, errors, seed=0):
        config = TrainConfig(method="ppo", match=match, seed=seed, episodes=1)
        return TrainResult(config, error=errors)

    runs = [run("prompts", [0.2]), run("prompts", [0.4], 1), run("interactions", [0.9])]
    sweep = final_error_by(runs, "k", last=1)
    assert sweep["ppo (match=prompts)"][1] == pytest.approx([0.3])
    assert sweep["ppo (match=interactions)"][1] == pytest.approx([0.9])


def test_select_runs_and_learning_marks():
    short = TrainResult(
        TrainConfig(k=8),
        error=[0.9, 0.04, 0.2, 0.0],
        grad_norm=[1.0, 0.5, 0.1, 0.3],
        all_fail=[0.8, 0.0, 0.1, 0.0],
    )
    other = TrainResult(TrainConfig(k=4, epochs=1), error=[0.5])
    assert select_runs([short, other], k=8, epochs=4) == [short]  # tpo's default: 4
    assert select_runs([short, other], epochs=1) == [other]
    assert select_runs([short, other], epochs=None) == [short]  # method default


def test_learning_marks_count_steps_relapses_and_stuck_seeds():
    def run(seed, error, all_fail):
        return TrainResult(
            TrainConfig(seed=seed, episodes=len(error)), error=error, all_fail=all_fail
        )

    solved_then_back = [0.9] * 10 + [0.0] * 60 + [0.5] * 60  # solves, then stays at 50%
    never = [0.9] * 130
    clean = [0.9] * 5 + [0.0] * 125
    runs = [
        run(2, never, [0.9] * 130),
        run(0, solved_then_back, [0.0] * 70 + [0.45] * 60),  # stuck: 90% of its error all-fail
        run(1, clean, [0.0] * 130),
        run(3, clean, [0.0] * 130),
    ]
    runs[3] = TrainResult(TrainConfig(method="grpo", seed=3, episodes=130), error=clean)
    marks = learning_marks(runs, "tpo")
    assert marks.steps == [11, 6, 131]  # seeds 0, 1, 2; seed 2 never reaches 5%
    assert marks.reached == [6, 11] and marks.median == 11
    assert marks.solved == [0, 1] and marks.relapsed == [0] and marks.stuck == [0, 2]
    assert marks.finals == {0: 0.5, 1: 0.0, 2: 0.9}  # the last episode of each seed's curve
    assert marks.worst_unstuck == 0.0  # seed 1, the only one not stuck
    with pytest.raises(ValueError, match="no runs"):
        learning_marks(runs, "dg")


def summary(*args):
    command = [sys.executable, "-m", "tpo_core", "summary", *args]
    return subprocess.run(command, capture_output=True, text=True)


def test_cli_summary_prints_the_shipped_runs_next_to_the_paper(tmp_path):
    proc = summary("--preset", "table3")
    assert proc.returncode == 0, proc.stderr
    preset = PRESETS["table3"]
    runs = [
        r
        for name in shipped()
        for r in shipped_runs(name)
        if r.config.method in preset["methods"] and r.config.length in preset["lengths"]
    ]
    lines = proc.stdout.splitlines()
    assert all(table3_line(row, "prompts") in lines for row in table3_rows(runs))
    assert "paper 14.5" in proc.stdout and "grpo_per_token" not in proc.stdout  # not in Table 3
    empty = summary("--runs", str(tmp_path))
    assert empty.returncode == 2 and "no finished runs" in empty.stderr


def test_cli_summary_refuses_a_copied_run(tmp_path):
    write_copied_runs(tmp_path, 0)
    proc = summary("--runs", str(tmp_path))
    assert proc.returncode == 2 and "a copy is not another seed" in proc.stderr
    shutil.rmtree(tmp_path)
    missing = summary("--runs", str(tmp_path))
    assert missing.returncode == 2 and "no folder" in missing.stderr


def test_shipped_runs_name_is_checked():
    with pytest.raises(ValueError, match="no shipped results named"):
        shipped_runs("nope")


def test_stuck_means_the_remaining_error_sits_in_all_fail_groups():
    def run(error, all_fail):
        return TrainResult(TrainConfig(episodes=20), error=[error] * 20, all_fail=[all_fail] * 20)

    assert is_stuck(run(0.5, 0.5)) and is_stuck(run(0.5, 0.41))
    assert not is_stuck(run(0.5, 0.39))  # most mistakes share a group with a success
    assert not is_stuck(run(0.0, 0.0))  # solved
    assert not is_stuck(run(0.005, 0.005))  # below the floor: a stray prompt


def test_preset_settings_merge_and_name_every_conflict():
    settings = dict(methods=["tpo"], lengths=[7], episodes=200, batch=100, matches=["prompts"])
    merged = table3.preset_settings("table3", settings, {"methods", "batch"})
    assert merged["methods"] == ["tpo"] and merged["episodes"] == 2000 and merged["batch"] == 100
    with pytest.raises(ValueError, match=r"--lengths 6 .*--episodes 200"):
        table3.preset_settings("table3", settings | dict(lengths=[6]), {"episodes", "lengths"})
