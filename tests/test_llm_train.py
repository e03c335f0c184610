"""The RLVR loop's bookkeeping: what the loss computes is what the loop records, float16 runs
scale their loss, checkpoints load as data only, evaluations go through in chunks."""

import math
import pickle
from dataclasses import replace

import pytest
import torch

import tpo_core as tc
from tpo_core import llm
from tpo_core.llm import RLVRConfig
from tpo_core.llm import model as policy_module

pytest.importorskip("transformers")


def config_for(path, **changes):
    settings = dict(
        model=str(path),
        task="sums",
        k=4,
        prompts_per_step=3,
        steps=1,
        lr=1e-3,
        max_new_tokens=3,
        chat_template=False,
        device="cpu",
    )
    return RLVRConfig(**(settings | changes))


# ---------------------------------------------------------------- the loss's terms


@pytest.mark.parametrize("loss", ["tpo", "grpo_per_token"])
def test_loss_terms_hold_the_kl_and_clipped_share_of_the_loss_itself(loss):
    g, k, t = 2, 4, 5
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(g * k, t, generator=gen, dtype=torch.float64)
    new = (old + 0.3 * torch.randn(g * k, t, generator=gen, dtype=torch.float64)).requires_grad_()
    ref = old - 0.1 * torch.rand(g * k, t, generator=gen, dtype=torch.float64)
    mask = torch.arange(t)[None] < torch.tensor([5, 3, 1, 4, 2, 5, 5, 1])[:, None]
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.float64)
    config = RLVRConfig(model="m", k=k, method=loss, beta=0.1)
    terms = llm.rlvr_loss_terms(config, new, old, rewards, mask, ref)
    kl = tc.kl_k3(new, ref)[mask].mean()
    torch.testing.assert_close(terms.kl, kl.detach())
    assert terms.tokens == int(mask.sum()) and not terms.kl.requires_grad
    torch.testing.assert_close(terms.loss, llm.rlvr_loss(config, new, old, rewards, mask, ref))
    if loss == "tpo":
        assert terms.clipped is None
    else:
        advantages = tc.grpo_advantages(rewards).view(g * k, 1)
        clipped = tc.clipped_fraction(new, old, advantages, 0.2, mask)
        assert 0 < float(clipped) < 1  # the case is not trivial
        torch.testing.assert_close(terms.clipped, clipped)
    no_kl = RLVRConfig(model="m", k=k, method=loss)  # beta 0: the KL is measured, not weighed
    measured = llm.rlvr_loss_terms(no_kl, new, old, rewards, mask, ref)
    torch.testing.assert_close(measured.kl, terms.kl)
    torch.testing.assert_close(measured.loss, llm.rlvr_loss(no_kl, new, old, rewards, mask))
    with pytest.raises(ValueError, match="pass ref"):
        llm.rlvr_loss_terms(config, new, old, rewards, mask)


def test_the_loop_records_the_kl_of_every_token_of_the_rollout(tiny_model):
    """Micro-batches of 2 and 1 groups: the recorded KL is the mean over all the step's tokens."""
    config = config_for(tiny_model, beta=0.05, micro_batch_groups=2, prompts_per_step=3)
    tokenizer, model = llm.load_policy(config)
    ref = policy_module.reference_policy(model, config)
    with torch.no_grad():  # move the policy away from the reference so the KL is not 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(0)))
    problems = llm.verifiers.make_problems("sums", 3, seed=1)
    rollout = llm.sample_rollout(model, tokenizer, problems, config, seed=0)
    every_row = slice(0, len(rollout.completions))
    with torch.no_grad():
        before = llm.token_log_probs(model, rollout, every_row, 1.0)  # the policy that sampled
        reference = llm.token_log_probs(ref, rollout, every_row, 1.0)
    opt = llm.Optimisation.for_model(model, config)
    recorded = llm.fit_rollout(model, ref, rollout, config, opt)
    mask = rollout.completion_mask
    expected = tc.kl_k3(before, reference)[mask].mean()
    assert float(expected) > 1e-4 and math.isfinite(recorded["grad_norm"])
    assert recorded["kl"] == pytest.approx(float(expected), rel=1e-5)


