"""The LLM loop samples on-policy, weighs tokens over the whole step and picks the card's
precision: each checked on the CPU with the tiny model."""

import math
import shutil

import pytest
import torch

import tpo_core as tc
from tpo_core import llm
from tpo_core.llm import RLVRConfig
from tpo_core.llm.verifiers import sum_problem

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return llm.build_tiny_sums_model(tmp_path_factory.mktemp("tiny") / "sums", warmup_steps=30)


@pytest.fixture(scope="module")
def opinionated_model(tiny_model, tmp_path_factory):
    """The tiny model with a generation_config like Qwen's: a repetition penalty and top-k."""
    from transformers import GenerationConfig

    path = tmp_path_factory.mktemp("opinionated") / "sums"
    shutil.copytree(tiny_model, path)
    GenerationConfig(do_sample=True, repetition_penalty=1.3, top_k=5, pad_token_id=0,
                     eos_token_id=1).save_pretrained(path)  # fmt: skip
    return path


def config_for(path, **changes):
    settings = dict(model=str(path), task="sums", k=4, prompts_per_step=3, steps=1, lr=1e-3,
                    max_new_tokens=3, chat_template=False, device="cpu")  # fmt: skip
    return RLVRConfig(**(settings | changes))


def sampler_and_trainer_log_probs(path, explicit: bool):
    """The sampler's own log-probs of the tokens it drew, and the training forward's."""
    import random

    config = config_for(path)
    tokenizer, model = llm.load_policy(config)
    problems = [sum_problem(random.Random(s)) for s in range(3)]
    if explicit:
        rollout = llm.sample_rollout(model, tokenizer, problems, config, 0, sampler_scores=True)
        sampler = rollout.sampler_log_probs
    else:  # the options one would pass by hand: the model's own config fills in the rest
        prompts = llm.format_prompts(tokenizer, problems, False)
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(0)
        out = model.generate(**enc, do_sample=True, top_p=1.0, max_new_tokens=3,
                             num_return_sequences=4, output_scores=True,
                             return_dict_in_generate=True)  # fmt: skip
        completion = out.sequences[:, enc["input_ids"].shape[1] :]
        sampler = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], 1)
        sampler = sampler.gather(-1, completion[..., None])[..., 0]  # (G*K, T)
        mask = llm.completion_mask(completion, llm.end_token_ids(model, tokenizer))
        attention = torch.cat([enc["attention_mask"].repeat_interleave(4, 0), mask.long()], 1)
        rollout = llm.Rollout(problems, prompts, [""] * len(completion), torch.zeros(3, 4),
                              out.sequences, attention, mask)  # fmt: skip
    mask = rollout.completion_mask
    with torch.no_grad():
        trainer = llm.token_log_probs(model, rollout, slice(0, len(mask)), 1.0)
    return sampler[mask], trainer[mask]


def test_rollouts_are_sampled_from_the_policy_the_loss_trains(opinionated_model):
    sampler, trainer = sampler_and_trainer_log_probs(opinionated_model, explicit=True)
    torch.testing.assert_close(sampler, trainer, atol=1e-4, rtol=0)


def test_without_the_explicit_config_the_model_defaults_would_reshape_sampling(
    opinionated_model,
):
    sampler, trainer = sampler_and_trainer_log_probs(opinionated_model, explicit=False)
    assert (sampler - trainer).abs().max() > 1e-3  # what the explicit config prevents


