"""One prompt's group up close (notebook 06): its table of ``p_old``, ``u``, ``q`` and GRPO's
advantages, a replay that fits that group alone, epoch by epoch, and the size of one step of
each loss on the same batch."""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace

import torch

from tpo_core.llm.config import RLVRConfig
from tpo_core.llm.losses import rlvr_loss
from tpo_core.llm.model import policy_copy
from tpo_core.llm.rollouts import Rollout, sample_rollout, snapshot_log_probs, token_log_probs
from tpo_core.llm.train import Optimisation, fit_rollout
from tpo_core.objectives import (
    Replay,
    group_policy,
    grpo_advantages,
    sequence_log_probs,
    standardize_scores,
    tpo_target,
)


def group_table(rollout: Rollout, group: int, eta: float = 1.0) -> dict:
    """One prompt's group, as notebook 01 draws it: completions, rewards, ``p_old``, ``u``, ``q``
    and GRPO's advantages (``p_old`` over the group, from the snapshot's sequence log-probs)."""
    if rollout.old_log_probs is None:
        raise ValueError(
            "the rollout has no snapshot log-probs; compute them with snapshot_log_probs"
        )
    rows = rollout.rows(slice(group, group + 1))
    seq_old = sequence_log_probs(rollout.old_log_probs[rows], rollout.completion_mask[rows])
    r = rollout.rewards[group].to(seq_old)
    return dict(
        prompt=rollout.prompts[group],
        completions=rollout.completions[rows],
        rewards=r.tolist(),
        p_old=group_policy(seq_old).tolist(),
        u=standardize_scores(r).tolist(),
        q=tpo_target(seq_old, r, eta).tolist(),
        advantages=grpo_advantages(r).tolist(),
    )


def replay_group(model, rollout: Rollout, group: int, config: RLVRConfig, epochs: int) -> Replay:
    """Fit one prompt's group for ``epochs`` epochs of ``config.method`` and watch its policy.

    A copy of ``model`` takes AdamW steps at ``config.lr`` on that group alone
    (no KL term), and after each epoch the completions' sequence log-probs
    give the group policy ``p = softmax(log pi(y|x))``, measured against TPO's
    target (:class:`tpo_core.objectives.Replay`). ``model`` is left untouched.
    In float16 the steps go through a loss scaler, as the training loop's do.
    """
    if rollout.old_log_probs is None:
        raise ValueError(
            "the rollout has no snapshot log-probs; compute them with snapshot_log_probs"
        )
    if not 0 <= group < len(rollout.problems):
        raise ValueError(f"group must be in [0, {len(rollout.problems)}), got {group}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    trained = policy_copy(model)
    no_kl = replace(config, beta=0.0, warmup_steps=0)
    opt = Optimisation.for_model(trained, no_kl)
    rows = rollout.rows(slice(group, group + 1))
    old, mask = rollout.old_log_probs[rows], rollout.completion_mask[rows]  # (K, T)
    rewards = rollout.rewards[group : group + 1].to(old.device)  # (1, K)
    history = [sequence_log_probs(old, mask).view(1, -1)]
    trained.train()  # checkpointing acts in train mode; with no dropout (peft's default) the
    # log-probs are eval mode's
    for epoch in range(epochs + 1):
        last = epoch == epochs
        with torch.no_grad() if last else contextlib.nullcontext():
            new = token_log_probs(
                trained, rollout, rows, config.temperature, config.log_prob_chunk
            )  # (K, T): the policy after `epoch` steps
        if epoch:  # each epoch's forward also measures the step before it
            history.append(sequence_log_probs(new.detach(), mask).view(1, -1))
        if not last:
            opt.backward(rlvr_loss(no_kl, new, old, rewards, mask))
            opt.step(config.max_grad_norm)
    return Replay.from_epochs(config.method, history[0], rewards, history, config.eta)


def first_step(model, rollout: Rollout, config: RLVRConfig) -> dict[str, float]:
    """One optimiser step of ``config.method`` on the whole ``rollout``, taken by a copy of
    ``model`` that sampled it (no KL term): ``grad_norm``, the gradient's norm before clipping
    at ``max_grad_norm``, and ``step``, the weights' change ``||theta' - theta||``.

    TPO's loss is a mean over groups, per-token GRPO's a mean over tokens, so
    one learning rate gives them gradients of different sizes. AdamW's first
    step divides each weight's gradient by its own size, ``lr g / |g|``, so
    ``step`` is about ``lr sqrt(n)`` over the ``n`` weights with a gradient,
    whatever ``grad_norm`` is. ``model`` is left untouched.
    """
    trained = policy_copy(model)
    one = replace(config, epochs=1, beta=0.0, track_kl=False, warmup_steps=0)
    params = [p for p in trained.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    fitted = fit_rollout(trained, None, rollout, one, Optimisation.for_model(trained, one))
    change = sum(
        float((p.detach() - b).float().pow(2).sum()) for p, b in zip(params, before, strict=True)
    )
    return dict(grad_norm=fitted["grad_norm"], step=math.sqrt(change))


def mixed_group(
    model, tokenizer, rollout: Rollout, config: RLVRConfig, tries: int = 8, room: float = 0.9
):
    """A rollout holding a group with both right and wrong answers, with its snapshot log-probs,
    and that group's index: the first such group, in ``rollout`` and then in fresh batches of
    its problems (sampling seeds 1, 2, ...; at most ``tries``), whose right answers hold at
    most ``room`` of the group policy ``p_old``, so that TPO's target has somewhere to move
    it; failing that, the mixed group seen with the least mass on its right answers. On real
    text ``p_old`` is often nearly all on one completion (sequence probabilities differ by
    many nats). ValueError if no batch has a mixed group (every group all right or all wrong).
    """
    best = None  # (mass on the right answers, rollout, group)
    for attempt in range(tries + 1):
        if attempt:
            rollout = sample_rollout(model, tokenizer, rollout.problems, config, seed=attempt)
        k = rollout.rewards.shape[-1]
        right = rollout.rewards.sum(-1)  # (G,)
        mixed = [g for g in range(len(right)) if 0 < right[g] < k]
        if not mixed:
            continue
        rollout = snapshot_log_probs(model, rollout, config)
        seq = sequence_log_probs(rollout.old_log_probs, rollout.completion_mask).view(-1, k)
        mass = (group_policy(seq) * rollout.rewards.to(seq)).sum(-1)  # (G,)
        g = min(mixed, key=lambda g: float(mass[g]))
        if best is None or mass[g] < best[0]:
            best = (float(mass[g]), rollout, g)
        if best[0] <= room:
            break
    if best is None:
        raise ValueError(
            f"no group with both right and wrong answers in {tries + 1} batches: every group "
            "is all right or all wrong, so neither loss has a signal to show"
        )
    return best[1], best[2]
