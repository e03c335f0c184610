"""Everything GPU-related, checked in one run (under 10 minutes on one H100-class GPU, no internet).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --cpu-smoke --out smoke.json   # toy sizes, on the CPU

Models are built locally from their published dimensions with random weights
(as ``llm_step.py`` does), so nothing is downloaded; rewards are coin flips,
so groups are informative and the losses do their full work. Every check, and
every measurement inside one, is guarded: an out-of-memory error is recorded
as that measurement's result and the others go on. Between checks the
allocator is emptied and the peak reset. In order:

1. ``large``: the paper's setting (Qwen3-1.7B's dimensions and blocks, LoRA r32,
   checkpointing, K = 16 x 16 prompts x 512 tokens) at the micro-batch
   ``choose_scale`` fits to this card: TPO and GRPO, generation and training
   time and peak memory apart, each next to the memory model's prediction;
2. ``small_t4``: the small setting (Qwen2.5-0.5B's dimensions) in a T4's 15 GiB,
   float16 with loss scaling (the precision a T4 gets): time, peaks, dropped updates;
3. ``session``: the class-session setting, a few steps, against its predicted step time;
4. ``log_probs``: the chunked completion log-probs against the model's whole
   logits (the model in train mode, checkpointing on): time, peak, largest difference;
5. ``generation``: tokens/s with the LoRA adapter merged and unmerged, and the
   bf16 base weights bit-identical after the merges;
6. ``sampler``: a peaked model whose saved generation config says temperature
   0.6 and top-p 0.95: the sampler's own log-probs against the training forward's;
7. ``overflow_guard``: a float16 overflow forced into one layer, drawn again in bfloat16;
8. ``resume``: two steps straight through against one step, a checkpoint and a resumed one;
9. ``trl``: two steps of ``TPOTrainer`` with LoRA, gradient accumulation, two iterations;
10. ``notebook_flow``: notebook 06's first step, two runs kept alive, a group refitted;
11. ``token_engine``: the token tasks' seconds per episode, one seed and 20 replicas.

One JSON file holds every figure (null where a figure needs a GPU and there is
none), the library versions and the provenance.
"""

import argparse
import dataclasses
import gc
import json
import math
import random
import shutil
import string
import sys
import tempfile
import time
import zlib
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from llm_step import QWEN25_05B, TOY, build_model, coin_flip_rewards, qwen2_config  # noqa: E402

from tpo_core import llm  # noqa: E402
from tpo_core.llm import memory, rollouts  # noqa: E402
from tpo_core.llm import model as policy  # noqa: E402
from tpo_core.llm.scale import gpu_memory_gib  # noqa: E402
from tpo_core.tokens.grid import provenance  # noqa: E402
from tpo_core.tokens.replicas import train_replicas  # noqa: E402
from tpo_core.tokens.train import TrainConfig, train  # noqa: E402

# Qwen3-1.7B's dimensions, built in Qwen3 blocks (q/k norm): the paper's model, random weights
QWEN3_17B = qwen2_config(memory.MODEL_SHAPES["Qwen/Qwen3-1.7B"], 40960)
T4_GIB = next(card.memory_gib for card in memory.CARDS if card.name == "T4")
LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "tpo-core")


def versions() -> dict:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    found["cuda"] = torch.version.cuda
    return found


@contextmanager
def measured(device: str):
    """Wall time and peak GPU memory, allocated and reserved by the caching allocator (GiB,
    null on a CPU), of the block, in the yielded dict."""
    out = dict(peak_gib=None, peak_reserved_gib=None)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    yield out
    if device == "cuda":
        torch.cuda.synchronize()
        out["peak_gib"] = torch.cuda.max_memory_allocated() / memory.GIB
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / memory.GIB
    out["seconds"] = time.perf_counter() - start


def guarded(measure) -> dict:
    """``measure()``, or its out-of-memory error as the result: one figure lost, not the rest."""
    try:
        return measure()
    except torch.OutOfMemoryError as err:
        return dict(out_of_memory=str(err).splitlines()[0])
    finally:
        release()


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def rlvr_config(folder, device, **settings):
    base = dict(
        model=str(folder),
        task="arithmetic",
        steps=2,
        lr=1e-6,
        chat_template=False,
        device=device,
        lora_rank=32,
        beta=1e-3,
        gradient_checkpointing=True,
    )
    return llm.RLVRConfig(**(base | settings))


