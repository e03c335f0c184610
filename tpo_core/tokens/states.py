"""Prefix states one by one (notebook 04): where a model's states stand, and what each
token-level method's loss asks of them on the snapshot.

* :func:`state_probs`, :func:`correct_token_probs`: the policy at each prefix state;
* :func:`state_summary`: over the prefix states of a :class:`TokenBatch`, the mean probability
  of the correct token, the mean entropy, and the shares of states on which the policy is
  confidently right or confidently wrong (one token above :data:`CONFIDENT`);
* :func:`final_states`: the same for a trained run, on a fresh batch;
* :func:`state_drift`: how far an update moved each state's whole next-token distribution;
* :func:`state_push`: the push a method's loss gives each state's correct-token logit ``z_y`` on
  the snapshot, ``-dL_s/dz_y`` for the state's own loss ``L_s``;
* :func:`expected_push`: its expectation over a group's K draws at a two-token state whose
  correct token has probability ``pi``, in closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tpo_core.methods import implemented
from tpo_core.objectives import entropy, grpo_advantages, kl_divergence, tpo_target
from tpo_core.tokens.model import TinyTransformer
from tpo_core.tokens.rollouts import TokenBatch, token_rollouts
from tpo_core.tokens.tasks import correct_answers
from tpo_core.tokens.train import TrainResult

CONFIDENT = 0.9  # a state is "confident" when one token holds more than this probability
PUSHED = implemented("state_push")  # tpo_core.methods


@dataclass(frozen=True)
class StateSummary:
    """Means and shares over a batch's B * H prefix states."""

    correct: float  # mean pi(y | s), y the correct token
    entropy: float  # mean entropy of pi(. | s), nats
    confident_right: float  # share of states with pi(y | s) > CONFIDENT
    confident_wrong: float  # share with one wrong token above CONFIDENT

    def __str__(self) -> str:
        return (
            f"pi(correct) {self.correct:.2f}, entropy {self.entropy:.2f} nats, "
            f"confidently right {self.confident_right:.0%}, wrong {self.confident_wrong:.0%}"
        )


@torch.no_grad()
def state_probs(model: TinyTransformer, batch: TokenBatch) -> torch.Tensor:
    """``pi(. | s)`` at the prefix states of ``batch`` (its prompts, its behaviour answers as
    prefixes), (B, H, V)."""
    return model.answer_log_probs(batch.prompts, batch.answers).exp()


def correct_token_probs(model: TinyTransformer, batch: TokenBatch, task: str) -> torch.Tensor:
    """``pi(y | s)`` at each prefix state of ``batch``, y the correct token, (B, H)."""
    targets = correct_answers(task, batch.prompts, model.cfg.vocab)  # (B, H)
    return state_probs(model, batch).gather(-1, targets[..., None])[..., 0]


def state_summary(model: TinyTransformer, batch: TokenBatch, task: str) -> StateSummary:
    """Where ``model``'s policy stands at the prefix states of ``batch``."""
    probs = state_probs(model, batch)  # (B, H, V)
    targets = correct_answers(task, batch.prompts, model.cfg.vocab)  # (B, H)
    right = probs.gather(-1, targets[..., None])[..., 0]  # (B, H): pi(y | s)
    wrong = probs.scatter(-1, targets[..., None], 0.0).amax(-1)  # (B, H): the likeliest wrong
    return StateSummary(
        correct=right.mean().item(),
        entropy=entropy(probs).mean().item(),
        confident_right=(right > CONFIDENT).float().mean().item(),
        confident_wrong=(wrong > CONFIDENT).float().mean().item(),
    )


def final_states(result: TrainResult, seed: int = 0) -> StateSummary:
    """Where a run's trained policy stands: :func:`state_summary` over a fresh batch of the
    run's own size (B prompts; behaviour answers sampled from the policy with ``seed``)."""
    config, model = result.config, result.model
    if model is None:
        raise ValueError("this run has no model (a run loaded from disk keeps only its curves)")
    if config.reward == "terminal":
        raise ValueError(
            "prefix states are scored per token: a run with a bag or sequential reward"
        )
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    batch = token_rollouts(model, config.task, config.reward, config.batch, 2, generator)
    return state_summary(model, batch, config.task)


def state_drift(before: TinyTransformer, after: TinyTransformer, batch: TokenBatch):
    """``KL(pi_before(. | s) || pi_after(. | s))`` at each prefix state of ``batch``, (B, H):
    how far an update moved the state's next-token distribution over all V tokens."""
    return kl_divergence(state_probs(before, batch), state_probs(after, batch))


def group_push(method: str, old_log_probs, rewards, hits, eta: float = 1.0) -> torch.Tensor:
    """The push on the correct token's logit of each group (..., K) on the snapshot; ``hits``
    (..., K) marks the candidates that are the correct token.

    TPO: ``Q(y) - P(y)``, the correct token's share of the target minus its share of the group
    policy (notebook 04's derivation). GRPO: ``(1/K) sum_{k: c_k = y} A_k``, as every ratio is 1
    and the KL term's gradient is 0 on the snapshot.
    """
    hits = hits.to(old_log_probs.dtype)
    if method == "tpo_token":
        p = torch.softmax(old_log_probs, -1)  # (..., K): softmax as in tpo_target, so ties push 0
        q = tpo_target(old_log_probs, rewards, eta)  # (..., K)
        return ((q - p) * hits).sum(-1)
    if method == "grpo_token":
        return (grpo_advantages(rewards) * hits).mean(-1)
    raise ValueError(f"the push is defined for {' and '.join(PUSHED)}, got {method!r}")


def state_push(method: str, batch: TokenBatch, task: str, vocab: int, eta: float = 1.0):
    """Each prefix state's push on its correct-token logit under ``method``'s loss, (B, H).

    The loss averages over the B * H states, so this is ``-B H dL/dz_y`` at each state: zero
    where the K candidates all score the same (all wrong, or all right).
    """
    targets = correct_answers(task, batch.prompts, vocab)  # (B, H)
    hits = batch.candidates == targets[..., None]  # (B, H, K)
    return group_push(method, batch.old_log_probs, batch.rewards, hits, eta)


def expected_push(method: str, pi, k: int = 8, eta: float = 1.0) -> torch.Tensor:
    """The mean push over the K draws at a state of two tokens whose correct one has
    probability ``pi`` (N,), in closed form: ``sum_m C(K, m) pi^m (1 - pi)^(K - m) push(m)``
    over the number m of correct candidates (m = 0 and m = K push nothing)."""
    pi = torch.as_tensor(pi, dtype=torch.float64).reshape(-1, 1, 1)  # (N, 1, 1)
    if not ((pi > 0) & (pi < 1)).all():
        raise ValueError("pi must lie strictly between 0 and 1")
    if k < 2:
        raise ValueError(f"a group needs k >= 2 candidates, got {k}")
    m = torch.arange(k + 1, dtype=torch.float64)  # (K+1,): correct candidates in the group
    hits = torch.arange(k) < m[:, None]  # (K+1, K): the first m candidates are correct
    log_probs = torch.where(hits, pi.log(), (1 - pi).log())  # (N, K+1, K)
    rewards = hits.to(torch.float64).expand_as(log_probs)
    push = group_push(method, log_probs, rewards, hits.expand_as(log_probs), eta)  # (N, K+1)
    binomial = torch.tensor([math.comb(k, int(i)) for i in m], dtype=torch.float64)
    weights = binomial * pi[..., 0] ** m * (1 - pi[..., 0]) ** (k - m)  # (N, K+1)
    return (weights * push).sum(-1)
