"""TPO's math and its baselines, checked against closed forms and autograd."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tpo_core as tc

DOUBLE = torch.float64


def random_group(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    old = torch.randn(shape, generator=g, dtype=DOUBLE) * 2
    scores = torch.randn(shape, generator=g, dtype=DOUBLE)
    return old, scores


def kl_objective(r, u, p_old, eta):
    """The KL-regularised improvement TPO's target maximises (notebook 01)."""
    return (r * u).sum(-1) - eta * (r * (r.log() - p_old.log())).sum(-1)


# ------------------------------------------------------------------ standardize


def test_standardize_matches_population_zscore():
    s = torch.tensor([3.0, 1.0, 2.0, 6.0], dtype=DOUBLE)
    mean = s.sum() / 4
    std = math.sqrt(((s - mean) ** 2).sum().item() / 4)
    torch.testing.assert_close(tc.standardize_scores(s), (s - mean) / std)


def test_standardize_zero_variance_group_is_zero():
    s = torch.tensor([[2.0, 2.0, 2.0], [1.0, 0.0, 1.0]])
    u = tc.standardize_scores(s)
    assert torch.equal(u[0], torch.zeros(3))
    assert u[1].abs().sum() > 0


def test_standardize_along_other_dim():
    s = torch.randn(4, 5, dtype=DOUBLE)
    torch.testing.assert_close(tc.standardize_scores(s, dim=0), tc.standardize_scores(s.T).T)


# ------------------------------------------------------------------ the target


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 6)])
def test_tpo_loss_gradient_is_p_minus_q(shape):
    old, scores = random_group(shape)
    q = tc.tpo_target(old, scores, eta=0.7)
    logits = (old + torch.randn(shape, dtype=DOUBLE)).requires_grad_()
    tc.tpo_loss(logits, q).backward()
    n_groups = math.prod(shape[:-1])
    p = torch.softmax(logits.detach(), -1)
    torch.testing.assert_close(logits.grad, (p - q) / n_groups)


def test_tpo_target_closed_form():
    p_old = torch.tensor([0.5, 0.3, 0.2], dtype=DOUBLE)
    scores = torch.tensor([0.0, 1.0, 5.0], dtype=DOUBLE)
    u = (scores - scores.mean()) / scores.std(correction=0)
    eta = 0.5
    w = p_old * torch.exp(u / eta)
    torch.testing.assert_close(tc.tpo_target(p_old.log() + 3.0, scores, eta), w / w.sum())


def test_target_maximises_kl_regularised_objective():
    old, scores = random_group((6,), seed=3)
    eta = 0.8
    p_old = torch.softmax(old, -1)
    u = tc.standardize_scores(scores)
    z = torch.zeros(6, dtype=DOUBLE, requires_grad=True)
    opt = torch.optim.LBFGS([z], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = -kl_objective(torch.softmax(z, -1), u, p_old, eta)
        loss.backward()
        return loss

    opt.step(closure)
    q = tc.tpo_target(old, scores, eta)
    torch.testing.assert_close(torch.softmax(z, -1).detach(), q, atol=1e-6, rtol=1e-5)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(2, 8),
    st.floats(0.05, 20.0),
    st.integers(0, 10_000),
)
def test_target_beats_any_other_distribution(k, eta, seed):
    old, scores = random_group((k,), seed)
    p_old = torch.softmax(old, -1)
    u = tc.standardize_scores(scores)
    q = tc.tpo_target(old, scores, eta)
    others = torch.distributions.Dirichlet(torch.ones(k, dtype=DOUBLE)).sample((64,))
    assert (kl_objective(q, u, p_old, eta) >= kl_objective(others, u, p_old, eta) - 1e-9).all()


def test_zero_variance_group_gives_p_old_and_zero_gradient():
    old = torch.tensor([[0.3, -1.0, 2.0]], dtype=DOUBLE)
    scores = torch.full((1, 3), 0.7, dtype=DOUBLE)
    q = tc.tpo_target(old, scores)
    torch.testing.assert_close(q, torch.softmax(old, -1))
    logits = old.clone().requires_grad_()
    tc.tpo_loss(logits, q).backward()
    torch.testing.assert_close(logits.grad, torch.zeros_like(old), atol=1e-15, rtol=0)


