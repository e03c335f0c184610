"""Token tasks engine: tasks and rewards, the transformer, rollouts, algorithms, loop, CLI."""

import json
import math
import subprocess
import sys

import pytest
import torch

import tpo_core as tc
from tpo_core import teaching as tt
from tpo_core.tokens.algorithms import ALGORITHMS, get_algorithm
from tpo_core.tokens.model import ModelConfig, TinyTransformer, make_optimizers
from tpo_core.tokens.rollouts import sequence_rollouts, token_rollouts
from tpo_core.tokens.tasks import correct_answers, token_rewards
from tpo_core.tokens.train import TrainConfig, steps_to, train


def tiny_model(vocab=3, length=4, seed=0):
    torch.manual_seed(seed)
    return TinyTransformer(ModelConfig(vocab=vocab, length=length))


# ---------------------------------------------------------------- tasks


def test_correct_answers_for_each_task():
    x = torch.tensor([[0, 1, 3, 2]])
    assert correct_answers("copy", x, 4).tolist() == [[0, 1, 3, 2]]
    assert correct_answers("flip", x, 4).tolist() == [[3, 2, 0, 1]]
    assert correct_answers("reverse_copy", x, 4).tolist() == [[2, 3, 1, 0]]
    assert correct_answers("reverse_flip", x, 4).tolist() == [[1, 0, 2, 3]]


def test_token_rewards():
    answers = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]])
    targets = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1]])
    assert token_rewards("bag", answers, targets).tolist() == [[1, 0, 1, 1], [1, 1, 1, 1]]
    assert token_rewards("sequential", answers, targets).tolist() == [[1, 0, 0, 0], [1, 1, 1, 1]]
    assert token_rewards("terminal", answers, targets).tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]


def test_task_names_are_checked():
    with pytest.raises(ValueError, match="unknown task"):
        correct_answers("sort", torch.zeros(1, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="unknown reward"):
        token_rewards("dense", torch.zeros(1, 2), torch.zeros(1, 2))


# ---------------------------------------------------------------- model


def test_seed_code_initialisation():
    model = TinyTransformer(ModelConfig(vocab=16, length=10))
    block = model.blocks[0]
    assert block.up.weight.std().item() == pytest.approx(1 / 8, rel=0.05)  # fan_in 64
    assert block.down.weight.std().item() == pytest.approx(1 / 16, rel=0.05)  # fan_in 256
    assert block.q.weight.std().item() == pytest.approx(1 / 8, rel=0.1)
    assert torch.equal(block.q.bias, torch.zeros(64)) and torch.equal(
        block.up.bias, torch.zeros(256)
    )
    assert model.position_table.std().item() == pytest.approx(0.02, rel=0.1)
    assert model.token_table.std().item() == pytest.approx(1 / 8, rel=0.2)
    assert torch.equal(block.ln1.weight, torch.ones(64)) and torch.equal(
        block.ln1.bias, torch.zeros(64)
    )


def test_attention_is_causal():
    model = tiny_model()
    tokens = torch.randint(3, (2, 7))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 3
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, :5], model(changed)[:, :5])
        assert not torch.allclose(model(tokens)[:, 5:], model(changed)[:, 5:])


