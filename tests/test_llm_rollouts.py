"""Rollouts: completions sampled from the policy the loss trains, their end tokens, prompts,
the per-token log-probs of the training forward, and generation with the LoRA merged."""

import math
import random
import shutil

import pytest
import torch

from tpo_core import llm
from tpo_core.llm import RLVRConfig
from tpo_core.llm import model as policy_module
from tpo_core.llm.verifiers import sum_problem

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def opinionated_model(tiny_model, tmp_path_factory):
    """The tiny model with a saved generation_config like Qwen3's (temperature 0.6, top-p 0.95)
    and Qwen2.5's (a repetition penalty), plus top-k and two options that reshape the logits
    without being sampling options: a banned token and an end token forced at the length limit."""
    from transformers import GenerationConfig

    path = tmp_path_factory.mktemp("opinionated") / "sums"
    shutil.copytree(tiny_model, path)
    GenerationConfig(
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
        repetition_penalty=1.3,
        top_k=5,
        bad_words_ids=[[4]],
        forced_eos_token_id=1,
        pad_token_id=0,
        eos_token_id=1,
    ).save_pretrained(path)
    return path


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


def sampler_and_trainer_log_probs(path, explicit: bool, lora_rank: int = 0):
    """The sampler's own log-probs of the tokens it drew, and the training forward's."""
    config = config_for(path, lora_rank=lora_rank)
    tokenizer, model = llm.load_policy(config)
    problems = [sum_problem(random.Random(s)) for s in range(3)]
    if explicit:
        rollout = llm.sample_rollout(model, tokenizer, problems, config, 0, sampler_scores=True)
        sampler = rollout.sampler_log_probs
    else:  # the options one would pass by hand: the model's own config fills in the rest
        prompts = llm.format_prompts(tokenizer, problems, False)
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(0)
        out = model.generate(
            **enc,
            do_sample=True,
            top_p=1.0,
            max_new_tokens=3,
            num_return_sequences=4,
            output_scores=True,
            return_dict_in_generate=True,
        )
        completion = out.sequences[:, enc["input_ids"].shape[1] :]
        sampler = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], 1)
        sampler = sampler.gather(-1, completion[..., None])[..., 0]  # (G*K, T)
        mask = llm.completion_mask(completion, llm.end_token_ids(model, tokenizer))
        attention = torch.cat([enc["attention_mask"].repeat_interleave(4, 0), mask.long()], 1)
        rollout = llm.Rollout(
            problems,
            prompts,
            [""] * len(completion),
            torch.zeros(3, 4),
            out.sequences,
            attention,
            mask,
        )
    mask = rollout.completion_mask
    with torch.no_grad():
        trainer = llm.token_log_probs(model, rollout, slice(0, len(mask)), 1.0)
    return sampler[mask], trainer[mask]


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_rollouts_are_sampled_from_the_policy_the_loss_trains(opinionated_model, lora_rank):
    sampler, trainer = sampler_and_trainer_log_probs(opinionated_model, True, lora_rank)
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


def test_completion_mask_stops_after_the_first_eos():
    ids = torch.tensor([[5, 1, 0, 0], [5, 6, 7, 8], [1, 5, 1, 0]])
    assert llm.completion_mask(ids, eos_id=1).tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]


def test_thinking_is_a_setting_that_reaches_the_chat_template(tiny_model):
    tokenizer, _ = llm.load_policy(config_for(tiny_model))
    tokenizer.chat_template = (
        "{% if enable_thinking %}<think>{% endif %}{{ messages[0]['content'] }}"
    )
    problems = [sum_problem(random.Random(0))]
    off = llm.format_prompts(tokenizer, problems, True)
    on = llm.format_prompts(tokenizer, problems, True, enable_thinking=True)
    assert on == ["<think>" + off[0]] and RLVRConfig(model="m").enable_thinking is False


