"""The token-task engine's shortcuts are exact: the same loss and gradient as doing all the work.

Two shortcuts: the model runs once per distinct (prompt, answer) pair, and TPO
skips the groups whose K answers are one answer (unanimous groups).
"""

import dataclasses
import functools
import math

import pytest
import torch

from tpo_core.tokens.algorithms import ALGORITHMS
from tpo_core.tokens.model import ModelConfig, TinyTransformer
from tpo_core.tokens.rollouts import SequenceBatch, sequence_rollouts
from tpo_core.tokens.tasks import correct_answers, token_rewards
from tpo_core.tokens.train import TrainConfig, train


def model_and_repetitive_batch(
    vocab=2, length=5, b=6, k=4, seed=0, unanimous=(0,), reward="terminal", moved=False
):
    """A batch like those of late training: prompts repeat across the batch, answers within
    a group repeat, and the ``unanimous`` groups hold one answer K times. With ``moved``
    the model has left the snapshot that sampled the batch, as after an epoch."""
    torch.manual_seed(seed)
    model = TinyTransformer(ModelConfig(vocab=vocab, length=length))
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(vocab, (b // 2, length), generator=g).repeat(2, 1)  # (B, H)
    answers = torch.randint(vocab, (b, 2, length), generator=g).repeat(1, k // 2, 1)  # (B, K, H)
    same = list(unanimous)
    answers[same] = answers[same, :1]  # groups of K identical answers
    flat = answers.reshape(b * k, length)
    with torch.no_grad():
        old = model.answer_log_probs(prompts, flat).gather(-1, flat[..., None])[..., 0]
        for p in model.parameters() if moved else ():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    targets = correct_answers("reverse_copy", prompts, vocab).repeat_interleave(k, 0)
    rewards = token_rewards(reward, flat, targets).view(b, k, length)
    return model, SequenceBatch(prompts, answers, old.view(b, k, length), rewards)


def assert_same_gradients(grads_a, grads_b):
    """Equal up to float32 rounding, which differs when the same sum is taken in another order:
    an error of 1e-5 of the largest gradient entry, where a lost or doubled copy would cost
    O(1) of it. (Some entries, such as the key biases', are zero up to rounding.)"""
    scale = max(float(b.abs().max()) for b in grads_b)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 * scale)


def test_distinct_pairs_are_found_and_cover_the_batch():
    model, batch = model_and_repetitive_batch()
    rows, inverse = batch.distinct
    b, k, h = batch.answers.shape
    pairs = torch.cat([batch.prompts.repeat_interleave(k, 0), batch.answers.view(b * k, h)], 1)
    assert len(rows) == len(torch.unique(pairs, dim=0)) < b * k
    torch.testing.assert_close(pairs[rows][inverse], pairs, rtol=0, atol=0)  # every answer's pair
    assert (rows[inverse] <= torch.arange(b * k)).all()  # rows are first occurrences


def test_distinct_log_probs_equal_one_pass_per_answer():
    model, batch = model_and_repetitive_batch()
    weights = torch.randn(batch.answers.shape, dtype=torch.float32)
    grads = []
    for distinct in (True, False):
        model.zero_grad()
        log_p = batch.new_log_probs(model, distinct=distinct)
        (weights * log_p).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        if distinct:
            with_shortcut = log_p.detach()
    torch.testing.assert_close(with_shortcut, log_p.detach(), rtol=1e-5, atol=1e-6)
    assert_same_gradients(*grads)


@pytest.mark.parametrize("name", [n for n, a in ALGORITHMS.items() if a.rollout != "token"])
def test_every_sequence_method_has_the_same_loss_and_gradient_with_distinct_pairs(
    name, monkeypatch
):
    model, batch = model_and_repetitive_batch()
    if ALGORITHMS[name].rollout == "single":  # K = 1: distinct pairs come from repeated prompts
        batch = SequenceBatch(
            batch.prompts, batch.answers[:, :1], batch.old_log_probs[:, :1], batch.rewards[:, :1]
        )
    results = []
    full = SequenceBatch.new_log_probs
    for distinct in (True, False):
        monkeypatch.setattr(
            SequenceBatch, "new_log_probs", lambda self, m, d=distinct: full(self, m, distinct=d)
        )
        model.zero_grad()
        loss = ALGORITHMS[name].loss(model, batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grad_a), (loss_b, grad_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-7)
    assert_same_gradients(grad_a, grad_b)


def test_rollout_batches_use_distinct_pairs_by_default():
    torch.manual_seed(0)
    model = TinyTransformer(ModelConfig(vocab=2, length=3))
    batch = sequence_rollouts(model, "copy", "terminal", 20, 8, torch.Generator().manual_seed(0))
    rows, _ = batch.distinct
    assert len(rows) < 20 * 8  # 8 prompts x 8 answers exist at H = 3, V = 2


# ---------------------------------------------------------------- unanimous groups (TPO)


def rows_run(model):
    """Wrap ``model.answer_log_probs`` to record how many answer rows each call runs."""
    rows, real = [], model.answer_log_probs

    def counted(prompts, answers, prompt_index=None):
        rows.append(answers.shape[0])
        return real(prompts, answers, prompt_index)

    model.answer_log_probs = counted
    return rows


@pytest.mark.parametrize("name", ["tpo", "tpo_no_anchor"])
@pytest.mark.parametrize("unanimous", [(0, 3), tuple(range(6))], ids=["some", "all"])
def test_tpo_skips_unanimous_groups_with_the_same_loss_and_gradient(name, unanimous):
    """At every epoch (here: a model that has moved off the snapshot), with some groups or
    every group unanimous: the loss and gradient of the plain computation, fewer rows run."""
    model, batch = model_and_repetitive_batch(unanimous=unanimous, reward="bag", moved=True)
    assert batch.unanimous.tolist() == [g in unanimous for g in range(6)]
    rows, results = rows_run(model), []
    for skip in (True, False):
        model.zero_grad()
        loss = ALGORITHMS[name].loss(model, batch, skip_unanimous=skip)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_skip, grad_skip), (loss_plain, grad_plain) = results
    torch.testing.assert_close(loss_skip, loss_plain, rtol=1e-6, atol=0)
    assert rows[0] < rows[1]
    if len(unanimous) < 6:
        assert_same_gradients(grad_skip, grad_plain)
    else:  # log K per group; the plain gradient is float rounding, the skipped one exactly 0
        assert loss_skip.item() == pytest.approx(math.log(4), rel=1e-6)
        for a, b in zip(grad_skip, grad_plain, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_grpo_gets_no_skip_because_a_unanimous_group_still_pulls_after_the_first_epoch():
    """Why the skip is TPO's only: GRPO's KL keeps a unanimous group's gradient nonzero once
    the policy has moved (its K copies share one ratio, no longer 1)."""
    model, batch = model_and_repetitive_batch(unanimous=tuple(range(6)), moved=True)
    ALGORITHMS["grpo"].loss(model, batch).backward()
    assert max(p.grad.abs().max() for p in model.parameters()) > 1e-4


@pytest.mark.parametrize("method", ["tpo", "tpo_no_anchor"])
def test_training_with_the_skip_ends_where_training_without_it_does(method, monkeypatch):
    config = TrainConfig(
        task="copy", reward="bag", method=method, length=2, batch=32, k=4, episodes=6, lr=1e-2
    )
    skipped = []
    subset = SequenceBatch.subset
    monkeypatch.setattr(
        SequenceBatch, "subset", lambda self, groups: skipped.append(1) or subset(self, groups)
    )
    with_skip = train(config, progress=False)
    assert skipped  # some batches held unanimous groups
    plain = functools.partial(ALGORITHMS[method].loss, skip_unanimous=False)
    monkeypatch.setitem(ALGORITHMS, method, dataclasses.replace(ALGORITHMS[method], loss=plain))
    without = train(config, progress=False)
    assert with_skip.error == without.error
    # Float rounding differs (the plain computation adds the unanimous groups' rounding-level
    # gradients), so parameters agree to 1e-4 of a step of 1e-2, not bit for bit. The key
    # biases are left out: their gradient is zero in exact arithmetic (softmax ignores a
    # shift shared by all keys), so Adam turns rounding noise into steps no output sees.
    theirs = dict(without.model.named_parameters())
    for name, ours in with_skip.model.named_parameters():
        if not name.endswith(".k.bias"):
            torch.testing.assert_close(ours, theirs[name], rtol=1e-3, atol=1e-4)
    tokens = torch.randint(2, (16, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, plain = with_skip.model(tokens), without.model(tokens)
    torch.testing.assert_close(ours, plain, rtol=1e-3, atol=1e-4)
