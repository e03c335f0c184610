"""Exercises of notebook 06 (LLM RLVR): each graded from the library."""

from __future__ import annotations

import torch

from tpo_core.objectives import tpo_target
from tpo_core.teaching.exercises.engine import (
    diagnose,
    exercise,
    loss_and_grad,
    multiple_choice,
)


@exercise(
    "06-extract",
    "A completion reads 'Each box holds 12, so 3 boxes hold 36 pens. #### 36 pens (I think 37 is "
    "wrong)'. Which number does the verifier read as the answer?",
    "The number after the last '####' wins over later numbers: 36. Without '####' or "
    "\\boxed{} it would take the last number in the text, 37.",
)
def _grade_extract(answer):
    from tpo_core.llm.verifiers import extract_answer

    text = "Each box holds 12, so 3 boxes hold 36 pens. #### 36 pens (I think 37 is wrong)"
    if str(answer).strip() == extract_answer(text):
        return True, "'####' marks the final answer, as in GSM8K's own solutions."
    return False, "look for the GSM8K marker before falling back to the last number."


@exercise(
    "06-my-rlvr-loss",
    "Write my_rlvr_loss(new, old, rewards, mask, eta): TPO's sequence-level RLVR loss. new and "
    "old are per-token log-probs (G*K, T) of G groups of K completions (new carries gradients, "
    "old is the frozen snapshot), rewards (G, K), mask (G*K, T) bool marks completion tokens. "
    "Sum each completion's token log-probs, build the target from the snapshot, and return the "
    "cross-entropy averaged over groups.",
    "def my_rlvr_loss(new, old, rewards, mask, eta=1.0):\n"
    "    g, k = rewards.shape\n"
    "    seq_new = new.masked_fill(~mask, 0).sum(-1).view(g, k)  # log pi(y|x)\n"
    "    seq_old = old.masked_fill(~mask, 0).sum(-1).view(g, k)\n"
    "    centred = rewards - rewards.mean(-1, keepdim=True)\n"
    "    std = rewards.std(-1, unbiased=False, keepdim=True)\n"
    "    u = torch.where(std > 1e-6, centred / std.clamp_min(1e-6), torch.zeros_like(centred))\n"
    "    q = torch.softmax(torch.log_softmax(seq_old, -1) + u / eta, -1)\n"
    "    return -(q * torch.log_softmax(seq_new, -1)).sum(-1).mean()",
    kind="implement it",
)
def _grade_my_rlvr_loss(fn):
    from tpo_core.objectives import sequence_log_probs, tpo_loss

    g, k, t = 3, 4, 5
    gen = torch.Generator().manual_seed(6)
    old = -torch.rand(g * k, t, generator=gen, dtype=torch.float64) * 2
    new = old + 0.3 * torch.randn(g * k, t, generator=gen, dtype=torch.float64)  # a later epoch
    mask = torch.arange(t) < torch.randint(2, t + 1, (g * k, 1), generator=gen)
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]], dtype=torch.float64)
    loss, grad = loss_and_grad(fn, new, old, rewards, mask, 1.0)
    seq = lambda x: sequence_log_probs(x, mask).view(g, k)  # noqa: E731
    want_loss = tpo_loss(seq(new), tpo_target(seq(old), rewards))
    x = new.clone().requires_grad_()
    (want_grad,) = torch.autograd.grad(tpo_loss(seq(x), tpo_target(seq(old), rewards)), x)
    if torch.allclose(loss, want_loss, atol=1e-6) and torch.allclose(grad, want_grad, atol=1e-6):
        return True, "equal to the library's TPO RLVR loss, values and gradients, padding included."
    mean_tokens = lambda x: (x.masked_fill(~mask, 0).sum(-1) / mask.sum(-1)).view(g, k)  # noqa: E731
    mistakes = [
        (
            "you averaged the token log-probs; a completion's log pi(y|x) is their sum",
            tpo_loss(mean_tokens(new), tpo_target(mean_tokens(old), rewards)),
        ),
        (
            "you built the target from the new log-probs; it must come from the frozen snapshot",
            tpo_loss(seq(new), tpo_target(seq(new).detach(), rewards)),
        ),
        (
            "you summed the padding too: mask out the tokens past each completion's end",
            tpo_loss(new.sum(-1).view(g, k), tpo_target(old.sum(-1).view(g, k), rewards)),
        ),
    ]
    return False, diagnose(loss, mistakes, "the loss differs from the library's on random groups")


multiple_choice(
    "06-unlikely-right",
    "One right completion has p_old = 1e-6 within its group; a wrong one holds 0.99; one success "
    "among K = 8, eta = 1. TPO's target mass for the right completion is about",
    {
        "a": (
            "2e-5: about 20 times its old mass",
            "right: q scales each completion's mass by e^u / Z, at most e^(u_right - u_wrong) "
            "= e^(K / sqrt(K - 1)) ~ 20.6 here, so an unlikely right answer is raised in "
            "proportion to what it has; it takes many batches to grow.",
        ),
        "b": (
            "0.75",
            "that holds when p_old is uniform over the group; here it is nearly one-hot.",
        ),
        "c": ("1", "a finite temperature never makes the target one-hot."),
    },
    "a",
)


multiple_choice(
    "06-one-epoch",
    "With one epoch per batch the loop uses old = new.detach() and skips the snapshot pass. Why "
    "is that exact?",
    {
        "a": (
            "at the first epoch the current policy is the snapshot",
            "right: the snapshot is "
            "needed only once the weights have moved, from the second epoch on.",
        ),
        "b": ("TPO does not use p_old", "its target q is built from p_old."),
        "c": ("the KL term stands in for it", "the KL is to the starting model, not the snapshot."),
    },
    "a",
)
