"""LLM RLVR: the TPO / GRPO loss and loop on a tiny local model, one group up close, and the
notebook's live panels."""

import dataclasses
import json
import math

import pytest
import torch

import tpo_core as tc
from tpo_core import llm
from tpo_core.llm import RLVRConfig


def tiny_config(path, **changes):
    settings = dict(
        model=str(path),
        task="sums",
        k=4,
        prompts_per_step=4,
        steps=2,
        lr=1e-3,
        max_new_tokens=2,
        chat_template=False,
        device="cpu",
        track_kl=True,
    )
    return RLVRConfig(**(settings | changes))


# ---------------------------------------------------------------- the loop


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
    grpo = RLVRConfig(model="m", k=k, method="grpo_per_token")
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
        (dict(method="ppo"), "unknown method"),
        (dict(task="chess"), "unknown task"),
        (dict(k=1), "k must be at least 2"),
        (dict(eta=0.0), "eta must be finite and at least"),
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
    config = tiny_config(tiny_model, epochs=2, lora_rank=4, beta=0.01, method="grpo_per_token")
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


def test_mixed_group_finds_a_group_with_both_right_and_wrong_answers(tiny_model, monkeypatch):
    cfg = tiny_config(tiny_model, steps=1)
    result = llm.rlvr_train(cfg, progress=False)
    flat = dataclasses.replace(
        result.last_rollout, rewards=torch.zeros_like(result.last_rollout.rewards)
    )
    rollout, group = llm.mixed_group(result.model, result.tokenizer, flat, cfg, tries=20)
    assert rollout is not flat and 0 < rollout.rewards[group].sum() < cfg.k
    assert rollout.old_log_probs is not None  # ready for group_table and replay_group
    mixed = dataclasses.replace(flat, rewards=torch.tensor([[1.0, 0, 0, 0]] * 4))
    kept, group = llm.mixed_group(result.model, result.tokenizer, mixed, cfg, room=1.0)
    assert kept is mixed  # every group of it is mixed: no fresh batch
    seq = tc.sequence_log_probs(kept.old_log_probs, kept.completion_mask).view(4, 4)
    mass = tc.group_policy(seq)[:, 0]  # (G,) p_old on each group's one right answer
    assert group == int(mass.argmin())  # the group whose target is furthest from p_old

    def all_right(*args, **kwargs):
        return dataclasses.replace(flat, rewards=torch.ones_like(flat.rewards))

    monkeypatch.setattr(llm.replay, "sample_rollout", all_right)
    with pytest.raises(ValueError, match="all right or all wrong"):
        llm.mixed_group(result.model, result.tokenizer, flat, cfg, tries=2)


def test_reward_rises_on_sums(tiny_model):
    """A broken loss cannot pass: TPO must raise the tiny model's reward on single-digit sums."""
    path = llm.build_tiny_sums_model(tiny_model.parent / "full")
    cfg = RLVRConfig(
        model=str(path),
        k=8,
        prompts_per_step=16,
        micro_batch_groups=16,
        steps=80,
        lr=1e-3,
        max_new_tokens=2,
        chat_template=False,
        device="cpu",
    )
    history = llm.rlvr_train(cfg, progress=False).history["reward"]
    assert sum(history[-10:]) / 10 > sum(history[:10]) / 10 + 0.05


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


def test_replay_group_measures_each_epoch_as_a_separate_evaluation_would(tiny_model):
    """The replay reads the policy after each step from the next step's forward pass; the
    same steps, each followed by its own evaluation in eval mode, give the same curve."""
    from tpo_core.llm.losses import rlvr_loss
    from tpo_core.llm.rollouts import token_log_probs
    from tpo_core.llm.train import Optimisation

    cfg = tiny_config(tiny_model, steps=1)
    result = llm.rlvr_train(cfg, progress=False)
    rollout = llm.snapshot_log_probs(result.model, result.last_rollout, cfg)
    rollout.rewards[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    fit = llm.replay_group(result.model, rollout, 0, cfg, epochs=3)

    model = llm.policy_copy(result.model)
    no_kl = dataclasses.replace(cfg, beta=0.0, warmup_steps=0)
    opt = Optimisation.for_model(model, no_kl)
    rows = rollout.rows(slice(0, 1))
    old, mask = rollout.old_log_probs[rows], rollout.completion_mask[rows]
    history = [tc.sequence_log_probs(old, mask).view(1, -1)]
    for _ in range(3):
        model.train()
        new = token_log_probs(model, rollout, rows, cfg.temperature, cfg.log_prob_chunk)
        opt.backward(rlvr_loss(no_kl, new, old, rollout.rewards[:1], mask))
        opt.step(cfg.max_grad_norm)
        model.eval()
        with torch.no_grad():
            new = token_log_probs(model, rollout, rows, cfg.temperature, cfg.log_prob_chunk)
        history.append(tc.sequence_log_probs(new, mask).view(1, -1))
    rewards = rollout.rewards[:1]
    separate = tc.objectives.Replay.from_epochs(cfg.method, history[0], rewards, history)
    assert fit.kl_to_target == pytest.approx(separate.kl_to_target, rel=1e-5, abs=1e-7)
    assert fit.success_mass == pytest.approx(separate.success_mass, rel=1e-5, abs=1e-7)


def test_the_rlvr_command_writes_a_run_with_provenance_and_refuses_bad_input(
    tiny_model, tmp_path, capsys
):
    from tpo_core.__main__ import main

    out = tmp_path / "run.json"
    args = ["rlvr", "--model", str(tiny_model), "--steps", "2", "--k", "4", "--quiet"]
    assert main([*args, "--no-chat-template", "--max-new-tokens", "2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["method"] == "tpo" and data["config"]["steps"] == 2
    assert len(data["history"]["reward"]) == 2
    assert data["provenance"]["command"].startswith("python -m tpo_core rlvr --model")
    for bad, reason in [(["--k", "1"], "k must be at least 2"), (["--lr", "2"], "lr must be")]:
        with pytest.raises(SystemExit) as exit_:
            main([*args, *bad, "--out", str(tmp_path / "bad.json")])
        assert exit_.value.code == 2 and reason in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(SystemExit):
        main(["rlvr", "--out", str(out)])  # no --model


def test_runs_from_one_start_share_its_frozen_base_and_train_their_own_adapters(tiny_model):
    """Notebooks keep every finished run alive: each is a policy_copy of one loaded start, so
    on a GPU a finished LoRA run holds its adapter, not a second base model."""
    cfg = tiny_config(tiny_model, lora_rank=4, steps=1)
    tokenizer, start = llm.load_policy(cfg, progress=False)
    run = llm.rlvr_train(cfg, progress=False, policy=(tokenizer, llm.policy_copy(start)))
    frozen = {n: p for n, p in start.named_parameters() if not p.requires_grad}
    trained = dict(run.model.named_parameters())
    assert frozen and all(trained[n].data_ptr() == p.data_ptr() for n, p in frozen.items())
    adapters = {n: p for n, p in start.named_parameters() if p.requires_grad}
    assert adapters and all(trained[n].data_ptr() != p.data_ptr() for n, p in adapters.items())
    assert any(not torch.equal(trained[n], p) for n, p in adapters.items())  # the run trained
    assert all(torch.equal(p, torch.zeros_like(p)) for n, p in adapters.items() if "lora_B" in n)
