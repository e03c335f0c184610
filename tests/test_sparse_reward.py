"""Sparse terminal reward: masked GRPO, group diagnostics, TPO's temperature, run grids."""

import json
import math
import subprocess
import sys

import pytest
import torch

import tpo_core as tc
from tpo_core.tokens import experiments
from tpo_core.tokens.algorithms import grpo, grpo_masked, grpo_per_token, informative_groups, tpo
from tpo_core.tokens.rollouts import SequenceBatch
from tpo_core.tokens.train import TrainConfig, TrainResult, group_diagnostics, train


class FixedBatch(SequenceBatch):
    """A hand-built batch whose 'current policy' is a given leaf tensor, not a model."""

    def new_log_probs(self, model):
        return model


def hand_batch(success, seq_probs, h=2, new_shift=0.0):
    """Groups of K answers of length h; ``success`` (B, K) 0/1, ``seq_probs`` (B, K) p_old(y)."""
    success = torch.tensor(success, dtype=torch.float32)
    b, k = success.shape
    seq = torch.tensor(seq_probs, dtype=torch.float64).log()
    old = (seq / h)[..., None].expand(b, k, h).float()  # tokens share the sequence log-prob
    rewards = success[..., None].expand(b, k, h).clone()
    answers = torch.zeros(b, k, h, dtype=torch.long)
    batch = FixedBatch(torch.zeros(b, h, dtype=torch.long), answers, old, rewards)
    leaf = (old + new_shift * torch.linspace(-1, 1, b * k * h).view(b, k, h)).requires_grad_()
    return batch, leaf


# ---------------------------------------------------------------- diagnostics


def test_group_diagnostics_match_the_closed_form():
    p = [0.4, 0.3, 0.2, 0.1]
    batch, _ = hand_batch([[1, 0, 0, 0], [0, 0, 0, 0]], [p, p])
    d = group_diagnostics(batch)
    # Only group 0 is informative. u = (r - 1/4) / sqrt(3/16): sqrt(3) for the success.
    u_win, u_lose = math.sqrt(3), -1 / math.sqrt(3)
    q_win = 0.4 * math.exp(u_win) / (0.4 * math.exp(u_win) + 0.6 * math.exp(u_lose))
    assert d["p_success"] == pytest.approx(0.4, rel=1e-5)
    assert d["q_success"] == pytest.approx(q_win, rel=1e-5)
    assert d["adv_success"] == pytest.approx(u_win, rel=1e-5)
    assert d["adv_failure"] == pytest.approx(-u_lose, rel=1e-5)
    # A colder target moves more mass onto the success.
    assert group_diagnostics(batch, eta=0.5)["q_success"] > d["q_success"]


def test_group_diagnostics_are_nan_without_an_informative_group():
    batch, _ = hand_batch([[0, 0, 0], [1, 1, 1]], [[0.5, 0.3, 0.2]] * 2)
    assert all(math.isnan(v) for v in group_diagnostics(batch).values())


def test_all_fail_group_contributes_exactly_zero_tpo_gradient_on_the_first_epoch():
    p = [0.4, 0.3, 0.2, 0.1]
    batch, leaf = hand_batch([[0, 1, 0, 0], [0, 0, 0, 0]], [p, p])  # leaf == old: first epoch
    (grad,) = torch.autograd.grad(tpo(leaf, batch), leaf)
    # u = 0 -> q = p_old = p: zero in exact arithmetic, float32 rounding (~1e-8) here.
    assert grad[1].abs().max() < 1e-7
    assert grad[0].abs().max() > 1e-3


# ---------------------------------------------------------------- GRPO on whole answers


def test_grpo_first_epoch_gradient_is_minus_the_advantage_on_every_token():
    # On the snapshot rho = 1 and the KL has zero gradient: d loss / d l_t = -A_i / (B K)
    # for every token of answer i (per token: -A_i / (B K H), the same direction).
    success = [[1, 0, 0, 1], [0, 1, 0, 0]]
    batch, leaf = hand_batch(success, [[0.4, 0.3, 0.2, 0.1]] * 2, h=3)
    a = tc.grpo_advantages(torch.tensor(success, dtype=torch.float32))[..., None].expand(2, 4, 3)
    (whole,) = torch.autograd.grad(grpo(leaf, batch), leaf)
    torch.testing.assert_close(whole, -a / 8)
    (per_token,) = torch.autograd.grad(grpo_per_token(leaf, batch), leaf)
    torch.testing.assert_close(per_token, -a / 24)