def test_kv_cache_sampling_matches_teacher_forced_log_probs():
    model = tiny_model(vocab=5, length=6)
    prompts = torch.randint(5, (8, 6))
    answers, log_probs = model.sample(prompts, torch.Generator().manual_seed(0))
    assert answers.shape == (8, 6) and log_probs.shape == (8, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(
            model.answer_log_probs(prompts, answers), log_probs, atol=1e-5, rtol=1e-5
        )


def test_muon_gets_the_2d_tables_and_seed_code_scaling():
    model = TinyTransformer(ModelConfig(vocab=2, length=6))
    muon, adam = make_optimizers(model, lr=1e-3)
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    tables = [model.token_table, model.position_table, model.head.weight]
    ffn = [b.up.weight for b in model.blocks] + [b.down.weight for b in model.blocks]
    assert muon_ids == {id(p) for p in tables + ffn}  # embeddings, FFN matrices, head
    assert all(p.dim() == 2 for g in muon.param_groups for p in g["params"])
    block = model.blocks[0]
    adam_ids = {id(p) for g in adam.param_groups for p in g["params"]}
    assert {
        id(block.q.weight),
        id(block.o.weight),
        id(block.ln1.weight),
        id(block.up.bias),
    } <= adam_ids
    assert "weight_decay" not in muon.defaults and adam.param_groups[0]["weight_decay"] == 0.0
    # Muon scales by sqrt(max(1, shape[0] / shape[1])); the tables are stored (d, rows),
    # so that is sqrt(d / V) = sqrt(32) for the V = 2 token table and sqrt(64 / 12) for positions.
    assert model.token_table.shape == (64, 2) and model.position_table.shape == (64, 12)
    assert block.up.weight.shape == (256, 64)  # sqrt(4) = 2, as the seed code's (64, 256) kernel


# ---------------------------------------------------------------- rollouts


def test_sequence_rollouts_shapes_and_scores():
    model = tiny_model()
    batch = sequence_rollouts(model, "copy", "bag", 5, 3, torch.Generator().manual_seed(0))
    assert batch.answers.shape == (5, 3, 4) and batch.old_log_probs.shape == (5, 3, 4)
    targets = batch.prompts[:, None, :].expand(-1, 3, -1)
    torch.testing.assert_close(batch.rewards, (batch.answers == targets).float())
    torch.testing.assert_close(batch.scores, batch.rewards.mean(-1))
    with torch.no_grad():
        torch.testing.assert_close(
            batch.new_log_probs(model), batch.old_log_probs, atol=1e-5, rtol=1e-5
        )


def test_token_rollouts_candidates_and_sequential_rewards():
    model = tiny_model(vocab=2, length=5)
    batch = token_rollouts(
        model, "reverse_copy", "sequential", 6, 4, torch.Generator().manual_seed(1)
    )
    assert torch.equal(batch.candidates[..., 0], batch.answers)
    targets = batch.prompts.flip(-1)
    alive = torch.cat([torch.ones(6, 1), (batch.answers == targets).float().cumprod(-1)[:, :-1]], 1)
    expected = (batch.candidates == targets[..., None]).float() * alive[..., None]
    torch.testing.assert_close(batch.rewards, expected)
    torch.testing.assert_close(batch.rewards[..., 0], batch.behaviour_rewards)
    with torch.no_grad():
        torch.testing.assert_close(
            batch.new_log_probs(model), batch.old_log_probs, atol=1e-5, rtol=1e-5
        )
    with pytest.raises(ValueError, match="terminal"):
        token_rollouts(model, "copy", "terminal", 2, 4, torch.Generator())


# ---------------------------------------------------------------- algorithms


def test_every_algorithm_gives_a_finite_loss_with_gradients():
    for name, method in ALGORITHMS.items():
        model = tiny_model(vocab=2, length=3)
        g = torch.Generator().manual_seed(0)
        if method.rollout == "token":
            batch = token_rollouts(model, "copy", "bag", 4, 3, g)
        else:
            batch = sequence_rollouts(
                model, "copy", "bag", 4, 1 if method.rollout == "single" else 3, g
            )
        loss = method.loss(model, batch)
        loss.backward()
        assert torch.isfinite(loss), name
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), name


def test_tpo_all_fail_group_gives_exactly_zero_gradient_on_the_snapshot():
    model = tiny_model(vocab=2, length=3)
    batch = sequence_rollouts(model, "copy", "terminal", 3, 4, torch.Generator().manual_seed(0))
    failed = type(batch)(
        batch.prompts, batch.answers, batch.old_log_probs, torch.zeros_like(batch.rewards)
    )
    seq = failed.new_log_probs(model).sum(-1)
    q = tc.tpo_target(failed.old_log_probs.sum(-1), failed.scores)
    (grad,) = torch.autograd.grad(tc.tpo_loss(seq, q), seq)
    assert grad.abs().max() < 1e-6  # u = 0 -> q = p_old -> p - q = 0 on the snapshot


