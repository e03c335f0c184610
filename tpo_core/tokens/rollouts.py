"""Rollouts for the token tasks: sample from the policy, score, return plain tensors.

Two shapes of batch:

* :class:`SequenceBatch`: K full answers per prompt (K = 1 for the
  single-sample methods). Shapes (B, K, H).
* :class:`TokenBatch`: one behaviour answer per prompt, and at every prefix
  state K next-token candidates drawn from the same distribution, candidate 0
  being the behaviour token. Each candidate is scored by its own token reward
  at that state (sequential: times "every earlier behaviour token was right").
  Shapes (B, H, K).

Both record the rollout snapshot's log-probabilities, which stay frozen
while a batch is reused for several epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tpo_core.tokens.model import TinyTransformer
from tpo_core.tokens.tasks import correct_answers, sample_prompts, token_rewards


@dataclass(frozen=True)
class SequenceBatch:
    prompts: torch.Tensor  # (B, H)
    answers: torch.Tensor  # (B, K, H)
    old_log_probs: torch.Tensor  # (B, K, H) log pi_old of each sampled token
    rewards: torch.Tensor  # (B, K, H) per-token rewards

    @property
    def scores(self) -> torch.Tensor:
        """One score per answer: its mean token reward (exact match under terminal reward)."""
        return self.rewards.mean(-1)

    def new_log_probs(self, model: TinyTransformer) -> torch.Tensor:
        """log pi_theta of each sampled token under the current model, (B, K, H), with gradients."""
        b, k, h = self.answers.shape
        answers = self.answers.reshape(b * k, h)
        log_p = model.answer_log_probs(self.prompts, answers).gather(-1, answers[..., None])[..., 0]
        return log_p.view(b, k, h)

    @property
    def error(self) -> float:
        return 1.0 - self.rewards.mean().item()


@dataclass(frozen=True)
class TokenBatch:
    prompts: torch.Tensor  # (B, H)
    answers: torch.Tensor  # (B, H) behaviour trajectory
    candidates: torch.Tensor  # (B, H, K); candidates[..., 0] == answers
    old_log_probs: torch.Tensor  # (B, H, K) log pi_old of each candidate at its state
    rewards: torch.Tensor  # (B, H, K) each candidate's token reward at its state
    behaviour_rewards: torch.Tensor  # (B, H)

    def new_log_probs(self, model: TinyTransformer) -> torch.Tensor:
        """log pi_theta of every candidate at its prefix state, (B, H, K), with gradients."""
        return model.answer_log_probs(self.prompts, self.answers).gather(-1, self.candidates)

    @property
    def error(self) -> float:
        return 1.0 - self.behaviour_rewards.mean().item()


def sequence_rollouts(
    model: TinyTransformer,
    task: str,
    reward: str,
    batch: int,
    k: int,
    generator: torch.Generator,
) -> SequenceBatch:
    """B fresh prompts, K sampled answers each, scored per token."""
    cfg = model.cfg
    prompts = sample_prompts(batch, cfg.length, cfg.vocab, generator)
    answers, log_p = model.sample(prompts, generator, copies=k)
    old = log_p.gather(-1, answers[..., None])[..., 0]
    targets = correct_answers(task, prompts, cfg.vocab).repeat_interleave(k, 0)
    rewards = token_rewards(reward, answers, targets)
    shape = (batch, k, cfg.length)
    return SequenceBatch(prompts, answers.view(shape), old.view(shape), rewards.view(shape))


def token_rollouts(
    model: TinyTransformer,
    task: str,
    reward: str,
    batch: int,
    k: int,
    generator: torch.Generator,
) -> TokenBatch:
    """B prompts, one behaviour answer each, K candidates at each of its H prefix states."""
    if reward == "terminal":
        raise ValueError(
            "token-level grouping needs a per-token reward (bag or sequential), not terminal"
        )
    cfg = model.cfg
    prompts = sample_prompts(batch, cfg.length, cfg.vocab, generator)
    answers, log_p = model.sample(prompts, generator)
    others = torch.multinomial(
        log_p.exp().view(-1, cfg.vocab), k - 1, replacement=True, generator=generator
    )
    candidates = torch.cat([answers[..., None], others.view(batch, cfg.length, k - 1)], -1)
    targets = correct_answers(task, prompts, cfg.vocab)
    behaviour_rewards = token_rewards(reward, answers, targets)
    rewards = (candidates == targets[..., None]).float()
    if reward == "sequential":  # a candidate only counts if every earlier behaviour token was right
        alive = torch.cat([torch.ones(batch, 1), behaviour_rewards[:, :-1]], 1)
        rewards = rewards * alive[..., None]
    return TokenBatch(
        prompts, answers, candidates, log_p.gather(-1, candidates), rewards, behaviour_rewards
    )
