"""Today's GRPO family on the shared contract: each loss against its own equation (closed-form
gradients checked by autograd), the catalogue read by every stage, and each method run by the
token engine."""

from __future__ import annotations

import math

import pytest
import torch

from tpo_core import methods
from tpo_core.objectives import (
    SEQUENCE_LOSSES,
    GroupBatch,
    cispo_sequences,
    dapo_sequences,
    dr_grpo_sequences,
    grpo_advantages,
    grpo_per_token_sequences,
    grpo_sequences,
    gspo_sequences,
    rloo_advantages,
    rloo_sequences,
    snapshot_push,
    tpo_sequences,
)
from tpo_core.tokens.train import TrainConfig, initial_model, train

FAMILY = ("dr_grpo", "dapo", "gspo", "cispo", "rloo")


def batch(log_ratio=0.0, g=3, k=4, t=5, seed=0, mask=None):
    """A batch whose current log-probs sit ``log_ratio`` above the snapshot's, per token."""
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(g, k, t, generator=gen, dtype=torch.float64) * 2
    new = (old + log_ratio).clone().requires_grad_(True)
    scores = torch.randint(0, 2, (g, k), generator=gen).double()
    scores[0] = torch.tensor([1.0, 0, 0, 0])[:k]  # at least one informative group
    return GroupBatch(new, old, scores, mask)


def grad(b: GroupBatch, fn, **settings):
    (g,) = torch.autograd.grad(fn(b, **settings).loss, b.new)
    return g


def test_dr_grpo_is_the_centred_reward_over_a_constant_length():
    b = batch()
    g, k, t = b.new.shape
    centred = b.scores - b.scores.mean(-1, keepdim=True)  # no division by the std
    expected = -centred[..., None].expand(g, k, t) / (g * k * 16)  # on the snapshot, rho = 1
    assert torch.allclose(grad(b, dr_grpo_sequences, length=16), expected)
    with pytest.raises(ValueError, match="shorter"):
        dr_grpo_sequences(b, length=2)


def test_dr_grpo_ignores_the_length_of_each_answer():
    """A masked (shorter) answer's tokens weigh as much as a long one's: the divisor is fixed."""
    mask = torch.ones(3, 4, 5, dtype=torch.bool)
    mask[0, 0, 2:] = False
    b = batch(mask=mask)
    got = grad(b, dr_grpo_sequences)
    centred = b.scores - b.scores.mean(-1, keepdim=True)
    assert torch.allclose(got[0, 0, :2], -centred[0, 0].expand(2) / (3 * 4 * 5))
    assert torch.equal(got[0, 0, 2:], torch.zeros(3, dtype=got.dtype))


def test_dapo_clips_higher_than_grpo_and_averages_every_token():
    b = batch()
    u = grpo_advantages(b.scores)[..., None].expand_as(b.new)
    assert torch.allclose(grad(b, dapo_sequences), -u / b.new.numel())
    # a ratio of 1.25 on every token: GRPO's clip (1.2) cuts the gradient of A > 0 tokens,
    # DAPO's (1.28) keeps it, as rho * A / N
    b = batch(log_ratio=math.log(1.25))
    u = grpo_advantages(b.scores)[..., None].expand_as(b.new)
    dapo, grpo = grad(b, dapo_sequences), grad(b, grpo_per_token_sequences, beta=0.0)
    up = u > 0
    assert torch.allclose(dapo[up], -1.25 * u[up] / b.new.numel())
    assert torch.equal(grpo[up], torch.zeros_like(grpo[up]))
    assert dapo_sequences(b).clipped == 0 and grpo_per_token_sequences(b).clipped > 0


def test_gspo_forms_one_length_normalised_ratio_per_sequence():
    b = batch()
    g, k, t = b.new.shape
    u = grpo_advantages(b.scores)
    # on the snapshot s = 1 and d(-s A)/d new_t = -A s / T, mean over the G K sequences
    expected = -u[..., None].expand(g, k, t) / (t * g * k)
    assert torch.allclose(grad(b, gspo_sequences), expected)
    # a sequence ratio of exp(1e-3) lies outside GSPO's [1 - 3e-4, 1 + 4e-4]: A > 0 stops
    b = batch(log_ratio=1e-3)
    got, u = grad(b, gspo_sequences), grpo_advantages(b.scores)
    assert torch.equal(got[u > 0], torch.zeros_like(got[u > 0]))
    assert (got[u < 0] != 0).all()  # the clip never cuts the side that moves back


def test_cispo_keeps_every_tokens_gradient_with_a_clipped_weight():
    b = batch(log_ratio=math.log(10.0))  # far outside any PPO clip
    u = grpo_advantages(b.scores)[..., None].expand_as(b.new)
    weight = 5.0  # min(10, 1 + 4): the weight is clipped, carries no gradient
    assert torch.allclose(grad(b, cispo_sequences), -weight * u / b.new.numel())
    assert cispo_sequences(b).clipped == 1.0
    b = batch(log_ratio=math.log(0.5))  # no lower bound: the weight is the ratio itself
    u = grpo_advantages(b.scores)[..., None].expand_as(b.new)
    assert torch.allclose(grad(b, cispo_sequences), -0.5 * u / b.new.numel())