@settings(max_examples=50, deadline=None)
@given(st.floats(1e-3, 1e3), st.floats(-1e3, 1e3), st.integers(0, 10_000))
def test_target_invariant_to_positive_affine_scores(a, b, seed):
    old, scores = random_group((2, 5), seed)
    torch.testing.assert_close(
        tc.tpo_target(old, scores), tc.tpo_target(old, a * scores + b), atol=1e-7, rtol=1e-6
    )


def test_eta_limits():
    old, scores = random_group((7,), seed=5)
    torch.testing.assert_close(tc.tpo_target(old, scores, eta=1e6), torch.softmax(old, -1))
    q_sharp = tc.tpo_target(old, scores, eta=1e-3)
    assert q_sharp[scores.argmax()] > 1 - 1e-9


def test_masked_padding_matches_unpadded_group():
    old, scores = random_group((5,), seed=7)
    padded_old = torch.cat([old, torch.tensor([9.0, -3.0], dtype=DOUBLE)])
    padded_scores = torch.cat([scores, torch.tensor([100.0, -100.0], dtype=DOUBLE)])
    mask = torch.tensor([True] * 5 + [False] * 2)
    q_padded = tc.tpo_target(padded_old, padded_scores, mask=mask)
    torch.testing.assert_close(q_padded[:5], tc.tpo_target(old, scores))
    assert torch.equal(q_padded[5:], torch.zeros(2, dtype=DOUBLE))
    # The loss on the padded group equals the loss on the real candidates.
    logits = torch.randn(5, dtype=DOUBLE)
    padded_logits = torch.cat([logits, torch.tensor([50.0, 0.0], dtype=DOUBLE)])
    torch.testing.assert_close(
        tc.tpo_loss(padded_logits, q_padded, mask=mask), tc.tpo_loss(logits, q_padded[:5])
    )


def test_masked_groups_of_unequal_size_in_one_batch():
    old, scores = random_group((2, 4), seed=11)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    q = tc.tpo_target(old, scores, mask=mask)
    torch.testing.assert_close(q[0], tc.tpo_target(old[0], scores[0]))
    torch.testing.assert_close(q[1, :2], tc.tpo_target(old[1, :2], scores[1, :2]))


def test_minus_inf_old_log_prob_gets_zero_mass():
    old = torch.tensor([0.0, -math.inf, 0.0])
    q = tc.tpo_target(old, torch.tensor([1.0, 5.0, 0.0]))
    assert q[1] == 0 and torch.isclose(q.sum(), torch.tensor(1.0))


def test_stability_with_huge_logit_spread_and_bf16():
    old = torch.tensor([[1e4, 0.0, -1e4, 5.0]])
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    q = tc.tpo_target(old, scores)
    loss = tc.tpo_loss(old * 1.5, q)
    assert torch.isfinite(q).all() and torch.isfinite(loss)
    q16 = tc.tpo_target(old.bfloat16(), scores.bfloat16())
    assert q16.dtype == torch.float32 and torch.isfinite(q16).all()
    logits16 = torch.randn(3, 8).bfloat16().requires_grad_()
    loss16 = tc.tpo_loss(logits16, tc.tpo_target(torch.zeros(3, 8), torch.randn(3, 8)))
    loss16.backward()
    assert loss16.dtype == torch.float32 and torch.isfinite(logits16.grad.float()).all()


def test_target_is_detached():
    old = torch.zeros(4, requires_grad=True)
    assert not tc.tpo_target(old, torch.arange(4.0)).requires_grad


# ------------------------------------------------------------------ ablations


def test_no_anchor_target_ignores_old_policy():
    scores = torch.tensor([1.0, 0.0, -1.0], dtype=DOUBLE)
    u = torch.tensor([math.sqrt(1.5), 0.0, -math.sqrt(1.5)], dtype=DOUBLE)
    torch.testing.assert_close(tc.tpo_target_no_anchor(scores, eta=2.0), torch.softmax(u / 2, -1))
    # Masked: the two real scores (1, 0) standardise to (1, -1).
    q = tc.tpo_target_no_anchor(scores, mask=torch.tensor([True, True, False]))
    two = torch.tensor([2.0, -2.0], dtype=DOUBLE)
    torch.testing.assert_close(q, torch.cat([torch.sigmoid(two), torch.zeros(1, dtype=DOUBLE)]))


