"""What notebooks 06 and 07 call beyond the loop: one step of each loss on the same batch, the
memory table as text, and a run resumed after an interruption (the GPU settings' default)."""

import math
from dataclasses import asdict, replace

import pytest
import torch

import tpo_core as tc
from tpo_core import llm
from tpo_core.llm import RLVRConfig, verifiers
from tpo_core.llm.scale import COMPARISON

pytest.importorskip("transformers")


def config_for(path, **changes):
    settings = dict(
        model=str(path),
        task="sums",
        k=4,
        prompts_per_step=3,
        steps=2,
        lr=1e-3,
        max_new_tokens=3,
        chat_template=False,
        device="cpu",
    )
    return RLVRConfig(**(settings | changes))


@pytest.fixture(scope="module")
def batch(tiny_model):
    """A batch sampled by the starting model, with completions of unequal lengths."""
    config = config_for(tiny_model)
    torch.manual_seed(0)
    tokenizer, model = llm.load_policy(config)
    problems = verifiers.make_problems("sums", config.prompts_per_step, seed=1)
    return model, llm.sample_rollout(model, tokenizer, problems, config, seed=3)


# ---------------------------------------------------------------- one step of each loss


@pytest.mark.parametrize("loss", llm.LLM_METHODS)
def test_first_step_is_the_losss_gradient_and_adams_first_step(tiny_model, batch, loss):
    model, rollout = batch
    config = config_for(tiny_model, method=loss, beta=0.0, max_grad_norm=0.5)
    check_first_step(model, rollout, config)


def test_first_step_with_lora_moves_only_the_adapters(tiny_model):
    """The GPU sizes train LoRA adapters: only they have a gradient and a step."""
    config = config_for(tiny_model, lora_rank=4, beta=1e-3)  # the KL is left out of the step
    torch.manual_seed(0)
    tokenizer, model = llm.load_policy(config)
    problems = verifiers.make_problems("sums", config.prompts_per_step, seed=2)
    rollout = llm.sample_rollout(model, tokenizer, problems, config, seed=4)
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora" in name for name in trained)
    check_first_step(model, rollout, replace(config, beta=0.0))
    assert llm.first_step(model, rollout, config) == llm.first_step(
        model, rollout, replace(config, beta=0.0)
    )


def check_first_step(model, rollout, config):
    before = [p.detach().clone() for p in model.parameters()]
    step = llm.first_step(model, rollout, config)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # the gradient by autograd, at the snapshot (old = new)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = slice(0, len(rollout.completions))
    new = llm.token_log_probs(model, rollout, rows, config.temperature)  # (G*K, T)
    loss_value = llm.rlvr_loss(config, new, new.detach(), rollout.rewards, rollout.completion_mask)
    grads = torch.autograd.grad(loss_value, params)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    assert step["grad_norm"] == pytest.approx(norm, rel=1e-5)
    # AdamW's first step from fresh moments: lr g / (|g| + eps) on the clipped gradient
    clip = min(1.0, config.max_grad_norm / (norm + 1e-6))
    moved = sum(float((g * clip / ((g * clip).abs() + 1e-8)).pow(2).sum()) for g in grads)
    assert step["step"] == pytest.approx(config.lr * math.sqrt(moved), rel=1e-4)


def test_per_token_gradients_are_tpos_p_minus_q_over_groups_and_grpos_advantage_over_tokens():
    """Notebook 06's derivation: at the snapshot every token of completion i gets TPO's
    gradient (p_i - q_i) / G, and GRPO's -A_i / N with N the batch's completion tokens."""
    g, k, t = 2, 4, 5
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(g * k, t, generator=gen, dtype=torch.float64)
    mask = torch.arange(t) < torch.tensor([5, 3, 4, 1, 2, 5, 5, 3]).view(-1, 1)  # (G*K, T)
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.float64)
    seq = tc.sequence_log_probs(old, mask).view(g, k)
    p, q = torch.softmax(seq, -1), tc.tpo_target(seq, rewards)
    advantages = tc.grpo_advantages(rewards)
    for loss, per_completion in (
        ("tpo", (p - q) / g),
        ("grpo_per_token", -advantages / mask.sum()),
    ):
        new = old.clone().requires_grad_()
        config = RLVRConfig(model="m", k=k, method=loss)
        (grad,) = torch.autograd.grad(llm.rlvr_loss(config, new, old, rewards, mask), new)
        expected = per_completion.reshape(g * k, 1).expand(-1, t) * mask  # (G*K, T)
        torch.testing.assert_close(grad, expected)


