"""The RLVR loop's bookkeeping: what the loss computes is what the loop records, float16 runs
scale their loss, checkpoints load as data only, evaluations go through in chunks."""

import math
import pickle

import pytest
import torch

import tpo_core as tc
from tpo_core import llm
from tpo_core.llm import RLVRConfig
from tpo_core.llm import model as policy_module

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return llm.build_tiny_sums_model(tmp_path_factory.mktemp("tiny") / "sums", warmup_steps=30)


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
    config = RLVRConfig(model="m", k=k, loss=loss, beta=0.1)
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
    no_kl = RLVRConfig(model="m", k=k, loss=loss)  # beta 0: the KL is measured, not weighed
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
    folder = tmp_path / "ckpt"
    config = config_for(tiny_model, steps=2, checkpoint_dir=str(folder), checkpoint_every=2)
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
    folder = tmp_path / "ckpt"
    config = config_for(tiny_model, steps=1, checkpoint_dir=str(folder), checkpoint_every=1)
    llm.rlvr_train(config, progress=False)
    tokenizer, model = llm.load_policy(config)
    opt = llm.Optimisation.for_model(model, config)
    result = llm.RLVRResult(config, {m: [] for m in llm.METRICS})
    assert llm.load_checkpoint(folder, model, opt, result) == 1  # a saved one loads
    assert len(result.history["reward"]) == 1
    state = torch.load(folder / llm.CHECKPOINT, weights_only=True)
    with open(folder / llm.CHECKPOINT, "wb") as f:  # the same checkpoint, with a payload
        pickle.dump(state | {"history": Payload()}, f)
    with pytest.raises(pickle.UnpicklingError):
        llm.load_checkpoint(folder, model, opt, result)
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
