"""TPO as the loss of TRL's GRPOTrainer (tpo_core.llm.trl), on the tiny local model."""

import math

import pytest
import torch

import tpo_core as tc
from tpo_core.llm import verifiers

pytest.importorskip("trl")


def trl_trainer(tiny_model, tmp_path, **changes):
    from datasets import Dataset

    from tpo_core.llm.trl import TPOConfig, TPOTrainer

    problems = verifiers.make_problems("sums", 32, seed=0)
    data = Dataset.from_dict(
        {"prompt": [p.prompt for p in problems], "answer": [p.answer for p in problems]}
    )

    def exact_match(completions, answer, **_):
        return [
            verifiers.reward(c, verifiers.Problem("", a, "sums"))
            for c, a in zip(completions, answer, strict=True)
        ]

    settings = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=2,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    args = TPOConfig(**(settings | changes))
    evaluation = data if args.eval_strategy != "no" else None
    return TPOTrainer(
        model=str(tiny_model),
        reward_funcs=exact_match,
        args=args,
        train_dataset=data,
        eval_dataset=evaluation,
    )


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
    inputs = dict(
        prompt_ids=enc["input_ids"],
        prompt_mask=enc["attention_mask"],
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        advantages=trl_advantages,
    )
    model.train()
    trainer.current_gradient_accumulation_steps = 2  # set by the training loop; the loss divides
    loss = trainer._compute_loss(model, inputs) * 2
    ids = torch.cat([enc["input_ids"], completion_ids], 1)
    attention = torch.cat([enc["attention_mask"], completion_mask], 1)
    token_lp, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attention, 2)
    seq = token_lp.sum(-1).view(2, k)
    expected = tc.tpo_loss(seq, tc.tpo_target(seq.detach(), grouped))  # raw rewards, population std
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)


def test_trl_rejects_micro_batches_that_split_groups(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="multiple of num_generations"):
        trl_trainer(
            tiny_model,
            tmp_path,
            per_device_train_batch_size=6,
            num_generations=4,
            generation_batch_size=12,
        )
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
        inputs = dict(
            prompt_ids=enc["input_ids"],
            prompt_mask=enc["attention_mask"],
            completion_ids=completion_ids,
            completion_mask=completion_mask,
            advantages=(grouped - 0.5).flatten(),
            old_per_token_logps=old,
            sampling_per_token_logps=sampler,
            importance_sampling_ratio=scale * torch.exp(old - sampler),
        )
        losses.append(trainer._compute_loss(model, inputs))
    seq_new, seq_old = token_lp.sum(-1).view(2, k), old.sum(-1).view(2, k)
    expected = tc.tpo_loss(seq_new, tc.tpo_target(seq_old, grouped))
    torch.testing.assert_close(losses[0], expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(losses[0], losses[1])  # the sampling ratio does not enter


def group_batch(trainer, prompts, completion_ids, completion_mask, rewards):
    """A TRL batch: ``len(prompts)`` groups of ``rewards.shape[1]`` completions."""
    k = rewards.shape[1]
    enc = trainer.processing_class(
        [p for p in prompts for _ in range(k)], return_tensors="pt", padding=True
    )
    advantages = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
    return dict(
        prompt_ids=enc["input_ids"],
        prompt_mask=enc["attention_mask"],
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        advantages=advantages.flatten(),
    )


def sequence_log_probs_of(trainer, inputs):
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    t = inputs["completion_ids"].shape[1]
    token_lp, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, t)
    return tc.sequence_log_probs(token_lp, inputs["completion_mask"].bool())


def test_a_fully_masked_completion_leaves_its_group(tiny_model, tmp_path):
    """A truncated completion masked out (mask_truncated_completions) has sequence log-prob 0:
    left in, it would take p_old ~ 1 and silence its group. It must drop out of the group."""
    trainer = trl_trainer(tiny_model, tmp_path, mask_truncated_completions=True)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    completion_ids = torch.tensor([[8, 1], [9, 1], [8, 1], [7, 5], [5, 1], [9, 1], [4, 1], [3, 1]])
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[3] = 0  # truncated: masked out entirely
    rewards = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    inputs = group_batch(trainer, ["2+5=", "3+3="], completion_ids, completion_mask, rewards)
    loss = trainer._compute_loss(trainer.model, inputs)
    seq = sequence_log_probs_of(trainer, inputs).view(2, 4)
    first = tc.tpo_loss(seq[:1, :3], tc.tpo_target(seq[:1, :3].detach(), rewards[:1, :3]))
    second = tc.tpo_loss(seq[1:], tc.tpo_target(seq[1:].detach(), rewards[1:]))
    torch.testing.assert_close(loss, (first + second) / 2, atol=1e-5, rtol=1e-4)
    completion_mask[:4] = 0  # a group with nothing left adds 0
    inputs = group_batch(trainer, ["2+5=", "3+3="], completion_ids, completion_mask, rewards)
    torch.testing.assert_close(
        trainer._compute_loss(trainer.model, inputs), second / 2, atol=1e-5, rtol=1e-4
    )