def predicted(folder, config) -> dict:
    """The memory model's peaks for ``config`` (GiB), from the model's own config."""
    from transformers import AutoConfig

    shape = memory.ModelShape.from_config(AutoConfig.from_pretrained(folder))
    settings = dataclasses.asdict(config)
    prompt_tokens = memory.PROMPT_TOKENS[config.task]
    half = config.device == "cuda"
    return dict(
        predicted_generation_gib=memory.generation_peak_gib(shape, settings, prompt_tokens, half),
        predicted_training_gib=memory.training_peak_gib(shape, settings, prompt_tokens, half),
    )


def steps(config) -> dict:
    """Per step (after the first): generation and training seconds and peaks, and the skips."""
    history = llm.rlvr_train(config, progress=False).history
    later = slice(1, None) if len(history["seconds"]) > 1 else slice(None)

    def mean(name):
        values = [v for v in history[name][later] if v == v]  # NaN (a CPU's peaks) left out
        return sum(values) / len(values) if values else None

    train_seconds = [
        s - g for s, g in zip(history["seconds"], history["generate_seconds"], strict=True)
    ]
    return dict(
        seconds_per_step=mean("seconds"),
        generate_seconds=mean("generate_seconds"),
        train_seconds=sum(train_seconds[later]) / len(train_seconds[later]),
        generate_peak_gib=mean("generate_peak_gpu_gib"),
        train_peak_gib=mean("train_peak_gpu_gib"),
        generation_tokens_per_second=mean("tokens_per_second"),
        truncated=history["truncated"][-1],
        skipped=sum(history["skipped"]),
        overflowed_steps=sum(history["overflowed"]),  # float16 sampling drawn again
    )


def check_large(folder, device, smoke) -> dict:
    settings = llm.choose_scale(40.0 if smoke else gpu_memory_gib()).settings
    size = dict(k=4, prompts_per_step=2, max_new_tokens=8) if smoke else {}
    keep = ("k", "prompts_per_step", "max_new_tokens", "micro_batch_groups", "log_prob_chunk")
    chosen = {k: v for k, v in settings.items() if k in keep} | size
    out = dict(micro_batch_groups=chosen["micro_batch_groups"])
    for loss in ("tpo", "grpo_per_token"):
        config = rlvr_config(folder, device, method=loss, **chosen)
        out[loss] = guarded(lambda c=config: steps(c) | predicted(folder, c))
    tpo, grpo = out["tpo"].get("train_seconds"), out["grpo_per_token"].get("train_seconds")
    out["tpo_over_grpo_train_seconds"] = tpo / grpo if tpo and grpo else None
    return out


def check_small_t4(folder, device, smoke) -> dict:
    size = dict(k=4, prompts_per_step=2, max_new_tokens=8) if smoke else {}
    settings = llm.choose_scale(T4_GIB).settings
    keep = ("k", "prompts_per_step", "max_new_tokens", "micro_batch_groups")
    config = rlvr_config(folder, device, **({k: settings[k] for k in keep} | size))
    real = policy.autocast_dtype
    if device == "cuda":
        torch.cuda.set_per_process_memory_fraction(min(1.0, T4_GIB / gpu_memory_gib()))
        policy.autocast_dtype = lambda d: torch.float16 if d.type == "cuda" else None
    try:
        return guarded(lambda: steps(config) | predicted(folder, config)) | dict(
            precision="float16 with loss scaling" if device == "cuda" else "float32 (CPU)"
        )
    finally:
        policy.autocast_dtype = real
        if device == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0)


def check_session(folder, device, smoke) -> dict:
    scale = llm.choose_scale(T4_GIB, session=True)
    settings = scale.run_settings("tpo") | dict(steps=3)
    keep = ("k", "prompts_per_step", "max_new_tokens", "micro_batch_groups", "lr", "steps")
    size = dict(k=4, prompts_per_step=2, max_new_tokens=8) if smoke else {}
    config = rlvr_config(folder, device, **({k: settings[k] for k in keep} | size))
    measured_steps = guarded(lambda: steps(config))
    if smoke:  # a prediction needs a card
        return dict(measured=measured_steps, card=None, predicted_step=None)
    card = llm.card_for(gpu_memory_gib(), torch.cuda.get_device_name())
    shape = memory.MODEL_SHAPES[settings["model"]]
    prediction = memory.step_seconds(shape, settings, memory.PROMPT_TOKENS[settings["task"]], card)
    return dict(measured=measured_steps, card=card.name, predicted_step=prediction)


