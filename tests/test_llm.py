"""LLM RLVR: verifiers, the TPO / GRPO loop on a tiny local model, and the TRL integration."""

import json
import math

import pytest
import torch

import tpo_core as tc
from tpo_core import llm
from tpo_core.llm import RLVRConfig, verifiers


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny Llama-architecture model saved to disk, loaded like a hub model."""
    return llm.build_tiny_sums_model(tmp_path_factory.mktemp("tiny") / "sums", warmup_steps=30)


def tiny_config(path, **changes):
    settings = dict(model=str(path), task="sums", k=4, prompts_per_step=4, steps=2, lr=1e-3,
                    max_new_tokens=2, chat_template=False, device="cpu", track_kl=True)  # fmt: skip
    return RLVRConfig(**(settings | changes))


# ---------------------------------------------------------------- the loop


def test_completion_mask_stops_after_the_first_eos():
    ids = torch.tensor([[5, 1, 0, 0], [5, 6, 7, 8], [1, 5, 1, 0]])
    assert llm.completion_mask(ids, eos_id=1).tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]


def test_rlvr_loss_tpo_equals_tpo_loss_and_grpo_equals_grpo_loss():
    g, k, t = 2, 4, 3
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(g * k, t, generator=gen)
    new = (old + 0.1 * torch.randn(g * k, t, generator=gen)).requires_grad_()
    mask = torch.ones(g * k, t, dtype=torch.bool)
    mask[0, 2] = mask[5, 1:] = False
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 1]])
    cfg = RLVRConfig(model="m", k=k)
    seq = lambda x: tc.sequence_log_probs(x, mask).view(g, k)  # noqa: E731
    expected = tc.tpo_loss(seq(new), tc.tpo_target(seq(old), rewards))
    torch.testing.assert_close(llm.rlvr_loss(cfg, new, old, rewards, mask), expected)
    grpo = RLVRConfig(model="m", k=k, loss="grpo_per_token")
    adv = tc.grpo_advantages(rewards).view(g * k, 1)
    torch.testing.assert_close(
        llm.rlvr_loss(grpo, new, old, rewards, mask), tc.grpo_loss(new, old, adv, 0.0, mask=mask)
    )
    ref = old - 0.05
    with_kl = RLVRConfig(model="m", k=k, beta=0.1)
    kl = tc.kl_k3(new, ref)[mask].mean()
    torch.testing.assert_close(
        llm.rlvr_loss(with_kl, new, old, rewards, mask, ref), expected + 0.1 * kl
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(loss="ppo"), "unknown loss"),
        (dict(task="chess"), "unknown task"),
        (dict(k=1), "k must be at least 2"),
        (dict(eta=0.0), "eta must be a positive"),
        (dict(lr=math.inf), "lr must be a positive"),
        (dict(beta=-1.0), "beta"),
        (dict(clip_eps=1.5), "clip_eps"),
        (dict(micro_batch_groups=0), "micro_batch_groups"),
    ],
)
def test_bad_rlvr_settings_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        RLVRConfig(model="m", **changes).validate()


def test_loop_loads_from_disk_and_is_reproducible(tiny_model):
    a = llm.rlvr_train(tiny_config(tiny_model), progress=False)
    b = llm.rlvr_train(tiny_config(tiny_model), progress=False)
    assert a.history["reward"] == b.history["reward"]
    assert a.history["grad_norm"] == b.history["grad_norm"]
    assert set(a.history) == set(llm.METRICS) and all(len(v) == 2 for v in a.history.values())
    assert a.history["kl"][0] == pytest.approx(0.0, abs=1e-6)  # step 0: still the initial policy
    rollout = a.last_rollout
    assert rollout.rewards.shape == (4, 4) and len(rollout.completions) == 16


def test_micro_batches_of_whole_groups_give_the_same_step(tiny_model):
    one = llm.rlvr_train(tiny_config(tiny_model, micro_batch_groups=1), progress=False)
    all_ = llm.rlvr_train(tiny_config(tiny_model, micro_batch_groups=4), progress=False)
    for name in ("reward", "grad_norm", "kl"):  # the KL covers every micro-batch's tokens
        assert one.history[name] == pytest.approx(all_.history[name], rel=1e-4, abs=1e-7)


def test_multi_epoch_and_lora_and_kl_run(tiny_model):
    config = tiny_config(tiny_model, epochs=2, lora_rank=4, beta=0.01, loss="grpo_per_token")
    r = llm.rlvr_train(config, progress=False)
    trainable = [n for n, p in r.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    assert all(math.isfinite(v) for v in r.history["kl"])


def test_group_table_is_notebook_01s_picture(tiny_model):
    cfg = tiny_config(tiny_model, steps=1)
    result = llm.rlvr_train(cfg, progress=False)
    rollout = llm.snapshot_log_probs(result.model, result.last_rollout, cfg)
    table = llm.group_table(rollout, 0)
    assert len(table["completions"]) == 4 and sum(table["p_old"]) == pytest.approx(1.0)
    expected_q = tc.tpo_target(torch.tensor(table["p_old"]).log(), torch.tensor(table["rewards"]))
    assert table["q"] == pytest.approx(expected_q.tolist(), abs=1e-5)


def test_choose_scale_by_gpu_memory():
    assert llm.choose_scale(None, tiny_model="x").name == "cpu"
    assert llm.choose_scale(15.0).settings["lora_rank"] == 32
    big = llm.choose_scale(80.0)
    assert big.name == "large-gpu" and big.settings["k"] == 16
    with pytest.raises(ValueError, match="tiny_model"):
        llm.choose_scale(0)


def test_reward_rises_on_sums(tiny_model):
    """A broken loss cannot pass: TPO must raise the tiny model's reward on single-digit sums."""
    path = llm.build_tiny_sums_model(tiny_model.parent / "full")
    cfg = RLVRConfig(**llm.choose_scale(0, tiny_model=path).settings)  # the notebook's CPU run
    history = llm.rlvr_train(cfg, progress=False).history["reward"]
    assert sum(history[-10:]) / 10 > sum(history[:10]) / 10 + 0.05


