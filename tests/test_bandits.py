"""Tabular bandits: exact updates against the closed forms, and the paper's orderings."""

import math

import pytest
import torch

from tpo_core import bandits

DOUBLE = torch.float64


def random_contexts(n=64, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=DOUBLE) * 2
    correct = torch.randint(k, (n,), generator=g)
    return logits, correct


@pytest.mark.parametrize("method", bandits.MULTI_CONTEXT_METHODS)
@pytest.mark.parametrize("k", [2, 10, 37])
def test_exact_update_is_beta_times_oneshot_direction(method, k):
    logits, correct = random_contexts(k=k, seed=k)
    probs = torch.softmax(logits, -1)
    p = probs.gather(-1, correct[:, None])[:, 0]
    direction = torch.nn.functional.one_hot(correct, k).to(DOUBLE) - probs
    expected = bandits.beta_coefficient(method, p, k)[:, None] * direction
    torch.testing.assert_close(bandits.exact_update(method, logits, correct), expected)


def test_expected_update_matches_enumeration_over_actions():
    logits, correct = random_contexts(n=5, k=6, seed=3)
    probs = torch.softmax(logits, -1)
    weight = torch.randn(5, 6, dtype=DOUBLE)
    eye = torch.eye(6, dtype=DOUBLE)
    enumerated = sum(probs[:, a, None] * weight[:, a, None] * (eye[a] - probs) for a in range(6))
    torch.testing.assert_close(bandits.expected_update(probs, weight), enumerated)


def test_beta_values_at_p_one_tenth():
    # Derived: lambda = exp(10/3); TPO beta = 0.1 (lambda - 1) / (0.9 + 0.1 lambda).
    lam = math.exp(10 / 3)
    assert bandits.tpo_lambda(10) == pytest.approx(lam)
    assert 27 < lam < 29  # "about 28 for K = 10"
    beta = {m: float(bandits.beta_coefficient(m, 0.1, 10)) for m in ("tpo", "grpo", "dg")}
    assert beta["tpo"] == pytest.approx(0.1 * (lam - 1) / (0.9 + 0.1 * lam))
    assert beta["grpo"] == pytest.approx(math.sqrt(0.1 / 0.9))
    assert beta["dg"] == pytest.approx(0.1 / 1.1)
    assert round(beta["tpo"], 2) == 0.73 and round(beta["grpo"], 2) == 0.33
    assert round(beta["dg"], 2) == 0.09


def test_dg_closed_form_equals_reference_code_form():
    p = torch.linspace(0.01, 0.99, 50, dtype=DOUBLE)
    torch.testing.assert_close(bandits.beta_coefficient("dg", p), p * torch.sigmoid(-p.log()))


def test_sampled_updates_average_to_the_exact_update_for_pg():
    # PG with baseline 0.5: the sample mean of g converges to pi(y)(e_y - pi).
    logits = torch.randn(1, 8, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)
    correct = torch.tensor([2])
    g = bandits.sampled_update(
        "pg", logits.repeat(4000, 1), correct.repeat(4000), 50, torch.Generator().manual_seed(0)
    )
    exact = bandits.exact_update("pg", logits, correct)[0]
    # pg_loss averages over the 4000 x 50 samples: undo that scale.
    torch.testing.assert_close(g.sum(0), exact, atol=0.01, rtol=0)


def test_sampled_tpo_direction_is_q_minus_pi():
    logits = torch.zeros(3, 5, dtype=DOUBLE)
    g = bandits.sampled_update(
        "tpo", logits, torch.tensor([0, 1, 2]), 20, torch.Generator().manual_seed(0)
    )
    assert torch.allclose(
        g.sum(-1), torch.zeros(3, dtype=DOUBLE), atol=1e-12
    )  # q and pi both sum to 1


def test_step_budget_sums_to_one_and_starves_hard_contexts_for_dg_and_grpo():
    p = torch.tensor([0.02, 0.3, 0.9], dtype=DOUBLE)  # hard, medium, easy
    for method in bandits.MULTI_CONTEXT_METHODS:
        assert float(bandits.step_budget(method, p).sum()) == pytest.approx(1.0)
    share = {m: bandits.step_budget(m, p)[0].item() for m in ("tpo", "dg", "grpo")}
    assert share["tpo"] > 3 * share["dg"] and share["tpo"] > 3 * share["grpo"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown method"):
        bandits.exact_update("sgd", *random_contexts())
    with pytest.raises(ValueError, match="strictly between"):
        bandits.beta_coefficient("tpo", 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        bandits.tpo_lambda(1)
    with pytest.raises(ValueError, match="unknown method"):
        bandits.run_single_context(methods=("ce",), steps=1, seeds=1)


def test_runs_are_reproducible():
    a = bandits.run_single_context(steps=5, seeds=4, seed=3)
    b = bandits.run_single_context(steps=5, seeds=4, seed=3)
    for m in a:
        assert torch.equal(a[m].error, b[m].error)


def test_single_context_paper_ordering():
    """The paper's single-context bandit at its settings: TPO and DG end below PG and GRPO;
    TPO best aligned."""
    curves = bandits.run_single_context()
    final = {m: c.error[:, -1].mean().item() for m, c in curves.items()}
    assert max(final["tpo"], final["dg"]) < min(final["pg"], final["grpo"])
    assert final["tpo"] < 0.01 and final["dg"] < 0.01
    misalignment = {m: c.misalignment.mean().item() for m, c in curves.items()}
    assert misalignment["tpo"] == min(misalignment.values())


def test_multi_context_paper_ordering():
    """The paper's multi-context bandit at 100 seeds: CE fastest; TPO lowest final error of
    the RL updates and closest to the CE direction; DG and GRPO ahead of TPO early on."""
    curves = bandits.run_multi_context(methods=("ce", "dg", "grpo", "tpo"))
    final = {m: c.error[:, -1].mean().item() for m, c in curves.items()}
    assert final["ce"] == min(final.values())
    assert final["tpo"] < min(final["dg"], final["grpo"])
    misalignment = {m: c.misalignment.mean().item() for m in curves for c in [curves[m]]}
    assert misalignment["tpo"] < min(misalignment["dg"], misalignment["grpo"])
    early = {m: c.error[:, 100].mean().item() for m, c in curves.items()}
    assert early["dg"] < early["tpo"] and early["grpo"] < early["tpo"]
