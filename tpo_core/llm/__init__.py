"""LLM RLVR (notebook 06): TPO or per-token GRPO on a Hugging Face causal LM, verifiers, TRL.

Data flows one way through the modules, as in :mod:`tpo_core.tokens`::

    verifiers (problems, rewards) -> config (RLVRConfig) -> model (load_policy, precision)
      -> rollouts (sample, score, per-token log-probs) -> losses (rlvr_loss)
      -> train (rlvr_train, evaluate; checkpoint) -> replay (one group up close)

and ``scale`` picks a run's size for the hardware. :mod:`~tpo_core.llm.trl` is
TRL's ``GRPOTrainer`` with TPO's loss (needs ``trl``, so it is not imported here).
"""

from tpo_core.llm import verifiers
from tpo_core.llm.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from tpo_core.llm.config import LOSSES, RLVRConfig
from tpo_core.llm.losses import LossTerms, rlvr_loss, rlvr_loss_terms
from tpo_core.llm.model import (
    SUM_CHARACTERS,
    autocast_dtype,
    build_tiny_sums_model,
    load_policy,
    resolve_device,
)
from tpo_core.llm.replay import group_table, replay_group
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
from tpo_core.llm.scale import SMALL_GPU_GIB, Scale, choose_scale
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
    "CHECKPOINT",
    "FP16_INIT_SCALE",
    "LOSSES",
    "METRICS",
    "SMALL_GPU_GIB",
    "SUM_CHARACTERS",
    "LossTerms",
    "Optimisation",
    "RLVRConfig",
    "RLVRResult",
    "Rollout",
    "Scale",
    "autocast_dtype",
    "build_tiny_sums_model",
    "choose_scale",
    "completion_mask",
    "end_token_ids",
    "evaluate",
    "evaluation_seed",
    "fit_rollout",
    "format_prompts",
    "group_slices",
    "group_table",
    "load_checkpoint",
    "load_policy",
    "resolve_device",
    "replay_group",
    "rlvr_loss",
    "rlvr_loss_terms",
    "rlvr_train",
    "rollout_metrics",
    "sample_rollout",
    "sampling_config",
    "save_checkpoint",
    "snapshot_log_probs",
    "token_log_probs",
    "verifiers",
]
