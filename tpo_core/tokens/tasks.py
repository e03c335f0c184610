"""Token tasks: read H prompt tokens, write H answer tokens (the paper's token-reversal
experiments; notebook 04).

A prompt is H tokens drawn uniformly from a vocabulary of V symbols. The
model writes H answer tokens after it; the correct answer is a fixed
function of the prompt:

* ``copy``: ``x``                 * ``flip``: ``V - 1 - x``
* ``reverse_copy``: ``x`` reversed * ``reverse_flip``: ``V - 1 - x`` reversed

Rewards are given per answer token:

* ``bag`` (bag-of-tokens): 1 where the token is correct;
* ``sequential``: 1 where the token and every earlier one are correct;
* ``terminal``: 1 on every token iff the whole answer is correct (exact match).
"""

from __future__ import annotations

import torch

TASKS = ("copy", "flip", "reverse_copy", "reverse_flip")
REWARDS = ("bag", "sequential", "terminal")


def check_task(task: str, reward: str | None = None) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if reward is not None and reward not in REWARDS:
        raise ValueError(f"unknown reward {reward!r}; choose one of {', '.join(REWARDS)}")


def sample_prompts(batch: int, length: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` prompts of ``length`` tokens, uniform over ``vocab`` symbols: (batch, length)."""
    if vocab < 2 or length < 1 or batch < 1:
        raise ValueError(
            f"need vocab >= 2, length >= 1, batch >= 1; got {vocab}, {length}, {batch}"
        )
    return torch.randint(vocab, (batch, length), generator=generator, device=generator.device)


def correct_answers(task: str, prompts: torch.Tensor, vocab: int) -> torch.Tensor:
    """The target answer for each prompt (same shape as ``prompts``)."""
    check_task(task)
    answer = prompts.flip(-1) if task.startswith("reverse") else prompts
    return vocab - 1 - answer if task.endswith("flip") else answer


def token_rewards(reward: str, answers: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token rewards (float, same shape as ``answers``; the last dim is the answer position)."""
    check_task(TASKS[0], reward)
    correct = (answers == targets).float()
    if reward == "bag":
        return correct
    if reward == "sequential":
        return correct.cumprod(-1)
    return correct.prod(-1, keepdim=True).expand_as(correct).clone()


def chance_of_a_success(length: int, vocab: int, k: int) -> float:
    """Chance that a group of K uniformly random answers holds at least one exact match,
    ``1 - (1 - V^-H)^K``: under terminal reward, the rest of the groups are all-fail."""
    return 1.0 - (1.0 - float(vocab) ** -length) ** k