# ---------------------------------------------------------------- TRL


def trl_trainer(tiny_model, tmp_path, **changes):
    import trl
    from datasets import Dataset

    from tpo_core.llm.trl import TPOTrainer

    problems = verifiers.make_problems("sums", 32, seed=0)
    data = Dataset.from_dict(
        {"prompt": [p.prompt for p in problems], "answer": [p.answer for p in problems]}
    )

    def exact_match(completions, answer, **_):
        return [
            verifiers.reward(c, verifiers.Problem("", a, "sums"))
            for c, a in zip(completions, answer, strict=True)
        ]

    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                    max_completion_length=2, max_steps=2, learning_rate=1e-3, logging_steps=1,
                    report_to="none", save_strategy="no", use_cpu=True, seed=0)  # fmt: skip
    args = trl.GRPOConfig(**(settings | changes))
    return TPOTrainer(model=str(tiny_model), reward_funcs=exact_match, args=args,
                      train_dataset=data)  # fmt: skip


def test_trl_loss_equals_tpo_loss_on_the_same_batch(tiny_model, tmp_path):
    trainer = trl_trainer(tiny_model, tmp_path)
    model = trainer.model
    tok = trainer.processing_class
    prompts = ["2+5=", "3+3="]
    k = 4
    enc = tok([p for p in prompts for _ in range(k)], return_tensors="pt", padding=True)
    completion_ids = torch.tensor([[8, 1], [9, 1], [8, 1], [7, 1], [5, 1], [9, 1], [4, 1], [3, 1]])
    completion_mask = torch.ones_like(completion_ids)
    rewards = torch.tensor([1.0, 0, 1, 0, 0, 0, 0, 0])  # (2, 4) groups, group 2 all-fail
    grouped = rewards.view(2, k)
    trl_advantages = (
        (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)
    ).flatten()
    inputs = dict(prompt_ids=enc["input_ids"], prompt_mask=enc["attention_mask"],
                  completion_ids=completion_ids, completion_mask=completion_mask,
                  advantages=trl_advantages)  # fmt: skip
    model.train()
    trainer.current_gradient_accumulation_steps = (
        2  # set by the training loop; the loss divides by it
    )
    loss = trainer._compute_loss(model, inputs) * 2
    ids = torch.cat([enc["input_ids"], completion_ids], 1)
    attention = torch.cat([enc["attention_mask"], completion_mask], 1)
    token_lp, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attention, 2)
    seq = token_lp.sum(-1).view(2, k)
    expected = tc.tpo_loss(seq, tc.tpo_target(seq.detach(), grouped))  # raw rewards, population std
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)