def test_grpo_clips_the_answer_ratio_where_per_token_grpo_clips_each_token():
    # Every token 10% more likely than in the snapshot: each token's ratio 1.1 lies
    # inside [0.8, 1.2], the answer's 1.1^3 = 1.33 does not.
    batch, _ = hand_batch([[1, 0]], [[0.5, 0.5]], h=3)
    leaf = (batch.old_log_probs + math.log(1.1)).requires_grad_()
    (whole,) = torch.autograd.grad(grpo(leaf, batch), leaf)
    (per_token,) = torch.autograd.grad(grpo_per_token(leaf, batch), leaf)
    kl_only = 0.04 * (1 - 1.1**-3) / 2  # d k3 / d l at the answer's ratio, mean over 2 answers
    torch.testing.assert_close(whole[0, 0], torch.full((3,), kl_only))  # surrogate clipped
    assert (per_token[0, 0] < 0).all()  # still pushed up


# ---------------------------------------------------------------- masked GRPO


def test_informative_groups():
    scores = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert informative_groups(scores).tolist() == [True, False, False]


def test_masked_grpo_zeros_exactly_the_zero_variance_groups():
    p = [0.4, 0.3, 0.2, 0.1]
    success = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
    batch, leaf = hand_batch(success, [p, p, p], new_shift=0.05)  # a later epoch: KL is nonzero
    (masked,) = torch.autograd.grad(grpo_masked(leaf, batch), leaf)
    assert torch.equal(masked[1:], torch.zeros_like(masked[1:]))
    # The informative group gets GRPO's gradient as if it were the whole batch.
    alone = tc.grpo_loss(
        leaf[:1].sum(-1), batch.old_log_probs[:1].sum(-1), tc.grpo_advantages(batch.scores[:1])
    )
    (expected,) = torch.autograd.grad(alone, leaf)
    torch.testing.assert_close(masked, expected)
    # Plain GRPO still pulls on the flat groups through its KL term.
    (plain,) = torch.autograd.grad(grpo(leaf, batch), leaf)
    assert plain[1:].abs().max() > 0


def test_masked_grpo_with_no_informative_group_is_a_zero_loss_with_a_graph():
    batch, leaf = hand_batch([[0, 0], [1, 1]], [[0.5, 0.5]] * 2)
    loss = grpo_masked(leaf, batch)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(leaf.grad, torch.zeros_like(leaf))


# ---------------------------------------------------------------- training with diagnostics


def test_training_records_diagnostics_per_episode():
    cfg = TrainConfig(algo="grpo_masked", length=3, batch=16, k=4, episodes=3)
    result = train(cfg, progress=False)
    assert set(result.groups) == {"p_success", "q_success", "adv_success", "adv_failure"}
    assert all(len(v) == 3 for v in result.groups.values())
    assert len(result.to_dict()["groups"]["q_success"]) == 3


def test_eta_is_validated_and_reaches_the_tpo_target():
    with pytest.raises(ValueError, match="eta must be a positive"):
        TrainConfig(eta=0.0).validate()
    with pytest.raises(ValueError, match="no temperature"):
        TrainConfig(algo="grpo", eta=0.5).validate()
    cold = TrainConfig(length=3, batch=16, k=4, episodes=2, eta=0.25)
    warm = TrainConfig(length=3, batch=16, k=4, episodes=2, eta=4.0)
    # Same seed, same first batch: only the temperature differs, so the first gradient does.
    assert train(cold, progress=False).grad_norm[0] != train(warm, progress=False).grad_norm[0]


# ---------------------------------------------------------------- grids


def small_grid(**changes):
    settings = dict(algos=["tpo", "ppo"], lengths=[3], seeds=[0, 1], batch=4, k=3, episodes=2)
    return experiments.grid_configs(**(settings | changes))


