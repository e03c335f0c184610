"""Checkpoints of an RLVR run: everything a resumed run needs to continue exactly."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

CHECKPOINT = "state.pt"
# settings that do not change a run's trajectory: a run resumes across changes to them. The
# last four change only where and in which order it is computed (rounding, not the method):
# a run resumed on another card, whose memory gives another micro-batch, goes on in its folder.
RESUMABLE_ACROSS = (
    "steps",
    "checkpoint_dir",
    "checkpoint_every",
    "eval_every",
    "eval_problems",
    "gsm8k_test_path",
    "device",
    "log_prob_chunk",
    "micro_batch_groups",
    "gradient_checkpointing",
)


def run_folder(config) -> Path:
    """Where a run checkpoints: ``config.checkpoint_dir`` / its method, epochs, seed and a digest
    of every setting that shapes its trajectory. Runs sharing a ``checkpoint_dir`` never
    resume one another; the same run with more ``steps`` resumes its own."""
    settings = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_ACROSS}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    name = f"{config.method}-epochs{config.epochs}-seed{config.seed}-{digest}"
    return Path(config.checkpoint_dir) / name


def fingerprint(model) -> str:
    """A digest of a model's weights as a run starts: every tensor's name, shape and dtype and
    64 of its values, evenly spaced (exact, so the same on any device). A base model rebuilt
    at the same path, or another policy passed in, gives another fingerprint."""
    digest = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        flat = p.detach().flatten()
        picks = torch.linspace(0, max(flat.numel() - 1, 0), min(64, flat.numel())).long()
        digest.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
        digest.update(flat[picks.to(flat.device)].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(folder: Path, model, opt, result, step: int, start: str):
    """After ``step`` steps: the trainable weights, optimiser, loss scaler, LR schedule, RNG,
    history and the starting model's :func:`fingerprint` ``start``, in one file written to a
    temporary name and renamed (a crash never leaves half a checkpoint); a LoRA adapter also
    as peft's own folder, for ``PeftModel.from_pretrained``, written to a temporary folder
    and moved into place after the state (which is what a resume reads).
    ``opt`` holds the ``optimizer``, ``scaler`` and ``scheduler`` (the loop's ``Optimisation``).
    Only tensors, numbers, strings and containers of them: it loads with ``weights_only``."""
    folder.mkdir(parents=True, exist_ok=True)
    adapter = folder / ".adapter.tmp"
    if hasattr(model, "peft_config"):
        shutil.rmtree(adapter, ignore_errors=True)
        model.save_pretrained(adapter)
    state = dict(
        step=step,
        start=start,
        history=result.history,
        evaluations=result.evaluations,
        weights={n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        optimizer=opt.optimizer.state_dict(),
        scaler=opt.scaler.state_dict(),
        scheduler=opt.scheduler.state_dict(),
        torch_rng=torch.get_rng_state(),
        python_rng=random.getstate(),
    )
    tmp = folder / f".{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / CHECKPOINT)
    if adapter.exists():
        shutil.rmtree(folder / "adapter", ignore_errors=True)
        adapter.rename(folder / "adapter")


def saved_step(folder: Path) -> int:
    """How many steps the checkpoint in ``folder`` holds (0 when there is none)."""
    if not (folder / CHECKPOINT).exists():
        return 0
    return torch.load(folder / CHECKPOINT, weights_only=True, map_location="cpu")["step"]


def load_checkpoint(folder: Path, model, opt, result, start: str) -> int:
    """Restore what :func:`save_checkpoint` wrote; return the number of steps already done.

    Refuses (ValueError) a checkpoint saved from another starting model (``start``, its
    :func:`fingerprint`). The file is read with ``weights_only=True`` (a checkpoint folder
    from elsewhere can hold tensors and plain data, never code that runs on loading) onto
    the CPU first, so a run saved on a GPU resumes on a CPU.
    """
    state = torch.load(folder / CHECKPOINT, weights_only=True, map_location="cpu")
    if state.get("start") != start:
        raise ValueError(
            f"the checkpoint in {folder} was saved from another starting model (fingerprint "
            f"{state.get('start')}, this one {start}): the base model or the policy passed in "
            "has changed; remove the folder or restore that model"
        )
    missing = set(state["weights"]) - {n for n, p in model.named_parameters() if p.requires_grad}
    if missing:
        raise ValueError(
            f"the checkpoint holds weights this model does not train: {sorted(missing)[:3]}"
        )
    model.load_state_dict(state["weights"], strict=False)
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scaler.load_state_dict(state["scaler"])
    opt.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    steps = len(state["history"]["reward"])
    # a checkpoint from an earlier version lacks the metrics added since: NaN for its steps
    result.history = {m: state["history"].get(m, [math.nan] * steps) for m in result.history}
    result.evaluations = state["evaluations"]
    return state["step"]