def test_tpo_sequence_loss_gradient_is_p_minus_q_over_groups():
    model = tiny_model(vocab=2, length=3)
    batch = sequence_rollouts(model, "copy", "bag", 3, 4, torch.Generator().manual_seed(2))
    seq = batch.new_log_probs(model).sum(-1)
    q = tc.tpo_target(batch.old_log_probs.sum(-1), batch.scores)
    (grad,) = torch.autograd.grad(tc.tpo_loss(seq, q), seq)
    torch.testing.assert_close(
        grad, (torch.softmax(seq.detach(), -1) - q) / 3, atol=1e-6, rtol=1e-5
    )


def test_algorithm_names_and_epochs():
    assert get_algorithm("dg").epochs == 1 and get_algorithm("tpo").epochs == 4
    with pytest.raises(ValueError, match="unknown method"):
        get_algorithm("sac")


# ---------------------------------------------------------------- loop


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(method="tpo_token", reward="terminal"), "token-level"),
        (dict(method="grpo", k=1), "k must be >= 2"),
        (dict(method="nope"), "unknown method"),
        (dict(task="sort"), "unknown task"),
        (dict(match="tokens"), "match"),
        (dict(episodes=0), "episodes"),
        (dict(lr=0.0), "lr"),
    ],
)
def test_impossible_configs_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_interaction_matching_scales_single_sample_methods():
    run = TrainConfig(method="ppo", batch=10, k=8, lr=1e-3, match="interactions").resolved
    assert (run.batch, run.k, run.lr, run.epochs) == (80, 1, pytest.approx(1e-3 * math.sqrt(8)), 4)
    assert TrainConfig(method="tpo", match="interactions").resolved.batch == 100


def test_steps_to():
    assert steps_to([0.5, 0.2, 0.009, 0.3], 0.01) == 3 and steps_to([0.5], 0.01) is None


def test_training_is_reproducible_and_records_curves():
    cfg = TrainConfig(
        task="copy", reward="bag", method="tpo_token", length=3, vocab=2, batch=8, episodes=3
    )
    a, b = train(cfg, progress=False), train(cfg, progress=False)
    assert a.error == b.error and a.grad_norm == b.grad_norm
    assert len(a.error) == len(a.grad_norm) == len(a.all_fail) == 3


def test_short_run_learns_reverse_copy():
    """A broken loss or optimiser cannot pass: TPO_token must solve a small dense task."""
    cfg = TrainConfig(
        task="reverse_copy", reward="bag", method="tpo_token", length=4, vocab=2, episodes=60
    )
    result = train(cfg, progress=False)
    assert result.error[0] > 0.3
    assert result.final_error(10) < 0.02


# ---------------------------------------------------------------- CLI


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tpo_core", *args], capture_output=True, text=True)