def a_rollout(folder, device, smoke, **changes):
    size = (
        dict(k=4, prompts_per_step=2, max_new_tokens=8)
        if smoke
        else dict(k=16, prompts_per_step=8, max_new_tokens=256)
    )
    config = rlvr_config(folder, device, **(size | changes))
    tokenizer, model = llm.load_policy(config)
    rng = random.Random(0)
    problems = [
        llm.verifiers.Problem(
            "".join(rng.choices(string.ascii_letters, k=rng.randint(3, 40))), "0", "arithmetic"
        )
        for _ in range(config.prompts_per_step)
    ]  # mixed prompt lengths: left padding
    rollout = llm.sample_rollout(model, tokenizer, problems, config, seed=0)
    return config, tokenizer, model, problems, rollout


def check_log_probs(folder, device, smoke) -> dict:
    """Chunked against whole logits at 32 rows, where the whole logits fit (at 128 rows of
    256 tokens over Qwen3's vocabulary they, their float32 copies and gradients need about
    74 GiB)."""
    fitting = {} if smoke else dict(k=8, prompts_per_step=4)
    config, _, model, _, rollout = a_rollout(folder, device, smoke, **fitting)
    model.train()  # gradient checkpointing runs only in train mode
    rows = slice(0, len(rollout.completions))
    out, values = {}, {}
    for name, chunk in (("chunked", config.log_prob_chunk), ("whole_logits", 0)):

        def run(chunk=chunk, name=name):
            model.zero_grad(set_to_none=True)
            with measured(device) as m:
                log_probs = llm.token_log_probs(model, rollout, rows, 1.0, chunk)
                log_probs.sum().backward()
            values[name] = log_probs.detach()
            return m

        out[name] = guarded(run)
    if len(values) == 2:
        mask = rollout.completion_mask
        diff = (values["chunked"] - values["whole_logits"])[mask].abs().max().item()
        out["largest_difference"] = diff
    else:
        out["largest_difference"] = None
    return out


def check_generation(folder, device, smoke) -> dict:
    config, tokenizer, model, problems, _ = a_rollout(folder, device, smoke)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    out = {}
    for merged in (False, True):
        merging = dataclasses.replace(config, merge_lora_for_generation=merged)

        def run(merging=merging):
            with measured(device) as m:
                rollout = llm.sample_rollout(model, tokenizer, problems, merging, seed=1)
            return dict(tokens_per_second=int(rollout.completion_mask.sum()) / m["seconds"], **m)

        out["merged" if merged else "unmerged"] = guarded(run)
    after = dict(model.named_parameters())
    out["base_weights_identical_after_merging"] = all(torch.equal(base[n], after[n]) for n in base)
    out["base_dtype"] = str(next(iter(base.values())).dtype)
    return out


