"""The run size for the hardware: a tiny local model on a CPU, LoRA settings on GPUs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# torch reports memory in GiB: a 40 GB A100 shows 39.4, an 80 GB card 79.2, a T4 14.6.
SMALL_GPU_GIB = 35


@dataclass(frozen=True)
class Scale:
    name: str
    reason: str
    settings: dict


def choose_scale(gpu_memory_gb: float | None = None, tiny_model: str | None = None) -> Scale:
    """The run size for the hardware: GPU memory in GB (None: no GPU, measured if omitted).

    * no GPU: the tiny local model on single-digit sums (CI, Binder, laptops);
    * a small GPU (under 35 GiB, e.g. Colab's T4 at 15 GiB, an L4, a 32 GB V100):
      Qwen2.5-0.5B-Instruct with LoRA on GSM8K;
    * a large GPU: Qwen3-1.7B with LoRA rank 32 and KL 1e-3 on GSM8K, the paper's setting.
    """
    if gpu_memory_gb is None and torch.cuda.is_available():
        gpu_memory_gb = torch.cuda.get_device_properties(0).total_memory / 2**30
    if not gpu_memory_gb:
        if tiny_model is None:
            raise ValueError("no GPU: pass tiny_model, a folder from build_tiny_sums_model")
        return Scale(
            "cpu",
            "no GPU found: a tiny local model learns single-digit sums on the CPU",
            dict(
                model=str(tiny_model),
                task="sums",
                k=8,
                prompts_per_step=16,
                steps=80,
                lr=1e-3,
                max_new_tokens=2,
                chat_template=False,
                device="cpu",
                track_kl=True,
            ),  # the KL pass costs little on a tiny model
        )
    if gpu_memory_gb < SMALL_GPU_GIB:
        return Scale(
            "small-gpu",
            f"a {gpu_memory_gb:.0f} GB GPU: a 0.5B instruct model with LoRA fits",
            dict(
                model="Qwen/Qwen2.5-0.5B-Instruct",
                task="gsm8k",
                k=8,
                prompts_per_step=8,
                steps=100,
                lr=1e-5,
                max_new_tokens=256,
                lora_rank=32,
                beta=1e-3,
                micro_batch_groups=1,
                gradient_checkpointing=True,
            ),
        )
    return Scale(
        "large-gpu",
        f"a {gpu_memory_gb:.0f} GB GPU: the paper's 1.7B model, K = 16, 16 prompts per step",
        dict(
            model="Qwen/Qwen3-1.7B",
            task="gsm8k",
            k=16,
            prompts_per_step=16,
            steps=200,
            lr=1e-5,
            max_new_tokens=512,
            lora_rank=32,
            beta=1e-3,
            micro_batch_groups=2,
            gradient_checkpointing=True,
        ),
    )