def test_cli_writes_results_json(tmp_path):
    out = tmp_path / "run.json"
    settings = "--task copy --reward bag --method tpo --length 3 --vocab 2 --batch 4 --k 3"
    proc = run_cli(
        "train", *settings.split(), "--episodes", "3", "--seed", "1", "--out", str(out), "--quiet"
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert len(data["error"]) == 3 and len(data["grad_norm"]) == 3
    assert data["config"]["method"] == "tpo" and data["config"]["seed"] == 1
    assert data["seconds_per_episode"] > 0 and data["provenance"]["command"].startswith(
        "python -m tpo_core"
    )
    assert data["skipped"] == [0, 0, 0] and "groups" not in data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "tpo_token", "--reward", "terminal"], "token-level"),
        (["--method", "grpo", "--k", "1"], "k must be >= 2"),
        (["--method", "sac"], "invalid choice"),
        (["--lr", "inf"], "lr must be in"),
        (["--layernorm-eps", "-1"], "layernorm_eps must be a positive finite number"),
        (["--method", "pg", "--k", "0"], "k must be at least 1"),
    ],
)
def test_cli_rejects_bad_settings_with_one_line(tmp_path, args, message):
    proc = run_cli("train", *args, "--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_shared_prompt_log_probs_equal_full_teacher_forcing():
    model = tiny_model(vocab=3, length=5)
    prompts = torch.randint(3, (4, 5))
    answers = torch.randint(3, (4 * 3, 5))  # three answers per prompt
    full = torch.cat([prompts.repeat_interleave(3, 0), answers[:, :-1]], 1)
    reference = torch.log_softmax(model(full)[:, 4:], -1)
    torch.testing.assert_close(
        model.answer_log_probs(prompts, answers), reference, atol=1e-5, rtol=1e-5
    )
    # Gradients flow through the shared prompt states too.
    model.answer_log_probs(prompts, answers).sum().backward()
    assert model.position_table.grad[:, :5].abs().sum() > 0


# ---------------------------------------------------------------- notebook 04 widgets


def test_live_curves_fill_in_during_training():
    live = tt.LiveCurves(["tpo_token seed 0"], every=2)
    cfg = TrainConfig(
        task="copy", reward="bag", method="tpo_token", length=3, vocab=2, batch=8, episodes=5
    )
    result = train(cfg, callback=live.callback("tpo_token seed 0"), progress=False)
    trace = live.figure.data[0]
    assert list(trace.y) == result.error and list(trace.x) == [1, 2, 3, 4, 5]


def test_token_state_explorer_shows_the_state_group():
    model = tiny_model(vocab=2, length=4)
    batch = token_rollouts(model, "copy", "bag", 3, 5, torch.Generator().manual_seed(0))
    ex = tt.TokenStateExplorer(batch)
    start = batch.rewards[ex.prompt_slider.value, ex.position_slider.value]
    assert start.max() != start.min() or (batch.rewards.amax(-1) == batch.rewards.amin(-1)).all()
    ex.prompt_slider.value, ex.position_slider.value = 2, 3
    old, rewards = batch.old_log_probs[2, 3], batch.rewards[2, 3]
    by_name = {t.name: list(t.y) for t in ex.figure.data}
    assert by_name["q"] == pytest.approx(tc.tpo_target(old, rewards).tolist())
    assert by_name["p_old"] == pytest.approx(torch.softmax(old, -1).tolist())
    assert by_name["GRPO advantage"] == pytest.approx(tc.grpo_advantages(rewards).tolist())
    assert by_name["reward"] == rewards.tolist()
    assert "position 3" in ex.figure.layout.title.text


def test_notebook_04_exercises():
    check = tt.check
    assert check("04-state-u", math.sqrt(3)).correct and not check("04-state-u", 1.0).correct
    assert check("04-dead-state", "p_old").correct and not check("04-dead-state", "uniform").correct


def test_mean_error_curves_group_runs_by_method():
    from tpo_core.tokens.train import TrainResult, mean_error_curves

    runs = [
        TrainResult(TrainConfig(method="tpo", seed=0), error=[0.5, 0.1]),
        TrainResult(TrainConfig(method="tpo", seed=1), error=[0.3, 0.3]),
        TrainResult(TrainConfig(method="dg"), error=[0.9, 0.8]),
    ]
    curves = mean_error_curves(runs)
    x, mean, se = curves["tpo"]
    assert x == [1, 2] and mean == pytest.approx([0.4, 0.2])
    assert se == pytest.approx([math.sqrt(0.02) / math.sqrt(2), math.sqrt(0.02) / math.sqrt(2)])
    assert curves["dg"][2] == [0.0, 0.0]
