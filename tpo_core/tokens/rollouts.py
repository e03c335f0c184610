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

import functools
import math
from dataclasses import dataclass

import torch

from tpo_core.tokens.model import TinyTransformer
from tpo_core.tokens.tasks import correct_answers, sample_prompts, token_rewards

# The distinct pairs are padded to a multiple of this many rows, so that a run meets few tensor
# shapes: the allocator then reuses its blocks, and peak memory stays that of one pass per answer
# (with every count from 1 to B*K it grew by a sixth over 200 episodes).
ROW_BUCKET = 64


def bucket_size(rows: int, most: int) -> int:
    """``rows`` rounded up to a multiple of :data:`ROW_BUCKET`, at most ``most``."""
    return min(ROW_BUCKET * math.ceil(rows / ROW_BUCKET), most)


def padded_rows(rows: torch.Tensor, size: int) -> torch.Tensor:
    """``rows`` (U,) followed by copies of its first entry up to ``size``: extra rows that no
    answer reads back, so they cost a little compute and change nothing."""
    return torch.cat([rows, rows[:1].expand(size - len(rows))])


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

    @functools.cached_property
    def unanimous(self) -> torch.Tensor:
        """(B,) bool: the groups whose K answers are one answer K times (most groups, late in
        training)."""
        return (self.answers == self.answers[:, :1]).all(-1).all(-1)

    def subset(self, groups: torch.Tensor) -> SequenceBatch:
        """The batch of the groups that ``groups`` (B,) bool selects."""
        return SequenceBatch(
            self.prompts[groups],
            self.answers[groups],
            self.old_log_probs[groups],
            self.rewards[groups],
        )

    @functools.cached_property
    def without_unanimous(self) -> SequenceBatch:
        """The batch without its unanimous groups; when every group is unanimous, the first
        one stays (a loss on it keeps its graph). Kept for the epochs that reuse the batch."""
        keep = ~self.unanimous  # (B,)
        keep[0] |= ~keep.any()
        return self.subset(keep)

    @functools.cached_property
    def distinct(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct (prompt, answer) pairs of the batch: ``rows`` (U,), the first of the
        B*K flattened answers that holds each pair, and ``inverse`` (B*K,), which pair each
        answer is. Late in training most of a prompt's K answers are the same one."""
        b, k, h = self.answers.shape
        pairs = torch.cat([self.prompts.repeat_interleave(k, 0), self.answers.reshape(b * k, h)], 1)
        _, inverse = torch.unique(pairs, dim=0, return_inverse=True)  # (B*K,)
        order = torch.arange(b * k, device=inverse.device)
        rows = torch.full((int(inverse.max()) + 1,), b * k, device=inverse.device)
        return rows.scatter_reduce(0, inverse, order, "amin"), inverse

    def new_log_probs(self, model: TinyTransformer, distinct: bool = True) -> torch.Tensor:
        """log pi_theta of each sampled token under the current model, (B, K, H), with gradients.

        With ``distinct`` the model runs once per distinct (prompt, answer) pair and
        the copies share its result (and, through the gather, its gradient): the
        same values as one pass per answer, at a fraction of the cost late in
        training.
        """
        b, k, h = self.answers.shape
        answers = self.answers.reshape(b * k, h)  # (B*K, H), grouped by prompt
        if not distinct:
            log_p = model.answer_log_probs(self.prompts, answers)  # (B*K, H, V)
            return log_p.gather(-1, answers[..., None]).view(b, k, h)
        rows, inverse = self.distinct
        rows = padded_rows(rows, bucket_size(len(rows), b * k))  # (U',)
        answers = answers[rows]  # (U', H)
        log_p = model.answer_log_probs(self.prompts, answers, prompt_index=rows // k)  # (U', H, V)
        return log_p.gather(-1, answers[..., None])[..., 0][inverse].view(b, k, h)

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

    @property
    def unanimous(self) -> torch.Tensor:
        """(B, H) bool: the states whose K candidates are one token K times."""
        return (self.candidates == self.candidates[..., :1]).all(-1)

    def new_log_probs(self, model: TinyTransformer) -> torch.Tensor:
        """log pi_theta of every candidate at its prefix state, (B, H, K), with gradients."""
        # (B, H, V) next-token log-probs along the behaviour answer, picked at the K candidates
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
    answers, log_p = model.sample(prompts, generator, copies=k)  # (B*K, H), (B*K, H, V)
    return score_answers(task, reward, prompts, answers, log_p, cfg.vocab)


def score_answers(task, reward, prompts, answers, log_p, vocab: int) -> SequenceBatch:
    """The batch of ``prompts`` (B, H) and their sampled ``answers`` (B*K, H), grouped by
    prompt, with the snapshot's per-position log-probs ``log_p`` (B*K, H, V)."""
    (batch, length), k = prompts.shape, answers.shape[0] // prompts.shape[0]
    old = log_p.gather(-1, answers[..., None])[..., 0]  # (B*K, H)
    targets = correct_answers(task, prompts, vocab).repeat_interleave(k, 0)  # (B*K, H)
    rewards = token_rewards(reward, answers, targets)
    shape = (batch, k, length)
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
    answers, log_p = model.sample(prompts, generator)  # (B, H), (B, H, V)
    others = torch.multinomial(
        log_p.exp().view(-1, cfg.vocab), k - 1, replacement=True, generator=generator
    )  # (B*H, K-1)
    candidates = torch.cat(
        [answers[..., None], others.view(batch, cfg.length, k - 1)], -1
    )  # (B, H, K)
    targets = correct_answers(task, prompts, cfg.vocab)
    behaviour_rewards = token_rewards(reward, answers, targets)
    rewards = (candidates == targets[..., None]).float()  # (B, H, K)
    if reward == "sequential":  # a candidate only counts if every earlier behaviour token was right
        alive = torch.cat(
            [torch.ones_like(behaviour_rewards[:, :1]), behaviour_rewards[:, :-1]], 1
        )  # (B, H)
        rewards = rewards * alive[..., None]
    return TokenBatch(
        prompts, answers, candidates, log_p.gather(-1, candidates), rewards, behaviour_rewards
    )
