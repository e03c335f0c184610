"""LLM RLVR (notebook 06): TPO or per-token GRPO on a Hugging Face causal LM, verifiers, TRL.

:mod:`~tpo_core.llm.rlvr` is the training loop, :mod:`~tpo_core.llm.verifiers`
the reward functions (sums, arithmetic, GSM8K, Reasoning Gym tasks), and
:mod:`~tpo_core.llm.trl` TRL's ``GRPOTrainer`` with TPO's loss (needs ``trl``,
so it is not imported here).
"""

from tpo_core.llm import verifiers
from tpo_core.llm.rlvr import (
    LOSSES,
    METRICS,
    SMALL_GPU_GIB,
    SUM_CHARACTERS,
    RLVRConfig,
    RLVRResult,
    Rollout,
    Scale,
    autocast_dtype,
    build_tiny_sums_model,
    choose_scale,
    completion_mask,
    end_token_ids,
    format_prompts,
    group_slices,
    group_table,
    load_policy,
    resolve_device,
    rlvr_loss,
    rlvr_train,
    rollout_metrics,
    sample_rollout,
    sampling_config,
    snapshot_log_probs,
    token_log_probs,
)

__all__ = [
    "sampling_config",
    "end_token_ids",
    "autocast_dtype",
    "SMALL_GPU_GIB",
    "LOSSES",
    "METRICS",
    "SUM_CHARACTERS",
    "RLVRConfig",
    "RLVRResult",
    "Rollout",
    "Scale",
    "build_tiny_sums_model",
    "choose_scale",
    "completion_mask",
    "format_prompts",
    "group_slices",
    "group_table",
    "load_policy",
    "resolve_device",
    "rlvr_loss",
    "rlvr_train",
    "rollout_metrics",
    "sample_rollout",
    "snapshot_log_probs",
    "token_log_probs",
    "verifiers",
]