def test_evaluation_groups_by_num_generations_eval(tiny_model, tmp_path):
    evaluation = dict(per_device_eval_batch_size=4, eval_strategy="steps", eval_steps=1)
    trainer = trl_trainer(tiny_model, tmp_path, num_generations_eval=2, **evaluation)
    assert trainer.num_generations == 4 and trainer.num_generations_eval == 2
    trainer.model.eval()
    completion_ids = torch.tensor([[8, 1], [9, 1], [5, 1], [6, 1]])
    rewards = torch.tensor([[1.0, 0], [0, 1]])  # two groups of two
    mask = torch.ones_like(completion_ids)
    inputs = group_batch(trainer, ["2+5=", "3+3="], completion_ids, mask, rewards)
    loss = trainer._compute_loss(trainer.model, inputs)
    with torch.no_grad():
        seq = sequence_log_probs_of(trainer, inputs).view(2, 2)
    expected = tc.tpo_loss(seq, tc.tpo_target(seq, rewards))
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="generations"):  # a group would be split
        trl_trainer(tiny_model, tmp_path, num_generations_eval=3, **evaluation)


@pytest.mark.parametrize(
    "option",
    [
        dict(loss_type="grpo"),
        dict(top_entropy_quantile=0.2),
        dict(off_policy_mask_threshold=0.5),
        dict(entropy_coef=0.01),
        dict(epsilon=0.3),
        dict(epsilon_high=0.28),
        dict(importance_sampling_level="sequence"),
        dict(top_p=0.9),  # sampling options: the completions would be drawn off-policy
        dict(top_k=20),
        dict(min_p=0.05),
        dict(repetition_penalty=1.1),
        dict(generation_kwargs={"top_p": 0.9}),
    ],
)
def test_grpo_options_tpo_does_not_use_are_refused_by_name(tiny_model, tmp_path, option):
    (name,) = option
    with pytest.raises(ValueError, match=f"does not use {name}="):
        trl_trainer(tiny_model, tmp_path, **option)


def test_vllm_needs_trls_importance_sampling_correction_off_and_a_grpo_config_is_checked_too(
    tiny_model, tmp_path
):
    """TPO's loss applies no vLLM/trainer ratio, so leaving TRL's correction on (its default)
    would be ignored silently; the check also runs on a plain GRPOConfig, before TRL loads
    the model."""
    from trl import GRPOConfig

    from tpo_core.llm.trl import TPOConfig, TPOTrainer

    with pytest.raises(ValueError, match="vllm_importance_sampling_correction=True"):
        TPOConfig(output_dir=str(tmp_path), use_vllm=True, use_cpu=True)
    fine = TPOConfig(
        output_dir=str(tmp_path),
        use_vllm=True,
        vllm_importance_sampling_correction=False,
        use_cpu=True,
    )
    assert fine.use_vllm and not fine.vllm_importance_sampling_correction
    grpo = GRPOConfig(output_dir=str(tmp_path), top_k=5, use_cpu=True)
    with pytest.raises(ValueError, match="does not use top_k=5"):
        TPOTrainer(model="no-such-model", reward_funcs=len, args=grpo)


def test_the_kl_metric_is_gathered_even_when_a_process_has_no_token_left(tiny_model, tmp_path):
    """With several GPUs every process must reach the KL's gather, or the others wait
    forever: a micro-batch whose completions are all masked still adds a (zero) KL."""
    trainer = trl_trainer(tiny_model, tmp_path, beta=0.1)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    rewards = torch.tensor([[1.0, 0, 1, 0]])
    completion_ids = torch.tensor([[8, 1], [9, 1], [8, 1], [7, 1]])
    inputs = group_batch(
        trainer, ["2+5="], completion_ids, torch.zeros_like(completion_ids), rewards
    )
    inputs["ref_per_token_logps"] = torch.zeros(completion_ids.shape)
    gathered = []
    real = trainer.accelerator.gather
    trainer.accelerator.gather = lambda x: gathered.append(x) or real(x)
    loss = trainer._compute_loss(trainer.model, inputs)
    assert len(gathered) == 1 and float(gathered[0]) == 0.0 and torch.isfinite(loss)


def test_eta_is_a_config_field_the_argument_parser_sets(tiny_model, tmp_path):
    from transformers import HfArgumentParser

    from tpo_core.llm.trl import TPOConfig, TPOTrainer

    (args,) = HfArgumentParser(TPOConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--eta", "0.25", "--use_cpu", "true"]
    )
    assert args.eta == 0.25
    trainer = trl_trainer(tiny_model, tmp_path, eta=0.25)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    completion_ids = torch.tensor([[8, 1], [9, 1], [8, 1], [7, 1]])
    rewards = torch.tensor([[1.0, 0, 0, 0]])
    mask = torch.ones_like(completion_ids)
    inputs = group_batch(trainer, ["2+5="], completion_ids, mask, rewards)
    loss = trainer._compute_loss(trainer.model, inputs)
    seq = sequence_log_probs_of(trainer, inputs).view(1, 4)
    expected = tc.tpo_loss(seq, tc.tpo_target(seq.detach(), rewards, eta=0.25))
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(expected, tc.tpo_loss(seq, tc.tpo_target(seq.detach(), rewards)))
    with pytest.raises(ValueError, match="eta"):
        TPOConfig(output_dir=str(tmp_path), eta=0.0, use_cpu=True)
    assert "Triple Preference Optimization" in TPOTrainer.__doc__
