"""LLM RLVR (notebook 06): TPO or per-token GRPO on a Hugging Face causal LM, verifiers, TRL.

Data flows one way through the modules, as in :mod:`tpo_core.tokens`::

    verifiers (problems, rewards) -> config (RLVRConfig) -> model (load_policy, precision)
      -> rollouts (sample, score, per-token log-probs) -> losses (rlvr_loss)
      -> train (rlvr_train, evaluate; checkpoint) -> replay (one group up close)
      -> evidence (the shipped runs of ``python -m tpo_core rlvr``)

and ``scale`` picks a run's size for the hardware from ``memory``'s model of
peak memory and run time. :mod:`~tpo_core.llm.trl` is
TRL's ``GRPOTrainer`` with TPO's loss (needs ``trl``, so it is not imported here).
"""

from tpo_core.llm import verifiers
from tpo_core.llm.checkpoint import (
    CHECKPOINT,
    fingerprint,
    load_checkpoint,
    run_folder,
    save_checkpoint,
)
from tpo_core.llm.config import LLM_METHODS, LOG_PROB_CHUNK, RLVRConfig
from tpo_core.llm.evidence import final_reward, shipped_runs
from tpo_core.llm.losses import LossTerms, rlvr_loss, rlvr_loss_terms
from tpo_core.llm.memory import (
    CARDS,
    MODEL_SHAPES,
    Card,
    ModelShape,
    generation_peak_gib,
    predicted_minutes,
    training_peak_gib,
)
from tpo_core.llm.model import (
    SMOLLM2,
    SUM_CHARACTERS,
    autocast_dtype,
    build_tiny_sums_model,
    load_policy,
    policy_copy,
    release_free_heap,
    resolve_device,
    smollm2,
    unpacked,
)
from tpo_core.llm.replay import first_step, group_table, mixed_group, replay_group
from tpo_core.llm.rollouts import (
    Rollout,
    completion_mask,
    end_token_ids,
    format_prompts,
    group_slices,
    sample_rollout,
    sampling_config,
    snapshot_log_probs,
    token_log_probs,
)
from tpo_core.llm.scale import (
    CHECKPOINT_ROOT,
    COMPARISON,
    SMALL_GPU_GIB,
    Scale,
    card_for,
    choose_scale,
    memory_line,
    memory_table,
    scale_minutes,
)
from tpo_core.llm.train import (
    FP16_INIT_SCALE,
    METRICS,
    Optimisation,
    RLVRResult,
    evaluate,
    evaluation_seed,
    fit_rollout,
    rlvr_train,
    rollout_metrics,
)

__all__ = [
    "CARDS",
    "CHECKPOINT",
    "CHECKPOINT_ROOT",
    "FP16_INIT_SCALE",
    "LOG_PROB_CHUNK",
    "COMPARISON",
    "LLM_METHODS",
    "METRICS",
    "MODEL_SHAPES",
    "SMALL_GPU_GIB",
    "SMOLLM2",
    "SUM_CHARACTERS",
    "Card",
    "LossTerms",
    "ModelShape",
    "Optimisation",
    "RLVRConfig",
    "RLVRResult",
    "Rollout",
    "Scale",
    "autocast_dtype",
    "build_tiny_sums_model",
    "card_for",
    "choose_scale",
    "completion_mask",
    "end_token_ids",
    "evaluate",
    "final_reward",
    "shipped_runs",
    "evaluation_seed",
    "first_step",
    "fit_rollout",
    "format_prompts",
    "generation_peak_gib",
    "group_slices",
    "group_table",
    "fingerprint",
    "load_checkpoint",
    "load_policy",
    "policy_copy",
    "release_free_heap",
    "smollm2",
    "unpacked",
    "memory_line",
    "mixed_group",
    "memory_table",
    "predicted_minutes",
    "replay_group",
    "resolve_device",
    "rlvr_loss",
    "rlvr_loss_terms",
    "rlvr_train",
    "rollout_metrics",
    "run_folder",
    "sample_rollout",
    "sampling_config",
    "save_checkpoint",
    "scale_minutes",
    "snapshot_log_probs",
    "token_log_probs",
    "training_peak_gib",
    "verifiers",
]