def peaked(folder: Path) -> Path:
    """A copy of the model made confident (its final norm scaled up until the likeliest token
    holds about half the mass, so top-p and temperature 0.6 reshape the distribution), with a
    saved generation config like Qwen3's: temperature 0.6, top-p 0.95, top-k 20."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = folder.parent / "peaked"
    shutil.copytree(folder, out, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(out)
    vocab, norm = model.config.vocab_size, model.get_decoder().norm.weight
    ids = torch.randint(3, vocab, (4, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        while torch.softmax(model(input_ids=ids).logits, -1).amax(-1).mean() < 0.4:
            norm.mul_(2.0)
    model.save_pretrained(out)
    opinions = dict(do_sample=True, temperature=0.6, top_p=0.95, top_k=20)
    GenerationConfig(**opinions, pad_token_id=0, eos_token_id=1).save_pretrained(out)
    return out


def check_sampler(folder, device, smoke) -> dict:
    config, tokenizer, model, problems, _ = a_rollout(peaked(folder), device, smoke)
    rollout = llm.sample_rollout(model, tokenizer, problems, config, 0, sampler_scores=True)
    with torch.no_grad():
        trainer = llm.token_log_probs(model, rollout, slice(0, len(rollout.completions)), 1.0)
    mask = rollout.completion_mask
    diff = (rollout.sampler_log_probs - trainer)[mask].abs()
    return dict(
        largest_difference=diff.max().item(),
        mean_difference=diff.mean().item(),
        mean_log_prob=trainer[mask].mean().item(),  # well below 0: the model is not one-hot
        saved_generation_config=dict(temperature=0.6, top_p=0.95, top_k=20),
        prompt_lengths=sorted({len(p) for p in rollout.prompts}),
    )


def check_overflow_guard(folder, device, smoke) -> dict:
    """A float16 overflow forced into one layer (its MLP's output scaled so that its largest
    value is 1e5: past float16's 65504, well inside bfloat16's range, whatever the weights), in
    float16 as a T4 samples: the batch must be drawn again in bfloat16 and give finite
    log-probs; the seconds of a clean and a redrawn batch."""
    config, tokenizer, model, problems, _ = a_rollout(folder, device, smoke)
    real = rollouts.autocast
    rollouts.autocast = lambda d: torch.autocast(d.type, dtype=torch.float16)
    try:
        with measured(device) as clean:
            plain = llm.sample_rollout(model, tokenizer, problems, config, seed=2)
        layer = model.get_base_model().model.layers[0].mlp

        def past_float16(module, inputs, output):
            return output * (1e5 / max(output.abs().amax().item(), 1e-30))

        hook = layer.register_forward_hook(past_float16)
        with measured(device) as redrawn:
            rollout = llm.sample_rollout(model, tokenizer, problems, config, seed=2)
        rows = slice(0, len(rollout.completions))
        with torch.no_grad():
            log_probs = llm.token_log_probs(model, rollout, rows, config.temperature)
        hook.remove()
    finally:
        rollouts.autocast = real
    return dict(
        overflowed_without_the_fault=plain.overflowed,
        overflowed=rollout.overflowed,
        finite_log_probs=bool(torch.isfinite(log_probs).all()),
        clean_seconds=clean["seconds"],
        redrawn_seconds=redrawn["seconds"],
    )


def check_resume(folder, device, smoke) -> dict:
    """Two steps straight through against one step, a checkpoint, and the second step in a
    fresh process's way (the model loaded again, ``resume=True``): the largest differences in
    the trained weights and in the per-step metrics (0 on a CPU; a GPU's kernels may round
    differently). Rewards come from each completion's text, so both runs score alike."""
    real = rollouts.reward
    rollouts.reward = lambda completion, problem: float(zlib.crc32(completion.encode()) % 10 < 3)
    size = (
        dict(k=4, prompts_per_step=2, max_new_tokens=8) if smoke else dict(k=8, max_new_tokens=64)
    )
    runs = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, first in (("straight", 2), ("resumed", 1)):
                folder_of_run = dict(checkpoint_dir=f"{tmp}/{name}", checkpoint_every=1)
                settings = size | dict(steps=first) | folder_of_run
                config = rlvr_config(folder, device, **settings)
                result = llm.rlvr_train(config, progress=False)
                if first == 1:
                    del result
                    release()
                    config = dataclasses.replace(config, steps=2)
                    result = llm.rlvr_train(config, progress=False, resume=True)
                runs[name] = result
    finally:
        rollouts.reward = real
    straight, resumed = (
        {n: p.detach().float().cpu() for n, p in r.model.named_parameters() if p.requires_grad}
        for r in runs.values()
    )
    metrics = ("reward", "grad_norm")
    return dict(
        largest_weight_difference=max(
            (straight[n] - resumed[n]).abs().max().item() for n in straight
        ),
        largest_metric_difference={
            m: max(
                abs(a - b)
                for a, b in zip(
                    runs["straight"].history[m], runs["resumed"].history[m], strict=True
                )
            )
            for m in metrics
        },
        steps=len(runs["resumed"].history["reward"]),
    )