def test_grid_configs_share_grouped_runs_across_matchings():
    configs = small_grid(matches=["prompts", "interactions"])
    names = [experiments.run_name(c) for c in configs]
    assert len(configs) == 6  # tpo x 2 seeds once, ppo x 2 seeds x 2 matchings
    assert len(set(names)) == 6 and sum("interactions" in n for n in names) == 2


def test_grid_rejects_impossible_settings():
    with pytest.raises(ValueError, match="unknown algorithm"):
        small_grid(algos=["tpo", "sac"])


def test_run_grid_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    configs = small_grid()
    paths = experiments.run_grid(configs, tmp_path, progress=False)
    assert all(experiments.is_complete(p, c) for p, c in zip(paths, configs, strict=True))
    data = json.loads(paths[0].read_text())
    assert data["provenance"]["wall_seconds"] >= 0 and "git_commit" in data["provenance"]

    # A crash mid-write leaves a temporary file and a truncated one: neither counts as done.
    paths[1].write_text(paths[1].read_text()[:50])
    (tmp_path / f".{paths[2].name}.123.tmp").write_text("{")
    paths[3].unlink()
    calls = []
    real_train = experiments.train
    monkeypatch.setattr(
        experiments, "train", lambda c, **kw: calls.append(c) or real_train(c, **kw)
    )
    experiments.run_grid(configs, tmp_path, progress=False)
    assert calls == [configs[1], configs[3]]
    assert len(experiments.load_runs(tmp_path)) == 4


def test_run_with_other_settings_is_not_taken_for_finished(tmp_path):
    config = small_grid()[0]
    path = experiments.run_grid([config], tmp_path, progress=False)[0]
    longer = TrainConfig(**{**config.__dict__, "episodes": 3})
    assert experiments.is_complete(path, config) and not experiments.is_complete(path, longer)


def test_final_errors_and_table3_rows():
    def run(algo, seed, errors, match="prompts"):
        c = TrainConfig(algo=algo, length=7, seed=seed, match=match, episodes=len(errors))
        return TrainResult(c, error=errors)

    runs = [run("tpo", 0, [0.9, 0.1]), run("tpo", 1, [0.9, 0.3]), run("dg", 0, [0.5, 0.5])]
    finals = experiments.final_errors(runs)  # the paper's metric: the last episode
    assert finals[("tpo", "prompts", 7)] == [0.1, 0.3]
    assert finals[("tpo", "interactions", 7)] == [0.1, 0.3]  # grouped: both matchings
    assert ("dg", "interactions", 7) not in finals
    assert experiments.final_errors(runs, last=2)[("tpo", "prompts", 7)] == [0.5, 0.6]
    rows = {r["method"]: r for r in experiments.table3_rows(runs)}
    assert rows["tpo"]["ours"] == pytest.approx(20.0)  # (0.1 + 0.3) / 2
    assert rows["tpo"]["ci"] == pytest.approx((10.0, 30.0))  # resamples of two seeds
    assert rows["tpo"]["last20"] == pytest.approx(55.0)  # means 0.5 and 0.6
    assert rows["tpo"]["last20_se"] == pytest.approx(100 * 0.05)  # std 0.0707 / sqrt(2)
    assert rows["tpo"]["paper"] == 6.9 and rows["dg"]["paper"] == 33.8
    assert experiments.PAPER_TABLE3[("grpo", "interactions", 10)] == 48.7
    assert experiments.PAPER_TABLE3[("dg", "prompts", 9)] is None


def test_final_error_by_sweeps_one_setting_with_the_others_fixed():
    def run(algo, errors, **settings):
        return TrainResult(TrainConfig(algo=algo, episodes=len(errors), **settings), error=errors)

    runs = [
        run("tpo", [0.4], k=4),
        run("tpo", [0.2], k=4, seed=1),
        run("tpo", [0.1], k=16),
        run("grpo", [0.5], k=4),
        run("tpo", [0.9], k=4, eta=2.0),  # another temperature: not part of the K sweep
        run("tpo", [0.3], epochs=1),
    ]
    sweep = experiments.final_error_by(runs, "k", last=1, eta=1.0, epochs=4)
    xs, means, ses = sweep["tpo"]
    assert xs == [4, 16] and means == pytest.approx([0.3, 0.1]) and ses[0] == pytest.approx(0.1)
    assert sweep["grpo"] == ([4], [0.5], [0.0])
    by_epochs = experiments.final_error_by(runs, "epochs", last=1, k=8)
    assert by_epochs["tpo"][0] == [1]