def test_trl_rejects_micro_batches_that_split_groups(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="multiple of num_generations"):
        trl_trainer(tiny_model, tmp_path, per_device_train_batch_size=6, num_generations=4,
                    generation_batch_size=12)  # fmt: skip
    from tpo_core.llm.trl import check_whole_groups

    ids = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2]])
    with pytest.raises(ValueError, match="mixes prompts"):
        check_whole_groups(ids, torch.ones_like(ids), 2)


def test_shuffle_groups_keeps_groups_whole():
    from tpo_core.llm.trl import shuffle_groups

    batch = {
        "x": torch.arange(12),
        "names": [f"g{i // 3}" for i in range(12)],
        "n": torch.tensor(5),
    }
    out = shuffle_groups(batch, 3, torch.Generator().manual_seed(1))
    groups = out["x"].view(4, 3)
    assert (groups[:, 1:] - groups[:, :-1] == 1).all() and (groups[:, 0] % 3 == 0).all()
    assert out["names"] == [f"g{int(i) // 3}" for i in out["x"]] and out["n"] == 5
    assert sorted(out["x"].tolist()) == list(range(12))


def test_trl_two_training_steps(tiny_model, tmp_path):
    trainer = trl_trainer(tiny_model, tmp_path, gradient_accumulation_steps=2)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert trainer.state.global_step == 2
    assert any(
        not torch.equal(a, b.detach())
        for a, b in zip(before, trainer.model.parameters(), strict=True)
    )
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


# ---------------------------------------------------------------- notebook 06 panels


def test_live_rlvr_and_group_inspector(tiny_model):
    from tpo_core.teaching import GroupInspector, LiveRLVR

    live = LiveRLVR(["tpo", "grpo_per_token"])
    cfg = tiny_config(tiny_model, steps=3)
    result = llm.rlvr_train(cfg, callback=live.callback("grpo_per_token"), progress=False)
    panels = len(live.figure.data) // 2
    for panel, metric in enumerate(["reward", "pass_at_k", "zero_variance", "grad_norm", "kl"]):
        assert list(live.figure.data[2 * panel + 1].y) == pytest.approx(result.history[metric])
        assert list(live.figure.data[2 * panel].y) == []  # the TPO run has not started
    assert panels == 5

    rollout = llm.snapshot_log_probs(result.model, result.last_rollout, cfg)
    inspector = GroupInspector(rollout)
    inspector.group_slider.value = 2
    table = llm.group_table(rollout, 2)
    by_name = {t.name: list(t.y) for t in inspector.figure.data}
    assert by_name["q"] == pytest.approx(table["q"]) and by_name["p_old"] == pytest.approx(
        table["p_old"]
    )
    assert by_name["GRPO advantage"] == pytest.approx(table["advantages"])
    assert table["prompt"] in inspector.table.value