def test_every_end_token_ends_a_completion(tiny_model):
    config = config_for(tiny_model)
    tokenizer, model = llm.load_policy(config)
    model.generation_config.eos_token_id = [1, 5]  # like Qwen's <|im_end|> and <|endoftext|>
    assert llm.end_token_ids(model, tokenizer) == [1, 5]
    ids = torch.tensor([[3, 5, 3, 1], [3, 3, 3, 3]])
    assert llm.completion_mask(ids, [1, 5]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_thinking_is_a_setting_that_reaches_the_chat_template(tiny_model):
    tokenizer, _ = llm.load_policy(config_for(tiny_model))
    tokenizer.chat_template = (
        "{% if enable_thinking %}<think>{% endif %}{{ messages[0]['content'] }}"
    )
    problems = [sum_problem(__import__("random").Random(0))]
    off = llm.format_prompts(tokenizer, problems, True)
    on = llm.format_prompts(tokenizer, problems, True, enable_thinking=True)
    assert on == ["<think>" + off[0]] and RLVRConfig(model="m").enable_thinking is False


def test_completion_log_probs_equal_the_full_log_softmax(tiny_model):
    config = config_for(tiny_model, max_new_tokens=3)
    tokenizer, model = llm.load_policy(config)
    rollout = llm.sample_rollout(model, tokenizer, [sum_problem(__import__("random").Random(1))
                                                    for _ in range(3)], config, seed=0)  # fmt: skip
    rows = slice(0, 12)
    new = llm.token_log_probs(model, rollout, rows, 0.7)
    logits = model(
        input_ids=rollout.input_ids,
        attention_mask=rollout.attention_mask,
        position_ids=(rollout.attention_mask.cumsum(-1) - 1).clamp(min=0),
    ).logits
    t = rollout.completion_mask.shape[1]
    naive = torch.log_softmax(logits[:, -t - 1 : -1].float() / 0.7, -1)
    naive = naive.gather(-1, rollout.input_ids[:, -t:, None])[..., 0]
    mask = rollout.completion_mask
    torch.testing.assert_close(new[mask], naive[mask], atol=1e-5, rtol=1e-5)
    for part in (slice(0, 4), slice(4, 8)):  # one group alone: its own, shorter extent
        torch.testing.assert_close(llm.token_log_probs(model, rollout, part, 0.7)[mask[part]],
                                   naive[part][mask[part]], atol=1e-5, rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("loss", ["tpo", "grpo_per_token"])
def test_step_loss_is_the_same_however_the_step_is_cut_with_unequal_lengths(loss):
    torch.manual_seed(0)
    g, k, t = 4, 3, 6
    new = -torch.rand(g * k, t, dtype=torch.float64, requires_grad=True)
    old, ref = new.detach() - 0.1 * torch.rand(g * k, t), -torch.rand(g * k, t)
    lengths = torch.randint(1, t + 1, (g * k,))
    mask = torch.arange(t)[None] < lengths[:, None]  # completions of unequal length
    rewards = torch.randint(0, 2, (g, k)).double()
    config = RLVRConfig(model="m", loss=loss, k=k, beta=0.1)
    whole = llm.rlvr_loss(config, new, old, rewards, mask, ref)
    totals = dict(total_groups=g, total_tokens=int(mask.sum()))
    for per in (1, 2, 3):
        parts = [slice(a, min(a + per, g)) for a in range(0, g, per)]
        summed = sum(llm.rlvr_loss(config, new[p.start * k : p.stop * k],
                                   old[p.start * k : p.stop * k], rewards[p],
                                   mask[p.start * k : p.stop * k], ref[p.start * k : p.stop * k],
                                   **totals) for p in parts)  # fmt: skip
        torch.testing.assert_close(summed, whole)
    # weighting each micro-batch's own token mean by its share of groups would not be
    by_groups = sum(llm.rlvr_loss(config, new[a * k : a * k + k], old[a * k : a * k + k],
                                  rewards[a : a + 1], mask[a * k : a * k + k],
                                  ref[a * k : a * k + k]) / g for a in range(g))  # fmt: skip
    assert not torch.allclose(by_groups, whole)


@pytest.mark.parametrize(("capability", "dtype"),
                         [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                          ((9, 0), torch.bfloat16)])  # fmt: skip
def test_precision_follows_the_card(monkeypatch, capability, dtype):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert llm.autocast_dtype(torch.device("cuda")) == dtype
    assert llm.autocast_dtype(torch.device("cpu")) is None


def test_choose_scale_reads_gib_as_torch_reports_them():
    assert llm.choose_scale(14.6).name == "small-gpu"  # a T4
    assert llm.choose_scale(39.4).name == "large-gpu"  # a 40 GB A100
    assert llm.choose_scale(31.7).name == "small-gpu"  # a 32 GB V100 (float16 only)


def test_history_has_truncation_length_and_throughput(tiny_model):
    result = llm.rlvr_train(config_for(tiny_model, max_new_tokens=1), progress=False)
    h = result.history
    assert h["truncated"][0] == pytest.approx(1 - result.last_rollout.ended.float().mean().item())
    assert h["truncated"][0] > 0  # one token leaves no room for the sum and its end token
    assert h["completion_length"][0] == pytest.approx(1.0)
    assert h["tokens_per_second"][0] > 0 and math.isnan(h["peak_gpu_gb"][0])
    assert h["skipped"] == [0] and math.isnan(h["kl"][0])  # no KL pass unless asked


def test_gpu_check_script_runs_every_check_at_toy_size(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    out = tmp_path / "smoke.json"
    proc = subprocess.run([sys.executable, str(script), "--cpu-smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = ("large", "small_t4", "log_probs", "generation", "sampler", "token_engine")
    assert all(name in report and "error" not in report[name] for name in checks)
    assert report["log_probs"]["largest_difference"] < 1e-4
    assert report["sampler"]["largest_difference"] < 1e-4
    assert len(report["sampler"]["prompt_lengths"]) > 1  # left padding of mixed lengths
    assert report["provenance"]["git_commit"]


def test_a_run_resumed_from_its_checkpoint_is_the_run_that_never_stopped(tiny_model, tmp_path):
    settings = dict(lora_rank=4, prompts_per_step=2, max_new_tokens=2, warmup_steps=2)
    straight = llm.rlvr_train(config_for(tiny_model, steps=4, **settings), progress=False)
    folder = str(tmp_path / "ckpt")
    first = config_for(tiny_model, steps=2, checkpoint_dir=folder, checkpoint_every=1, **settings)
    llm.rlvr_train(first, progress=False)
    assert (tmp_path / "ckpt" / llm.CHECKPOINT).exists() and (
        tmp_path / "ckpt" / "adapter"
    ).is_dir()
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
    result = llm.rlvr_train(config_for(tiny_model, steps=3, eval_every=2, eval_problems=5),
                            progress=False)  # fmt: skip
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


def test_generating_with_the_lora_merged_samples_the_same_policy(tiny_model):
    import random

    results = []
    for merge in (False, True):
        config = config_for(tiny_model, lora_rank=4, merge_lora_for_generation=merge)
        torch.manual_seed(0)  # the same LoRA initialisation both times
        tokenizer, model = llm.load_policy(config)
        with torch.no_grad():  # a trained-looking adapter: B is 0 when peft creates it
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
        problems = [sum_problem(random.Random(s)) for s in range(3)]
        rollout = llm.sample_rollout(model, tokenizer, problems, config, seed=0)
        results.append(
            (rollout.input_ids, llm.token_log_probs(model, rollout, slice(0, 12), 1.0).detach())
        )
    assert torch.equal(results[0][0], results[1][0])  # float32: the same samples
    torch.testing.assert_close(results[0][1], results[1][1])  # and the adapter back in place


def test_clipped_fraction_counts_the_tokens_whose_clip_is_active():
    old = torch.zeros(2, 3)
    new = torch.log(torch.tensor([[1.3, 1.1, 0.7], [0.7, 1.3, 1.0]]))
    advantages = torch.tensor([[1.0], [-1.0]])  # one per completion, on every token
    # active: 1.3 with A > 0, and 0.7 with A < 0; 0.7 with A > 0 and 1.3 with A < 0 are not
    assert float(tc.clipped_fraction(new, old, advantages)) == pytest.approx(2 / 6)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(tc.clipped_fraction(new, old, advantages, mask=mask)) == pytest.approx(2 / 3)


def test_history_has_the_clipped_share_of_grpo_tokens(tiny_model):
    one = llm.rlvr_train(config_for(tiny_model, loss="grpo_per_token"), progress=False)
    assert one.history["clipped"] == [0.0]  # a single epoch: every ratio is 1
    many = llm.rlvr_train(
        config_for(tiny_model, loss="grpo_per_token", epochs=6, lr=0.05), progress=False
    )
    assert 0 < many.history["clipped"][0] < 1
    tpo = llm.rlvr_train(config_for(tiny_model), progress=False)
    assert math.isnan(tpo.history["clipped"][0])  # TPO has no clip
