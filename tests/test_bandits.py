"""Tabular bandits: exact updates against the closed forms, and the paper's orderings."""

import math

import pytest
import torch

from tpo_core import bandits
from tpo_core import teaching as tt
from tpo_core.teaching.figures.bandits import BETA_METHODS
from tpo_core.teaching.style import METHOD_LABELS

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


@pytest.mark.parametrize("method", bandits.MULTI_CONTEXT_METHODS)
@pytest.mark.parametrize("k", [3, 10])
def test_update_size_is_the_length_of_the_exact_update(method, k):
    # Direct: logits with mass p on the correct action and the rest spread evenly.
    p = torch.tensor([0.02, 0.3, 0.5, 0.9, 0.99], dtype=DOUBLE)
    probs = torch.cat([p[:, None], ((1 - p) / (k - 1))[:, None].expand(-1, k - 1)], -1)
    g = bandits.exact_update(method, probs.log(), torch.zeros(len(p), dtype=torch.long))
    torch.testing.assert_close(bandits.update_size(method, p, k), g.norm(dim=-1))


def test_grpo_update_shrinks_where_its_beta_grows():
    p = torch.tensor([0.9, 0.99, 0.999], dtype=DOUBLE)
    beta, size = bandits.beta_coefficient("grpo", p), bandits.update_size("grpo", p)
    assert (beta.diff() > 0).all() and (size.diff() < 0).all()
    torch.testing.assert_close(size, torch.sqrt(p * (1 - p) * 10 / 9))
    # Shares of a normalised step are p (1 - p) / sum: the p = 0.3 context gets the most.
    contexts = torch.tensor([0.02, 0.3, 0.9], dtype=DOUBLE)
    share = contexts * (1 - contexts)
    torch.testing.assert_close(bandits.step_budget("grpo", contexts), share / share.sum())
    assert bandits.step_budget("grpo", contexts).argmax() == 1


def test_step_budget_sums_to_one_and_starves_hard_contexts_for_dg_and_grpo():
    p = torch.tensor([0.02, 0.3, 0.9], dtype=DOUBLE)  # hard, medium, easy
    for method in bandits.MULTI_CONTEXT_METHODS:
        assert float(bandits.step_budget(method, p).sum()) == pytest.approx(1.0)
    share = {m: bandits.step_budget(m, p)[0].item() for m in ("tpo", "dg", "grpo")}
    assert share["tpo"] > 3 * share["dg"] and share["tpo"] > 3 * share["grpo"]


def test_an_all_fail_batch_moves_every_method_but_grpo():
    k = 20
    logits = torch.zeros(1, k, dtype=DOUBLE)
    correct = torch.tensor([0])
    actions = torch.arange(1, 9)[None]  # eight failures, none on the correct action
    for method in bandits.SINGLE_CONTEXT_METHODS:
        g = bandits.batch_update(method, logits, correct, actions)
        if method == "grpo":  # every reward equal: every z-score is 0
            assert g.abs().max() == 0
            continue
        assert g[0, 0] > 0 and (g[0, 1:9] < 0).all()  # failures down, the correct action up
        torch.testing.assert_close(g[0, 9:], g[0, 0].expand(k - 9))  # unsampled alike


def test_all_fail_step_raises_the_unsampled_correct_action_except_for_grpo():
    for method in bandits.SINGLE_CONTEXT_METHODS:
        before, after = bandits.all_fail_step(method, k=30, batch=20)
        assert before == pytest.approx(1 / 30)
        assert after == pytest.approx(before) if method == "grpo" else after > before


def test_batch_update_is_what_sampled_update_draws():
    logits = torch.randn(3, 6, generator=torch.Generator().manual_seed(2), dtype=DOUBLE)
    correct = torch.tensor([0, 1, 2])
    for method in bandits.SINGLE_CONTEXT_METHODS:
        drawn = bandits.sampled_update(method, logits, correct, 5, torch.Generator().manual_seed(7))
        probs = torch.log_softmax(logits, -1).exp()
        actions = torch.multinomial(
            probs, 5, replacement=True, generator=torch.Generator().manual_seed(7)
        )
        torch.testing.assert_close(drawn, bandits.batch_update(method, logits, correct, actions))