def test_group_pg_loss_value_and_gradient():
    logits = torch.tensor([[-1.0, -2.0, -0.5]], dtype=DOUBLE, requires_grad=True)
    scores = torch.tensor([[1.0, 0.0, -1.0]], dtype=DOUBLE)
    u = torch.tensor([[math.sqrt(1.5), 0.0, -math.sqrt(1.5)]], dtype=DOUBLE)
    loss = tc.group_pg_loss(logits, scores)
    torch.testing.assert_close(loss, -(u * logits).sum())
    loss.backward()
    torch.testing.assert_close(logits.grad, -u)


# ------------------------------------------------------------------ per-sample baselines


def test_pg_loss_hand_case():
    l = torch.tensor([math.log(0.5), math.log(0.25)], dtype=DOUBLE, requires_grad=True)
    a = torch.tensor([1.0, -2.0], dtype=DOUBLE)
    loss = tc.pg_loss(l, a)
    torch.testing.assert_close(
        loss, -(math.log(0.5) - 2 * math.log(0.25)) / 2 * torch.ones((), dtype=DOUBLE)
    )
    loss.backward()
    torch.testing.assert_close(l.grad, -a / 2)


def test_pg_loss_masked_mean():
    l = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]], dtype=DOUBLE)
    a = torch.tensor([[1.0], [2.0]], dtype=DOUBLE)
    mask = torch.tensor([[True, False], [True, True]])
    expected = -(1 * -1.0 + 2 * -3.0 + 2 * -4.0) / 3
    torch.testing.assert_close(tc.pg_loss(l, a, mask), torch.tensor(expected, dtype=DOUBLE))


def test_dg_loss_gate():
    p = torch.tensor([0.1, 0.8], dtype=DOUBLE)
    l = p.log().requires_grad_()
    a = torch.tensor([1.0, -1.0], dtype=DOUBLE)
    eta = 2.0
    gate = [
        1 / (1 + math.exp(-(1.0 * -math.log(0.1)) / eta)),
        1 / (1 + math.exp(-(-1.0 * -math.log(0.8)) / eta)),
    ]
    gate = torch.tensor(gate, dtype=DOUBLE)
    loss = tc.dg_loss(l, a, eta=eta)
    torch.testing.assert_close(loss, (-(gate * a) * p.log()).mean())
    loss.backward()  # the gate is a constant: d/dl = -w A / N
    torch.testing.assert_close(l.grad, -gate * a / 2)


def test_ppo_loss_clips_only_in_advantage_direction():
    l_old = torch.zeros(4, dtype=DOUBLE)
    l = torch.tensor([math.log(1.5), math.log(1.5), math.log(0.5), math.log(1.1)], dtype=DOUBLE)
    l.requires_grad_()
    a = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=DOUBLE)
    # rho = 1.5, A > 0: clipped at 1.2, no gradient.  rho = 1.5, A < 0: unclipped.
    # rho = 0.5, A < 0: clipped at 0.8, no gradient. rho = 1.1 inside the region.
    surrogate = torch.tensor([1.2, -1.5, -0.8, 1.1], dtype=DOUBLE)
    loss = tc.ppo_loss(l, l_old, a, clip_eps=0.2)
    torch.testing.assert_close(loss, -surrogate.mean())
    loss.backward()
    expected_grad = torch.tensor([0.0, 1.5, 0.0, -1.1], dtype=DOUBLE) / 4
    torch.testing.assert_close(l.grad, expected_grad)


def test_grpo_advantages_hand_case():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=DOUBLE)
    std = math.sqrt(0.25 * 0.75)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=DOUBLE) / (std + 1e-8)
    torch.testing.assert_close(tc.grpo_advantages(r), expected)
    assert torch.equal(tc.grpo_advantages(torch.ones(3)), torch.zeros(3))
    masked = tc.grpo_advantages(
        torch.tensor([1.0, 0.0, 7.0]), mask=torch.tensor([True, True, False])
    )
    torch.testing.assert_close(masked, torch.tensor([1.0, -1.0, 0.0]), atol=1e-6, rtol=0)