def test_select_runs_and_after_solving():
    short = TrainResult(
        TrainConfig(k=8),
        error=[0.9, 0.04, 0.2, 0.0],
        grad_norm=[1.0, 0.5, 0.1, 0.3],
        all_fail=[0.8, 0.0, 0.1, 0.0],
    )
    other = TrainResult(TrainConfig(k=4, epochs=1), error=[0.5])
    assert experiments.select_runs([short, other], k=8, epochs=4) == [short]  # tpo's default: 4
    assert experiments.select_runs([short, other], epochs=1) == [other]
    assert experiments.select_runs([short, other], epochs=None) == [short]  # method default
    summary = experiments.after_solving(short, solved=0.05, late=1, settled=1, last=2)
    # first error <= 5% at episode 2; median of grads [0.5, 0.1, 0.3];
    # one of [0.04, 0.2, 0.0] above 10%;
    # last two episodes: error (0.2 + 0) / 2, all-fail (0.1 + 0) / 2
    assert summary == pytest.approx(
        dict(
            steps_to_solved=2,
            late_grad_median=0.3,
            collapses=1,
            final_error=0.1,
            final_all_fail=0.05,
        )
    )


def test_loaded_runs_are_train_results(tmp_path):
    path = experiments.run_grid(small_grid()[:1], tmp_path, progress=False)[0]
    (run,) = experiments.load_runs(tmp_path)
    assert run.config == small_grid()[0] and len(run.error) == 2
    assert run.provenance["command"].startswith("python -m tpo_core") and path.exists()


def test_write_json_atomic_leaves_no_temporary_file(tmp_path):
    experiments.write_json_atomic(tmp_path / "a" / "r.json", {"x": 1 / 3, "y": [2 / 3]})
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == {"x": 0.333333, "y": [0.666667]}