# ---------------------------------------------------------------- float16


@pytest.fixture
def float16_on_cpu(monkeypatch):
    """The precision a T4 gets, emulated by CPU autocast: every path reads autocast_dtype."""
    monkeypatch.setattr(policy_module, "autocast_dtype", lambda device: torch.float16)


def test_a_float16_run_scales_its_loss_from_a_start_suited_to_tpo(
    tiny_model, tmp_path, float16_on_cpu
):
    config = config_for(tiny_model, steps=2, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    folder = llm.run_folder(config)
    result = llm.rlvr_train(config, progress=False)
    assert result.history["skipped"] == [0, 0]
    scaler = torch.load(folder / llm.CHECKPOINT, weights_only=True)["scaler"]
    assert scaler["scale"] == llm.FP16_INIT_SCALE == 2.0**10  # no overflow backed it off


def test_the_replay_scales_its_float16_backward(tiny_model, monkeypatch, float16_on_cpu):
    config = config_for(tiny_model)
    tokenizer, model = llm.load_policy(config)
    rollout = llm.sample_rollout(
        model, tokenizer, llm.verifiers.make_problems("sums", 3, 0), config, 0
    )
    llm.snapshot_log_probs(model, rollout, config)
    scales = []
    real = torch.amp.GradScaler.scale

    def spy(self, outputs):
        scales.append(self.get_scale() if self.is_enabled() else None)
        return real(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    llm.replay_group(model, rollout, 0, config, epochs=3)
    assert scales == [llm.FP16_INIT_SCALE] * 3


# ---------------------------------------------------------------- checkpoints


class Payload:
    """Unpickling this runs code: what a crafted checkpoint could do."""

    ran = []

    def __reduce__(self):
        return (Payload.ran.append, ("the payload ran",))


def test_a_crafted_checkpoint_does_not_run_code_and_saved_ones_load(tiny_model, tmp_path):
    config = config_for(tiny_model, steps=1, checkpoint_dir=str(tmp_path), checkpoint_every=1)
    folder = llm.run_folder(config)
    llm.rlvr_train(config, progress=False)
    torch.manual_seed(config.seed)
    tokenizer, model = llm.load_policy(config)
    start = llm.fingerprint(model)
    opt = llm.Optimisation.for_model(model, config)
    result = llm.RLVRResult(config, {m: [] for m in llm.METRICS})
    assert llm.load_checkpoint(folder, model, opt, result, start) == 1  # a saved one loads
    assert len(result.history["reward"]) == 1
    state = torch.load(folder / llm.CHECKPOINT, weights_only=True)
    with open(folder / llm.CHECKPOINT, "wb") as f:  # the same checkpoint, with a payload
        pickle.dump(state | {"history": Payload()}, f)
    with pytest.raises(pickle.UnpicklingError):
        llm.load_checkpoint(folder, model, opt, result, start)
    assert Payload.ran == []


# ---------------------------------------------------------------- evaluations


def test_evaluation_goes_through_in_chunks_the_size_of_a_training_step(tiny_model):
    config = config_for(tiny_model, prompts_per_step=2, k=4)
    tokenizer, model = llm.load_policy(config)
    rows = []
    generate = model.generate

    def counting(*args, **kwargs):
        out = generate(*args, **kwargs)
        rows.append(len(out))
        return out

    model.generate = counting
    problems = llm.verifiers.held_out_problems("sums", 11)
    scores = llm.evaluate(model, tokenizer, problems, config)
    assert max(rows) <= config.prompts_per_step * config.k  # never more than a training step
    assert sum(rows) == 11 + 11 * 4  # every problem: one greedy row and K sampled ones
    one_by_one = RLVRConfig(**(config.__dict__ | dict(prompts_per_step=1, k=2)))
    alone = llm.evaluate(model, tokenizer, problems, one_by_one)  # greedy: 2 problems a chunk
    assert scores["greedy"] == alone["greedy"]
    assert 0 <= scores["pass_at_k"] <= 1


# ---------------------------------------------------------------- the loop's records and runs


@pytest.mark.parametrize("loss", ["tpo", "grpo_per_token"])
def test_step_loss_is_the_same_however_the_step_is_cut_with_unequal_lengths(loss):
    torch.manual_seed(0)
    g, k, t = 4, 3, 6
    new = -torch.rand(g * k, t, dtype=torch.float64, requires_grad=True)
    old, ref = new.detach() - 0.1 * torch.rand(g * k, t), -torch.rand(g * k, t)
    lengths = torch.randint(1, t + 1, (g * k,))
    mask = torch.arange(t)[None] < lengths[:, None]  # completions of unequal length
    rewards = torch.randint(0, 2, (g, k)).double()
    config = RLVRConfig(model="m", method=loss, k=k, beta=0.1)
    whole = llm.rlvr_loss(config, new, old, rewards, mask, ref)
    totals = dict(total_groups=g, total_tokens=int(mask.sum()))
    for per in (1, 2, 3):
        parts = [slice(a, min(a + per, g)) for a in range(0, g, per)]
        summed = sum(
            llm.rlvr_loss(
                config,
                new[p.start * k : p.stop * k],
                old[p.start * k : p.stop * k],
                rewards[p],
                mask[p.start * k : p.stop * k],
                ref[p.start * k : p.stop * k],
                **totals,
            )
            for p in parts
        )
        torch.testing.assert_close(summed, whole)
    # weighting each micro-batch's own token mean by its share of groups would not be
    by_groups = sum(
        llm.rlvr_loss(
            config,
            new[a * k : a * k + k],
            old[a * k : a * k + k],
            rewards[a : a + 1],
            mask[a * k : a * k + k],
            ref[a * k : a * k + k],
        )
        / g
        for a in range(g)
    )
    assert not torch.allclose(by_groups, whole)


@pytest.mark.parametrize(
    ("capability", "dtype"),
    [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_precision_follows_the_card(monkeypatch, capability, dtype):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert llm.autocast_dtype(torch.device("cuda")) == dtype
    assert llm.autocast_dtype(torch.device("cpu")) is None


def test_history_has_truncation_length_and_throughput(tiny_model):
    result = llm.rlvr_train(config_for(tiny_model, max_new_tokens=1), progress=False)
    h = result.history
    assert h["truncated"][0] == pytest.approx(1 - result.last_rollout.ended.float().mean().item())
    assert h["truncated"][0] > 0  # one token leaves no room for the sum and its end token
    assert h["completion_length"][0] == pytest.approx(1.0)
    assert h["tokens_per_second"][0] > 0 and math.isnan(h["peak_gpu_gib"][0])
    assert h["skipped"] == [0] and math.isnan(h["kl"][0])  # no KL pass unless asked


def test_a_run_resumed_from_its_checkpoint_is_the_run_that_never_stopped(tiny_model, tmp_path):
    settings = dict(lora_rank=4, prompts_per_step=2, max_new_tokens=2, warmup_steps=2)
    straight = llm.rlvr_train(config_for(tiny_model, steps=4, **settings), progress=False)
    folder = str(tmp_path / "ckpt")
    first = config_for(tiny_model, steps=2, checkpoint_dir=folder, checkpoint_every=1, **settings)
    llm.rlvr_train(first, progress=False)
    saved = llm.run_folder(first)
    assert saved.parent == tmp_path / "ckpt" and (saved / llm.CHECKPOINT).exists()
    assert (saved / "adapter").is_dir()
    later = config_for(tiny_model, steps=4, checkpoint_dir=folder, checkpoint_every=1, **settings)
    resumed = llm.rlvr_train(later, progress=False, resume=True)
    for name in ("reward", "grad_norm", "completion_tokens"):
        assert resumed.history[name] == pytest.approx(straight.history[name], rel=1e-6)


def test_warmup_scales_the_first_steps_down(tiny_model):
    def change(**settings):
        config = config_for(tiny_model, steps=1, **settings)
        tokenizer, model = llm.load_policy(config)
        before = [p.detach().clone() for p in model.parameters()]
        llm.rlvr_train(config, progress=False, policy=(tokenizer, model))
        return sum((p - b).norm() for p, b in zip(model.parameters(), before, strict=True))

    assert change(warmup_steps=1000) < 0.01 * change()  # Adam's first step is ~ lr per weight


def test_evaluations_on_held_out_problems(tiny_model):
    result = llm.rlvr_train(
        config_for(tiny_model, steps=3, eval_every=2, eval_problems=5), progress=False
    )
    assert [e["step"] for e in result.evaluations] == [2, 3]  # every 2 steps and at the end
    for e in result.evaluations:
        assert 0 <= e["greedy"] <= 1 and 0 <= e["pass_at_k"] <= 1
    problems = llm.verifiers.held_out_problems("sums", 5)
    again = llm.evaluate(result.model, result.tokenizer, problems, result.config)
    assert again == llm.evaluate(result.model, result.tokenizer, problems, result.config)
    assert again == {k: v for k, v in result.evaluations[-1].items() if k != "step"}
    assert problems != llm.verifiers.make_problems("sums", 5, seed=0)  # not a training stream


def test_held_out_gsm8k_is_its_test_split(tmp_path):
    import json

    test = tmp_path / "test.jsonl"
    rows = [dict(question=f"What is {i} + 1?", answer=f"step\\n#### {i + 1}") for i in range(3)]
    test.write_text("\n".join(json.dumps(r) for r in rows))
    problems = llm.verifiers.held_out_problems("gsm8k", 2, gsm8k_test_path=str(test))
    assert [p.answer for p in problems] == ["1", "2"]
    with pytest.raises(ValueError, match="checkpoint_dir"):
        RLVRConfig(model="m", checkpoint_every=5).validate()


def test_clipped_fraction_counts_the_tokens_whose_clip_is_active():
    old = torch.zeros(2, 3)
    new = torch.log(torch.tensor([[1.3, 1.1, 0.7], [0.7, 1.3, 1.0]]))
    advantages = torch.tensor([[1.0], [-1.0]])  # one per completion, on every token
    # active: 1.3 with A > 0, and 0.7 with A < 0; 0.7 with A > 0 and 1.3 with A < 0 are not
    assert float(tc.clipped_fraction(new, old, advantages)) == pytest.approx(2 / 6)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(tc.clipped_fraction(new, old, advantages, mask=mask)) == pytest.approx(2 / 3)


def test_history_has_the_clipped_share_of_grpo_tokens(tiny_model):
    one = llm.rlvr_train(config_for(tiny_model, method="grpo_per_token"), progress=False)
    assert one.history["clipped"] == [0.0]  # a single epoch: every ratio is 1
    many = llm.rlvr_train(
        config_for(tiny_model, method="grpo_per_token", epochs=6, lr=0.05), progress=False
    )
    assert 0 < many.history["clipped"][0] < 1
    tpo = llm.rlvr_train(config_for(tiny_model), progress=False)
    assert math.isnan(tpo.history["clipped"][0])  # TPO has no clip


def test_checkpoints_refuse_another_start_a_shorter_run_and_a_silent_restart(tiny_model, tmp_path):
    """A checkpoint resumes only the model it started from, never more steps than asked,
    and is never overwritten by a run that was not told to resume."""
    config = config_for(tiny_model, steps=2, checkpoint_dir=str(tmp_path), checkpoint_every=1)
    llm.rlvr_train(config, progress=False)
    with pytest.raises(ValueError, match="resume=True"):
        llm.rlvr_train(config, progress=False)  # resume=False over a saved run
    with pytest.raises(ValueError, match="holds 2 steps, more than steps=1"):
        llm.rlvr_train(replace(config, steps=1), progress=False, resume=True)
    torch.manual_seed(1)
    tokenizer, other = llm.load_policy(config)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)  # another base model at the same path
    with pytest.raises(ValueError, match="another starting model"):
        llm.rlvr_train(
            replace(config, steps=3), progress=False, policy=(tokenizer, other), resume=True
        )
    state = torch.load(llm.run_folder(config) / llm.CHECKPOINT, weights_only=True)
    assert state["step"] == 2  # nothing was written over