def test_grpo_loss_is_ppo_plus_k3_kl():
    g = torch.Generator().manual_seed(0)
    l_old = torch.randn(3, 4, generator=g, dtype=DOUBLE)
    l = l_old + 0.3 * torch.randn(3, 4, generator=g, dtype=DOUBLE)
    a = tc.grpo_advantages(torch.randn(3, 4, generator=g, dtype=DOUBLE))
    d = l_old - l
    k3 = torch.exp(d) - d - 1
    expected = tc.ppo_loss(l, l_old, a) + 0.04 * k3.mean()
    torch.testing.assert_close(tc.grpo_loss(l, l_old, a, beta=0.04), expected)
    torch.testing.assert_close(tc.grpo_loss(l, l_old, a, beta=0.0), tc.ppo_loss(l, l_old, a))
    ref = torch.zeros_like(l)
    d_ref = ref - l
    expected_ref = tc.ppo_loss(l, l_old, a) + 0.1 * (torch.exp(d_ref) - d_ref - 1).mean()
    torch.testing.assert_close(tc.grpo_loss(l, l_old, a, beta=0.1, ref_log_probs=ref), expected_ref)


def test_grpo_per_token_with_sequence_advantages():
    l = torch.randn(2, 3, 5, dtype=DOUBLE)
    a = tc.grpo_advantages(torch.randn(2, 3, dtype=DOUBLE))[..., None]  # broadcast over tokens
    mask = torch.rand(2, 3, 5) > 0.3
    mask[..., 0] = True
    expected = (-a * torch.ones_like(l))[mask].mean()  # ratio 1 on the snapshot: surrogate = A
    torch.testing.assert_close(tc.grpo_loss(l, l, a, mask=mask), expected)


def test_k3_is_zero_at_equality_and_positive_elsewhere():
    l = torch.randn(10, dtype=DOUBLE)
    assert torch.equal(tc.kl_k3(l, l), torch.zeros(10, dtype=DOUBLE))
    assert (tc.kl_k3(l, l + torch.linspace(-3, 3, 10, dtype=DOUBLE)) >= 0).all()
    assert torch.isfinite(tc.kl_k3(torch.tensor([0.0]), torch.tensor([1e4]))).all()


def test_sequence_log_probs_respects_padding():
    tok = torch.tensor([[-0.5, -1.0, -9.0], [-0.1, -0.2, -0.3]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(tc.sequence_log_probs(tok, mask), torch.tensor([-1.5, -0.6]))
    torch.testing.assert_close(tc.sequence_log_probs(tok), tok.sum(-1))


def test_entropy_and_kl():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=DOUBLE)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=DOUBLE)
    torch.testing.assert_close(tc.entropy(p), torch.tensor(math.log(2), dtype=DOUBLE))
    torch.testing.assert_close(tc.kl_divergence(p, q), torch.tensor(math.log(2), dtype=DOUBLE))
    assert tc.kl_divergence(q, q) == 0


# ------------------------------------------------------------------ bad input