# ---------------------------------------------------------------- the memory table as text


def test_memory_line_states_the_rows_numbers():
    for session in (False, True):
        for row in llm.memory_table(session):
            line = llm.memory_line(row)
            assert line.split()[0] == row["card"] and f"{row['training_gib']:.1f}" in line
            assert f"{row['minutes_comparison']} for all {row['runs']}" in line
            assert "fits" in line and "NOT" not in line
    row = llm.memory_table()[0] | dict(fits=False)
    assert "does NOT fit" in llm.memory_line(row)
    assert llm.memory_table(session=True)[0]["runs"] == 2 and llm.memory_table()[0]["runs"] == 4


# ---------------------------------------------------------------- resuming after a disconnect


def test_a_resumed_run_draws_its_checkpointed_steps_before_going_on(tiny_model, tmp_path):
    folder = str(tmp_path / "ckpt")
    first = config_for(tiny_model, steps=2, checkpoint_dir=folder, checkpoint_every=1)
    done = llm.rlvr_train(first, progress=False, resume=True)  # nothing to resume yet
    calls = []
    later = config_for(tiny_model, steps=3, checkpoint_dir=folder, checkpoint_every=1)
    resumed = llm.rlvr_train(
        later, callback=lambda step, r: calls.append((step, len(r.history["reward"]))), resume=True
    )
    assert calls == [(1, 2), (2, 3)]  # the two saved steps at once, then the third
    assert resumed.history["reward"][:2] == pytest.approx(done.history["reward"])
    calls.clear()
    finished = llm.rlvr_train(later, callback=lambda s, r: calls.append(s), resume=True)
    assert calls == [2] and finished.last_rollout is None  # nothing left to run
    assert finished.history["reward"] == pytest.approx(resumed.history["reward"])
    # notebook 06 then inspects a fresh batch of the finished run's model
    problems = verifiers.make_problems("sums", later.prompts_per_step, seed=later.seed)
    fresh = llm.sample_rollout(finished.model, finished.tokenizer, problems, later, seed=1)
    fresh = llm.snapshot_log_probs(finished.model, fresh, later)
    assert len(llm.group_table(fresh, 0)["q"]) == later.k


# ---------------------------------------------------------------- the notebooks' GPU settings


def test_the_class_session_and_the_capstones_gpu_runs_are_valid_and_predicted():
    """What notebooks 06 and 07 run on a T4, short of the GPU: every run's config, its own
    checkpoint folder, and the predicted minutes they print first."""
    t4 = llm.card_for(14.6, "Tesla T4")
    session = llm.choose_scale(14.6, session=True)
    session = replace(session, settings=session.settings | dict(checkpoint_dir="elsewhere"))
    configs = [RLVRConfig(**session.run_settings(run)) for run in session.runs]
    assert [c.method for c in configs] == ["tpo", "grpo_per_token"]
    assert all(c.checkpoint_dir == "elsewhere" and c.checkpoint_every for c in configs)
    assert sum(llm.scale_minutes(session, t4).values()) <= 30
    changes = dict(task="graph_color", steps=30)
    capstone = llm.choose_scale(14.6)
    capstone = replace(capstone, settings=capstone.settings | changes, runs=COMPARISON)
    configs = [
        RLVRConfig(**(capstone.run_settings(method) | dict(seed=seed)))
        for method in capstone.runs
        for seed in range(2)
    ]
    for config in configs:
        config.validate()
    assert len({llm.run_folder(c) for c in configs}) == 4  # each resumes its own checkpoint
    minutes = llm.scale_minutes(capstone, t4)
    assert minutes["tpo"] == pytest.approx(llm.predicted_minutes(asdict(configs[0]), t4))