def test_gpu_benchmark_script_runs_on_a_toy_shape():
    """benchmarks/llm_step.py is a GPU check; its --tiny mode keeps it from rotting on CPU."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "llm_step.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--tiny", "--steps", "2", "--max-new-tokens", "4"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    for loss in ("tpo", "grpo_per_token"):
        assert report[loss]["seconds_per_step"] > 0 and report[loss]["loss_seconds"] > 0
        assert report[loss]["generation_tokens_per_second"] > 0
    assert "tpo_loss_overhead_share_of_step" in report


def test_replay_group_walks_tpo_to_its_target_and_leaves_the_model_alone(tiny_model):
    cfg = tiny_config(tiny_model, steps=1)
    result = llm.rlvr_train(cfg, progress=False)
    rollout = llm.snapshot_log_probs(result.model, result.last_rollout, cfg)
    # A mixed group to fit: in a group with two different texts, the copies of its first
    # completion are right and the rest wrong.
    group = next(g for g in range(4) if len(set(rollout.completions[4 * g : 4 * g + 4])) > 1)
    texts = rollout.completions[4 * group : 4 * group + 4]
    rollout.rewards[group] = torch.tensor([float(t == texts[0]) for t in texts])
    table = llm.group_table(rollout, group)
    before = [p.detach().clone() for p in result.model.parameters()]
    fit = llm.replay_group(result.model, rollout, group, cfg, epochs=40)
    assert all(torch.equal(a, b) for a, b in zip(before, result.model.parameters(), strict=True))
    q, p_old = torch.tensor(table["q"]), torch.tensor(table["p_old"])
    assert fit.kl_to_target[0] == pytest.approx(float(tc.kl_divergence(q, p_old)), rel=1e-4)
    right = rollout.rewards[group] == 1
    assert fit.target_success_mass == pytest.approx(float(q[right].sum()), rel=1e-5)
    assert fit.kl_to_target[-1] < 0.05 * fit.kl_to_target[0]
    with pytest.raises(ValueError, match="group must be"):
        llm.replay_group(result.model, rollout, 9, cfg, epochs=2)


def test_trl_loss_on_a_vllm_batch_uses_the_trainers_snapshot_and_no_sampling_ratio(
    tiny_model, tmp_path
):
    """The batch TRL builds with ``use_vllm=True`` (vLLM itself needs a GPU): the trainer's own
    snapshot ``old_per_token_logps``, vLLM's ``sampling_per_token_logps`` and their per-token
    ratio. TPO's target is built from the trainer's snapshot; the ratio must not enter."""
    trainer = trl_trainer(tiny_model, tmp_path)
    model, tok, k = trainer.model, trainer.processing_class, 4
    enc = tok([p for p in ["2+5=", "3+3="] for _ in range(k)], return_tensors="pt", padding=True)
    completion_ids = torch.tensor([[8, 1], [9, 1], [8, 1], [7, 1], [6, 1], [9, 1], [6, 1], [3, 1]])
    completion_mask = torch.ones_like(completion_ids)
    grouped = torch.tensor([[1.0, 0, 1, 0], [1.0, 0, 1, 0]])
    ids = torch.cat([enc["input_ids"], completion_ids], 1)
    attention = torch.cat([enc["attention_mask"], completion_mask], 1)
    model.train()
    token_lp, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attention, 2)
    g = torch.Generator().manual_seed(0)
    old = token_lp.detach() + 0.3 * torch.randn(token_lp.shape, generator=g)  # a stale snapshot
    sampler = old + 0.05 * torch.randn(old.shape, generator=g)  # vLLM's numerics
    trainer.current_gradient_accumulation_steps = 1
    losses = []
    for scale in (1.0, 3.0):
        inputs = dict(prompt_ids=enc["input_ids"], prompt_mask=enc["attention_mask"],
                      completion_ids=completion_ids, completion_mask=completion_mask,
                      advantages=(grouped - 0.5).flatten(), old_per_token_logps=old,
                      sampling_per_token_logps=sampler,
                      importance_sampling_ratio=scale * torch.exp(old - sampler))  # fmt: skip
        losses.append(trainer._compute_loss(model, inputs))
    seq_new, seq_old = token_lp.sum(-1).view(2, k), old.sum(-1).view(2, k)
    expected = tc.tpo_loss(seq_new, tc.tpo_target(seq_old, grouped))
    torch.testing.assert_close(losses[0], expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(losses[0], losses[1])  # the sampling ratio does not enter