def test_steps_to_and_misalignment_per_seed():
    error = torch.tensor([[0.9, 0.5, 0.05, 0.01], [0.9, 0.8, 0.7, 0.6]], dtype=DOUBLE)
    misalignment = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.6]], dtype=DOUBLE)
    curves = bandits.BanditCurves("tpo", error, misalignment)
    steps = curves.steps_to(0.05)
    assert steps[0] == 2 and torch.isnan(steps[1])
    torch.testing.assert_close(
        curves.misalignment_per_seed(), torch.tensor([0.2, 0.2], dtype=DOUBLE)
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown method"):
        bandits.exact_update("sgd", *random_contexts())
    with pytest.raises(ValueError, match="strictly between"):
        bandits.beta_coefficient("tpo", 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        bandits.tpo_lambda(1)
    with pytest.raises(ValueError, match="unknown method"):
        bandits.run_single_context(methods=("ce",), steps=1, seeds=1)
    with pytest.raises(ValueError, match=r"\(S, B\)"):
        bandits.batch_update("pg", torch.zeros(2, 4), torch.tensor([0, 1]), torch.tensor([0, 1]))


def test_runs_are_reproducible():
    a = bandits.run_single_context(steps=5, seeds=4, seed=3)
    b = bandits.run_single_context(steps=5, seeds=4, seed=3)
    for m in a:
        assert torch.equal(a[m].error, b[m].error)


def test_single_context_paper_ordering():
    """The paper's single-context bandit at its settings: TPO and DG end below PG and GRPO and
    reach 1% first; both are far better aligned than PG and GRPO."""
    curves = bandits.run_single_context()
    final = {m: c.error[:, -1].mean().item() for m, c in curves.items()}
    assert max(final["tpo"], final["dg"]) < min(final["pg"], final["grpo"])
    assert final["tpo"] < 0.01 and final["dg"] < 0.01
    to_1pc = {m: c.steps_to(0.01).mean().item() for m, c in curves.items()}
    assert max(to_1pc["tpo"], to_1pc["dg"]) < min(to_1pc["pg"], to_1pc["grpo"])
    misalignment = {m: c.misalignment.mean().item() for m, c in curves.items()}
    assert 3 * max(misalignment["tpo"], misalignment["dg"]) < min(
        misalignment["pg"], misalignment["grpo"]
    )


def test_multi_context_paper_ordering():
    """The paper's multi-context bandit at 100 seeds: CE reaches 1% first and ends lowest; TPO
    lowest final error of the RL updates and closest to the CE direction; DG and GRPO ahead
    of TPO (and CE) early on."""
    curves = bandits.run_multi_context(methods=("ce", "dg", "grpo", "tpo"))
    final = {m: c.error[:, -1].mean().item() for m, c in curves.items()}
    assert final["ce"] == min(final.values())
    to_1pc = {m: c.steps_to(0.01).nanmean().item() for m, c in curves.items()}
    assert to_1pc["ce"] == min(to_1pc.values())
    assert final["tpo"] < min(final["dg"], final["grpo"])
    misalignment = {m: c.misalignment.mean().item() for m in curves for c in [curves[m]]}
    assert misalignment["tpo"] < min(misalignment["dg"], misalignment["grpo"])
    early = {m: c.error[:, 100].mean().item() for m, c in curves.items()}
    assert early["dg"] < early["tpo"] and early["grpo"] < early["tpo"]
    assert early["ce"] == max(early.values())


def test_update_size_figure_draws_the_closed_form():
    fig = tt.update_size_figure(10)
    grpo = next(t for t in fig.data if t.name == METHOD_LABELS["grpo"])
    assert list(grpo.y) == pytest.approx(bandits.update_size("grpo", list(grpo.x), 10).tolist())
    assert len(fig.data) == len(BETA_METHODS) and "K = 10" in fig.layout.title.text


def test_concentration_share_figure_draws_its_data():
    fig = tt.concentration_share_figure([0.2, 0.5], {"pg": [1.0, 1.2], "tpo": [1.0, 3.0]}, 0.5)
    assert [t.name for t in fig.data] == [METHOD_LABELS["pg"], METHOD_LABELS["tpo"]]
    assert list(fig.data[1].y) == [1.0, 3.0] and "0.5" in fig.layout.title.text