GOOD = torch.zeros(2, 3)
SCORES = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: tc.tpo_target(GOOD, torch.zeros(2, 4)), ValueError, "shape"),
        (
            lambda: tc.tpo_target(GOOD, torch.tensor([[1.0, math.nan, 0], [0, 1, 2]])),
            ValueError,
            "NaN",
        ),
        (
            lambda: tc.tpo_target(GOOD, torch.tensor([[1.0, math.inf, 0], [0, 1, 2]])),
            ValueError,
            "infinite",
        ),
        (lambda: tc.tpo_target(GOOD, SCORES, eta=0.0), ValueError, "eta"),
        (lambda: tc.tpo_target(GOOD, SCORES, eta=-1.0), ValueError, "eta"),
        (lambda: tc.tpo_target(GOOD, SCORES, eta=math.inf), ValueError, "eta"),
        (lambda: tc.tpo_target(GOOD, SCORES, eta=math.nan), ValueError, "eta"),
        (lambda: tc.tpo_target(GOOD, SCORES, eta="hot"), TypeError, "eta"),
        (lambda: tc.tpo_target(torch.zeros(2, 0), torch.zeros(2, 0)), ValueError, "empty group"),
        (
            lambda: tc.tpo_target(GOOD, SCORES, mask=torch.tensor([[True] * 3, [False] * 3])),
            ValueError,
            "every candidate masked",
        ),
        (lambda: tc.tpo_target(GOOD, SCORES, mask=torch.ones(2, 3)), TypeError, "mask"),
        (
            lambda: tc.tpo_target(GOOD, SCORES, mask=torch.ones(3, 2, dtype=torch.bool)),
            ValueError,
            "shape",
        ),
        (
            lambda: tc.tpo_target(torch.full((2, 3), -math.inf), SCORES),
            ValueError,
            "-inf for every candidate",
        ),
        (
            lambda: tc.tpo_target(torch.tensor([[0.0, math.nan, 0], [0, 0, 0]]), SCORES),
            ValueError,
            "old_log_probs",
        ),
        (
            lambda: tc.tpo_target(GOOD, torch.tensor([[1, 0, 2], [0, 1, 1]])),
            TypeError,
            "floating-point",
        ),
        (
            lambda: tc.tpo_target(torch.zeros(2, 3, dtype=torch.long), SCORES),
            TypeError,
            "old_log_probs",
        ),
        (lambda: tc.tpo_target([0.0, 0.0], [1.0, 0.0]), TypeError, "torch.Tensor"),
        (lambda: tc.tpo_target(torch.tensor(0.0), torch.tensor(1.0)), ValueError, "scalar"),
        (lambda: tc.tpo_loss(GOOD, torch.zeros(3, 2)), ValueError, "shape"),
        (
            lambda: tc.tpo_loss(torch.tensor([[0.0, math.nan, 0]]), torch.ones(1, 3) / 3),
            ValueError,
            "log_probs",
        ),
        (lambda: tc.tpo_loss(GOOD, -torch.ones(2, 3)), ValueError, "negative"),
        (lambda: tc.tpo_loss(torch.zeros(2, 3, dtype=torch.int32), GOOD), TypeError, "log_probs"),
        (lambda: tc.tpo_loss(torch.zeros(1, 0), torch.zeros(1, 0)), ValueError, "empty group"),
        (lambda: tc.standardize_scores(torch.tensor([1, 2, 3])), TypeError, "scores"),
        (lambda: tc.standardize_scores(torch.zeros(0)), ValueError, "empty"),
        (lambda: tc.standardize_scores(torch.tensor([1.0, math.nan])), ValueError, "NaN"),
        (lambda: tc.tpo_target_no_anchor(SCORES, eta=0), ValueError, "eta"),
        (lambda: tc.group_pg_loss(GOOD, torch.zeros(3)), ValueError, "shape"),
        (lambda: tc.pg_loss(torch.zeros(3), torch.zeros(4)), ValueError, "broadcast"),
        (
            lambda: tc.pg_loss(torch.zeros(3), torch.tensor([0.0, math.nan, 0.0])),
            ValueError,
            "advantages",
        ),
        (lambda: tc.pg_loss(torch.zeros(0), torch.zeros(0)), ValueError, "empty"),
        (
            lambda: tc.pg_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.bool)),
            ValueError,
            "no entry",
        ),
        (lambda: tc.dg_loss(torch.zeros(3), torch.zeros(3), eta=-2), ValueError, "eta"),
        (
            lambda: tc.ppo_loss(torch.zeros(3), torch.zeros(4), torch.zeros(3)),
            ValueError,
            "old_log_probs",
        ),
        (
            lambda: tc.ppo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), clip_eps=1.5),
            ValueError,
            "clip_eps",
        ),
        (
            lambda: tc.grpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), beta=-1),
            ValueError,
            "beta",
        ),
        (lambda: tc.grpo_advantages(torch.zeros(2, 0)), ValueError, "empty group"),
        (lambda: tc.grpo_advantages(torch.tensor([1.0, math.inf])), ValueError, "infinite"),
        (
            lambda: tc.sequence_log_probs(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.bool)),
            ValueError,
            "shape",
        ),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()