def test_rloo_leaves_each_answer_out_of_its_own_baseline():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 2.0]])
    loo = torch.stack(
        [rewards[0, i] - torch.cat([rewards[0, :i], rewards[0, i + 1 :]]).mean() for i in range(4)]
    )
    assert torch.allclose(rloo_advantages(rewards)[0], loo)
    b = batch()
    g, k, t = b.new.shape
    expected = -rloo_advantages(b.scores)[..., None].expand(g, k, t) / (g * k)
    assert torch.allclose(grad(b, rloo_sequences), expected)
    with pytest.raises(ValueError, match="K >= 2"):
        rloo_advantages(torch.ones(3, 1))


def test_every_family_member_is_silent_on_a_group_with_equal_scores():
    """All-fail (or all-succeed) groups give every method zero advantage, hence no gradient
    on the snapshot: the family differs from TPO elsewhere, not here."""
    b = batch()
    flat = GroupBatch(b.new, b.old, torch.zeros_like(b.scores))
    for name in (*FAMILY, "tpo", "grpo_per_token"):
        settings = methods.METHODS[name].settings
        assert torch.allclose(
            grad(flat, SEQUENCE_LOSSES[name], **settings), torch.zeros((), dtype=torch.float64)
        ), name


def test_tpo_and_grpo_keep_their_equations_on_the_contract():
    """On the snapshot TPO's gradient on each token is its sequence's ``(p - q) / G`` and
    GRPO's ``-A / (G K)``: every token of an answer carries its sequence's gradient."""
    b = batch()
    g, k, t = b.new.shape
    p = torch.softmax(b.old.sum(-1), -1)
    u = (b.scores - b.scores.mean(-1, keepdim=True)) / b.scores.std(-1, correction=0, keepdim=True)
    q = torch.softmax(torch.log_softmax(b.old.sum(-1), -1) + u, -1)
    assert torch.allclose(grad(b, tpo_sequences), ((p - q) / g)[..., None].expand(g, k, t))
    expected = -grpo_advantages(b.scores)[..., None].expand(g, k, t) / (g * k)
    assert torch.allclose(grad(b, grpo_sequences, beta=0.0), expected)


def test_the_contract_refuses_bad_shapes_before_any_loss():
    new = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"\(G, K, T\)"):
        GroupBatch(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="scores must be"):
        GroupBatch(new, new, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="old has shape"):
        GroupBatch(new, torch.zeros(2, 3, 5), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        GroupBatch(new, new.clone().fill_(math.nan), torch.zeros(2, 3))


def test_every_stage_reads_the_catalogue_and_a_missing_function_fails_loudly():
    with pytest.raises(RuntimeError, match="no function"):
        methods.registry("llm", {"tpo": None})
    with pytest.raises(RuntimeError, match="does not give it"):
        methods.registry("one_group", {"pg": 0, "clipped": 0, "tpo": 0, "dapo": 0})
    assert set(methods.implemented("llm")) >= set(FAMILY)
    for m in methods.CATALOGUE:
        assert m.family in methods.FAMILIES and set(m.stages) <= set(methods.STAGES), m.name
    from tpo_core.teaching.style import COLORS, METHOD_LABELS

    assert all(name in COLORS and name in METHOD_LABELS for name in methods.METHODS)


def test_a_name_the_catalogue_gives_a_stage_it_lacks_is_refused():
    from tpo_core.llm.config import RLVRConfig

    with pytest.raises(ValueError, match="the LLM loop runs"):
        RLVRConfig(model="m", method="grpo").validate()
    with pytest.raises(ValueError, match="own paper"):
        RLVRConfig(model="m", method="dapo", clip_eps=0.3).validate()
    with pytest.raises(ValueError, match="unknown method"):
        TrainConfig(method="sapo").validate()


@pytest.mark.parametrize("name", FAMILY)
def test_the_token_engine_runs_each_family_member(name):
    config = TrainConfig(
        method=name, task="copy", reward="terminal", length=3, batch=16, k=4, episodes=6
    )
    result = train(config, progress=False)
    assert len(result.error) == 6 and all(math.isfinite(x) for x in result.grad_norm)
    assert config.resolved.epochs == methods.METHODS[name].epochs
    start = initial_model(config)
    moved = [
        not torch.equal(a, b)
        for a, b in zip(start.parameters(), result.model.parameters(), strict=True)
    ]
    assert any(moved)


def test_snapshot_push_is_each_methods_closed_form_on_one_group():
    """One success among 8 answers of 10 equally likely tokens: TPO pushes each token by
    q - p (one group), GRPO by A / K, per-token GRPO by A / (K T), RLOO by its leave-one-out
    advantage / K; an all-fail group gets no push from any of them."""
    k, t = 8, 10
    scores = torch.tensor([1.0] + [0.0] * (k - 1))
    p = torch.full((k,), 1 / k, dtype=torch.float64)
    u = grpo_advantages(scores).double()
    q = p * torch.exp(u) / (p * torch.exp(u)).sum()
    expected = {
        "tpo": q - p,
        "grpo": u / k,
        "grpo_per_token": u / (k * t),
        "rloo": rloo_advantages(scores).double() / k,
    }
    for name, push in expected.items():
        assert torch.allclose(snapshot_push(name, scores, length=t), push), name
    for name in (*FAMILY, "tpo", "grpo"):
        assert torch.allclose(
            snapshot_push(name, torch.zeros(k), length=t), torch.zeros(k, dtype=torch.float64)
        )


def test_snapshot_push_defaults_are_the_catalogues_settings():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    for name in SEQUENCE_LOSSES:
        settings = methods.METHODS[name].settings
        assert torch.equal(
            snapshot_push(name, scores, 3), snapshot_push(name, scores, 3, **settings)
        )