def check_trl(folder, device, smoke) -> dict:
    """Two optimiser steps of ``TPOTrainer`` with LoRA, two micro-batches accumulated per
    step and two passes over each generated batch (``num_iterations=2``): time, peaks, the
    losses finite and the adapter moved. Rewards come from each completion's text."""
    from datasets import Dataset
    from peft import LoraConfig

    from tpo_core.llm.trl import TPOConfig, TPOTrainer

    rng = random.Random(0)
    prompts = ["".join(rng.choices(string.ascii_letters, k=rng.randint(3, 40))) for _ in range(32)]
    args = TPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=8 if smoke else 16,
        num_generations=4 if smoke else 8,
        max_completion_length=8 if smoke else 128,
        gradient_accumulation_steps=2,
        num_iterations=2,
        max_steps=2,
        learning_rate=1e-4,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=device == "cpu",
        bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
        seed=0,
    )
    trainer = TPOTrainer(
        model=str(folder),
        reward_funcs=lambda completions, **_: [
            float(zlib.crc32(str(c).encode()) % 10 < 3) for c in completions
        ],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    with measured(device) as m:
        trainer.train()
    after = dict(trainer.model.named_parameters())
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return m | dict(
        steps=trainer.state.global_step,
        losses_finite=bool(losses) and all(math.isfinite(v) for v in losses),
        adapter_moved=any(not torch.equal(b, after[n].detach()) for n, b in before.items()),
    )


def check_notebook_flow(folder, device, smoke) -> dict:
    """Notebook 06's cells on one card, in its order: the first step of each loss on one batch
    of the starting model, both runs (with an evaluation each) kept alive as the notebook
    keeps them, then one mixed group refitted by each loss. Time and peaks of each part."""
    size = dict(k=4, prompts_per_step=2, max_new_tokens=8) if smoke else dict(max_new_tokens=64)
    config = rlvr_config(folder, device, **size, eval_every=2, eval_problems=4)
    tokenizer, start = llm.load_policy(config)
    problems = [llm.verifiers.Problem("abc" * (i + 1), "0", "arithmetic") for i in range(4)]
    out = {}
    with measured(device) as out["first_step"]:
        batch = llm.sample_rollout(start, tokenizer, problems[: config.prompts_per_step], config, 0)
        for method in llm.COMPARISON:
            llm.first_step(start, batch, dataclasses.replace(config, method=method))
    runs = {}
    with measured(device) as out["runs"]:
        for method in llm.COMPARISON:
            run_config = dataclasses.replace(config, method=method)
            policy = (tokenizer, llm.policy_copy(start))
            runs[method] = llm.rlvr_train(run_config, progress=False, policy=policy)
    with measured(device) as out["replay"]:
        tpo = runs["tpo"]
        rollout, group = llm.mixed_group(tpo.model, tokenizer, tpo.last_rollout, config)
        for method in llm.COMPARISON:
            fit_config = dataclasses.replace(config, method=method)
            llm.replay_group(tpo.model, rollout, group, fit_config, 4)
    out["evaluations"] = {m: len(r.evaluations) for m, r in runs.items()}
    return out


def check_token_engine(device, smoke) -> dict:
    settings = dict(
        task="reverse_copy",
        reward="terminal",
        length=3 if smoke else 7,
        vocab=2,
        batch=8 if smoke else 100,
        k=4 if smoke else 8,
        episodes=3 if smoke else 30,
        device=device,
    )
    config = TrainConfig(**settings)
    replicas = 2 if smoke else 20
    one = train(config, progress=False).seconds_per_episode
    many = train_replicas(config, list(range(replicas)), progress=False)[0].seconds_per_episode
    return dict(
        one_seed_seconds_per_episode=one,
        replicas=replicas,
        replicas_seconds_per_episode=many,
        throughput_vs_one_seed=one * replicas / many,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every check at toy size, CPU")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    args = parser.parse_args()
    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        parser.exit(2, "error: no CUDA GPU here; use --cpu-smoke to check the script on a CPU\n")
    rollouts.reward = coin_flip_rewards(0.3, seed=0)  # a random model never answers right
    tmp = Path(tempfile.mkdtemp())
    large = build_model(tmp / "large", TOY if smoke else QWEN3_17B, "qwen3")
    small = build_model(tmp / "small", TOY if smoke else QWEN25_05B)
    report = dict(
        provenance=provenance(sys.argv[1:]) | dict(libraries=versions()),
        smoke=smoke,
        device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
    )
    checks = dict(
        large=lambda: check_large(large, device, smoke),
        small_t4=lambda: check_small_t4(small, device, smoke),
        session=lambda: check_session(small, device, smoke),
        log_probs=lambda: check_log_probs(large, device, smoke),
        generation=lambda: check_generation(small, device, smoke),
        sampler=lambda: check_sampler(small, device, smoke),
        overflow_guard=lambda: check_overflow_guard(small, device, smoke),
        resume=lambda: check_resume(small, device, smoke),
        trl=lambda: check_trl(small, device, smoke),
        notebook_flow=lambda: check_notebook_flow(small, device, smoke),
        token_engine=lambda: check_token_engine(device, smoke),
    )
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            report[name] = guarded(check)
        except Exception as err:  # one failed check must not hide the others' figures
            report[name] = dict(error=f"{type(err).__name__}: {err}")
        release()
        report[name]["check_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {json.dumps(report[name])}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))  # what is done survives a timeout
    return 1 if any("error" in report[name] for name in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