def test_completion_log_probs_equal_the_full_log_softmax(tiny_model):
    config = config_for(tiny_model, max_new_tokens=3)
    tokenizer, model = llm.load_policy(config)
    rollout = llm.sample_rollout(
        model,
        tokenizer,
        [sum_problem(random.Random(1)) for _ in range(3)],
        config,
        seed=0,
    )
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
        torch.testing.assert_close(
            llm.token_log_probs(model, rollout, part, 0.7)[mask[part]],
            naive[part][mask[part]],
            atol=1e-5,
            rtol=1e-5,
        )


def test_generating_with_the_lora_merged_samples_the_same_policy(tiny_model):

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


def test_merging_and_unmerging_the_lora_leaves_a_bf16_base_bit_identical(tiny_model, monkeypatch):
    """(W + BA) - BA is not W in bf16: the merge must give the frozen base back exactly."""
    monkeypatch.setattr(policy_module, "autocast_dtype", lambda device: torch.bfloat16)
    config = config_for(tiny_model, lora_rank=4, merge_lora_for_generation=True)
    tokenizer, model = llm.load_policy(config)  # the base in bf16, as on a GPU
    with torch.no_grad():  # a trained-looking adapter: B is 0 when peft creates it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    assert base and all(p.dtype == torch.bfloat16 for p in base.values())
    problems = [sum_problem(random.Random(s)) for s in range(3)]
    for seed in range(3):  # three steps' worth of generation
        llm.sample_rollout(model, tokenizer, problems, config, seed=seed)
    after = dict(model.named_parameters())
    assert all(torch.equal(base[n], after[n]) for n in base)


def test_the_loading_bar_is_hidden_on_request_and_then_restored(tiny_model, capfd):
    from transformers.utils import logging as hf_logging

    llm.load_policy(config_for(tiny_model), progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    llm.load_policy(config_for(tiny_model))
    assert "Loading weights" in capfd.readouterr().err


def test_a_float16_overflow_in_one_layer_is_drawn_again_in_bfloat16_and_recorded(
    tiny_model, monkeypatch
):
    """A T4 samples in float16, whose range a bfloat16-trained model can exceed in one layer:
    its logits turn NaN and torch.multinomial would crash. Emulated on a CPU: one layer
    overflows whenever float16 autocast is on. The batch is drawn again with the same seed
    in bfloat16 (float32's range), the draw is the one the model gives without the overflow,
    the rollout and the run's history say it happened, and the log-probs are widened too."""
    from tpo_core.llm import rollouts, train

    config = RLVRConfig(
        model=str(tiny_model), task="sums", k=4, prompts_per_step=2, steps=1,
        max_new_tokens=3, chat_template=False, device="cpu", lora_rank=0,
    )  # fmt: skip
    tokenizer, model = llm.load_policy(config, progress=False)
    problems = [sum_problem(random.Random(s)) for s in range(2)]
    clean = llm.sample_rollout(model, tokenizer, problems, config, seed=3)

    def float16_overflow(module, inputs, output):
        on = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16
        return output * math.inf if on else output

    model.model.layers[0].mlp.register_forward_hook(float16_overflow)
    half = lambda device: torch.autocast("cpu", dtype=torch.float16)  # noqa: E731
    monkeypatch.setattr(rollouts, "autocast", half)
    with pytest.raises(rollouts.NonFiniteLogits), half("cpu"):  # what a T4 would hit
        rollouts.generate_exactly(model, *clean_inputs(model, tokenizer, clean, config))
    redrawn = llm.sample_rollout(model, tokenizer, problems, config, seed=3)
    assert redrawn.overflowed and not clean.overflowed
    assert redrawn.completions == clean.completions
    assert torch.isfinite(rollouts.frozen_log_probs(model, redrawn, config)).all()
    assert train.rollout_metrics(redrawn)["overflowed"] == 1.0
    model.model.layers[1].mlp.register_forward_hook(lambda m, i, output: output * math.nan)
    with pytest.raises(ValueError, match="not finite in bfloat16"):  # no wider range to try
        llm.sample_rollout(model, tokenizer, problems, config, seed=3)


def clean_inputs(model, tokenizer, rollout, config):
    prompts = llm.format_prompts(tokenizer, rollout.problems, config.chat_template)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc, llm.sampling_config(model, tokenizer, config)