def test_cli_grid_runs_and_summarises(tmp_path):
    args = "--algos tpo --lengths 3 --seeds 0 --batch 4 --k 3 --episodes 2 --quiet"
    proc = subprocess.run(
        [sys.executable, "-m", "tpo_core", "grid", *args.split(), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tpo H=3" in proc.stdout and len(list(tmp_path.glob("*.json"))) == 1
    bad = subprocess.run(
        [sys.executable, "-m", "tpo_core", "grid", "--algos", "dg", "--eta", "2", "--out", "x"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no temperature" in bad.stderr


def test_cli_summary_prints_the_shipped_runs_next_to_the_paper(tmp_path):
    def summary(*args):
        return subprocess.run([sys.executable, "-m", "tpo_core", "summary", *args],
                              capture_output=True, text=True)  # fmt: skip

    proc = summary("--preset", "table3")
    assert proc.returncode == 0, proc.stderr
    runs = [r for r in experiments.shipped_runs("sparse_h7") if r.config.algo == "tpo"]
    row = experiments.table3_rows(runs)[0]
    assert experiments.table3_line(row, "prompts") in proc.stdout.splitlines()
    assert "paper 14.5" in proc.stdout and "grpo_per_token" not in proc.stdout  # not in Table 3
    empty = summary("--runs", str(tmp_path))
    assert empty.returncode == 2 and "no finished runs" in empty.stderr


# ---------------------------------------------------------------- notebook 05 pieces


def test_chance_of_a_success_matches_simulation():
    from tpo_core.tokens.tasks import chance_of_a_success

    g = torch.Generator().manual_seed(0)
    h, v, k, n = 4, 2, 8, 20000
    answers = torch.randint(0, v, (n, k, h), generator=g)
    targets = torch.randint(0, v, (n, 1, h), generator=g)
    simulated = (answers == targets).all(-1).any(-1).float().mean().item()
    assert simulated == pytest.approx(chance_of_a_success(h, v, k), abs=0.01)


def test_notebook_05_exercises():
    from tpo_core.teaching.exercises import check

    assert check("05-one-success-mass", 0.746).correct
    assert not check("05-one-success-mass", 1 / 8).correct
    assert check("05-masked-step", 10).correct and not check("05-masked-step", 0.1).correct


def test_sparse_figures_plot_the_runs_they_are_given():
    from tpo_core.teaching import viz

    cfg = TrainConfig(algo="tpo", length=3, batch=16, k=4, episodes=4)
    run = train(cfg, progress=False)
    fig = viz.mechanism_figure({"TPO": run}, window=1)
    assert list(fig.data[0].y) == pytest.approx(run.grad_norm)
    assert list(fig.data[1].y) == pytest.approx(run.all_fail)
    weights = viz.success_weight_figure(run, window=1)
    assert [t.name for t in weights.data] == ["p_old", "q", "|A| success", "|A| failure"]
    q = [v for v in run.groups["q_success"] if v == v]
    assert [v for v in weights.data[1].y if v == v] == pytest.approx(q)
    assert viz.moving_average([1.0, math.nan, 3.0, 5.0], 2) == [1.0, 1.0, 3.0, 4.0]
    sweep = viz.sweep_figure({"tpo": ([4, 8], [0.2, 0.1], [0.01, 0.02])}, "K", log_x=True)
    assert list(sweep.data[0].y) == [0.2, 0.1]
    common = dict(seeds=3, episodes=[1000], last20=6.0, last20_se=1.0, stuck=1 / 3)
    rows = [
        dict(method="tpo", H=7, ours=5.0, ci=(2.0, 9.0), paper=6.9, **common),
        dict(method="dg", H=9, ours=99.0, ci=(98.5, 99.5), paper="> 95", **common),
    ]
    table = viz.table3_figure(rows)
    assert list(table.data[0].y) == [5.0, 99.0] and list(table.data[1].y) == [6.9, 95.0]
    assert list(table.data[0].error_y.array) == [4.0, 0.5]  # up to the interval's top
    assert list(table.data[0].error_y.arrayminus) == [3.0, 0.5]
    line = "| tpo | 7 | 3 | 1000 | 5.0 [2.0, 9.0] | 6.0 ± 1.0 | 1 of 3 | 6.9 |"
    assert line in experiments.table3_markdown(rows)
    assert "paper 6.9" in experiments.table3_line(rows[0], "prompts")


def test_shipped_runs_name_is_checked():
    with pytest.raises(ValueError, match="no shipped results named"):
        experiments.shipped_runs("nope")


@pytest.mark.parametrize("per_token", [False, True])
def test_grpo_kl_pull_benchmark_trains_exactly_like_grpo(per_token):
    args = ["--length", "3", "--episodes", "3", "--every", "1"] + (
        ["--per-token"] if per_token else []
    )
    out = subprocess.run(
        [sys.executable, "benchmarks/grpo_kl_pull.py", *args],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    printed = [float(line.split("error")[1].split()[0]) for line in out.splitlines()[1:]]
    algo = "grpo_per_token" if per_token else "grpo"
    expected = train(TrainConfig(algo=algo, length=3, episodes=3), progress=False).error
    assert printed == pytest.approx(expected, abs=5e-4)
    assert "|" in out.splitlines()[1]  # per-epoch gradient figures follow


def test_stuck_means_the_remaining_error_sits_in_all_fail_groups():
    def run(error, all_fail):
        return TrainResult(TrainConfig(episodes=20), error=[error] * 20, all_fail=[all_fail] * 20)

    assert experiments.is_stuck(run(0.5, 0.5)) and experiments.is_stuck(run(0.5, 0.41))
    assert not experiments.is_stuck(run(0.5, 0.39))  # most mistakes share a group with a success
    assert not experiments.is_stuck(run(0.0, 0.0))  # solved
    assert not experiments.is_stuck(run(0.005, 0.005))  # below the floor: a stray prompt
