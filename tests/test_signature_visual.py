"""The signature visual, "PG has a direction; TPO has a destination", against closed forms.

PG's endpoint after E steps is known exactly (:func:`pg_endpoint`), TPO's
fixed point is ``q``, and the clipped surrogate stops outside its ratio box.
Each figure is built headless and its data checked against those facts.
"""

import math

import pytest
import torch

import tpo_core as tc
from tpo_core import teaching as tt
from tpo_core.group import (
    descend_group,
    descend_groups,
    descend_shared,
    endpoint_map,
    group_panel,
    group_view,
    pg_endpoint,
    random_features,
    random_group,
    ratio_box,
    settling_lr,
    target_family,
)
from tpo_core.teaching.figures.simplex import SIMPLEX_PATHS
from tpo_core.teaching.style import KL_FLOOR

DOUBLE = torch.float64
P_OLD = torch.tensor([0.5, 0.3, 0.2], dtype=DOUBLE)
SCORES = torch.tensor([-1.0, 0.0, 1.0], dtype=DOUBLE)


def _kl(q, p):
    return float((q * (q / p).log()).sum())


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pg_endpoint_is_the_iterated_descent_and_a_tempered_target(seed):
    p_old, scores = random_group(5, seed)
    lr, epochs = 0.3, 17
    walked = descend_group(p_old, scores, "pg", lr, epochs).probs[-1]
    torch.testing.assert_close(pg_endpoint(p_old, scores, lr, epochs), walked)
    # Free logits: PG lands on TPO's target at temperature K / (lr E).
    tempered = group_view(p_old, scores, eta=5 / (lr * epochs)).q
    torch.testing.assert_close(walked, tempered)


def test_pg_endpoint_with_shared_features_equals_descent_on_the_parameters():
    """Autograd descent on ``theta`` (logits ``log p_old + Phi theta``) against the closed form."""
    p_old, scores = random_group(4, seed=3)
    phi = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=DOUBLE)
    theta = torch.zeros(6, dtype=DOUBLE, requires_grad=True)
    advantages = tc.grpo_advantages(scores)
    for _ in range(9):
        log_p = torch.log_softmax(p_old.log() + phi @ theta, -1)
        (grad,) = torch.autograd.grad(tc.pg_loss(log_p, advantages), theta)
        theta = (theta - 0.05 * grad).detach().requires_grad_()
    autograd_end = torch.softmax(p_old.log() + phi @ theta.detach(), -1)
    torch.testing.assert_close(pg_endpoint(p_old, scores, 0.05, 9, features=phi), autograd_end)
    walked = descend_group(p_old, scores, "pg", 0.05, 9, features=phi).probs[-1]
    torch.testing.assert_close(walked, autograd_end)


def test_tpo_with_shared_features_descends_autograd_of_the_library_loss():
    p_old, scores = random_group(4, seed=5)
    phi = torch.randn(4, 7, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)
    q = group_view(p_old, scores).q
    theta = torch.zeros(7, dtype=DOUBLE, requires_grad=True)
    for _ in range(6):
        logits = p_old.log() + phi @ theta
        (grad,) = torch.autograd.grad(tc.tpo_loss(logits, q), theta)
        theta = (theta - 0.2 * grad).detach().requires_grad_()
    expected = torch.softmax(p_old.log() + phi @ theta.detach(), -1)
    walked = descend_group(p_old, scores, "tpo", 0.2, 6, features=phi).probs[-1]
    torch.testing.assert_close(walked, expected)


def test_bad_features_and_grids_are_refused():
    with pytest.raises(ValueError, match="features must be a finite"):
        descend_group(P_OLD, SCORES, "pg", 1.0, 3, features=torch.ones(2, 4))
    with pytest.raises(ValueError, match="non-empty"):
        endpoint_map(P_OLD, SCORES, [], [1, 2])
    with pytest.raises(ValueError, match="lr must be positive"):
        endpoint_map(P_OLD, SCORES, [0.1, -1.0], [1, 2])
    with pytest.raises(ValueError, match="feature_dim"):
        group_panel(groups=2, k=5, feature_dim=3)


def test_settling_lr_is_where_tpo_descent_stops_converging():
    p_old, scores = random_group(5, seed=0)
    q = group_view(p_old, scores).q
    limit = settling_lr(q)
    below = descend_group(p_old, scores, "tpo", 0.97 * limit, 3000).kl_to_target[-1]
    above = descend_group(p_old, scores, "tpo", 1.03 * limit, 3000).kl_to_target[-1]
    assert below < 1e-12 and above > 1e-4
    # Two candidates: the Hessian's one non-zero eigenvalue is 2 a (1 - a).
    assert math.isclose(settling_lr([0.3, 0.7]), 1 / (0.3 * 0.7), rel_tol=1e-12)
    # The curvature never exceeds 1/2, so no target settles only below lr = 4.
    draws = torch.distributions.Dirichlet(torch.ones(6, dtype=DOUBLE)).sample((200,))
    assert min(settling_lr(d) for d in draws) >= 4 - 1e-9
    assert math.isclose(settling_lr([0.5, 0.5]), 4.0)


def test_on_target_steps_are_the_runs_within_tol_pg_on_a_band_tpo_past_it():
    lrs, epochs = torch.logspace(-2, 0.5, 11).tolist(), list(range(1, 121))
    emap = endpoint_map(P_OLD, SCORES, lrs, epochs)
    total = torch.tensor([[lr * e for e in epochs] for lr in lrs], dtype=DOUBLE)
    torch.testing.assert_close(emap.total_steps(), total)
    for method in ("pg", "tpo"):
        steps = emap.on_target_steps(method, tol=1e-3)
        torch.testing.assert_close(steps, total[emap.kl[method] < 1e-3].sort().values)
    pg, tpo = emap.on_target_steps("pg", 1e-3), emap.on_target_steps("tpo", 1e-3)
    # PG's end point is the target at temperature K / (lr E): on q only near lr E = K / eta = 3.
    assert len(pg) > 0 and 2.5 < pg.min() <= 3 <= pg.max() < 3.5
    # TPO approaches q geometrically: it needs more total step than PG's band.
    assert tpo.min() > 2 * pg.max()
    assert emap.on_target_steps("clipped", 1e-3).numel() == 0
    with pytest.raises(ValueError, match="no runs of 'grpo'"):
        emap.on_target_steps("grpo")


def test_rank_deficient_features_stop_tpo_short_of_q_at_matched_feature_averages():
    p_old, scores = random_group(5, seed=0)
    q = group_view(p_old, scores).q
    phi = random_features(1, 5, feature_dim=2, seed=0)[0]  # (5, 2): rank 2 < K
    end = descend_group(p_old, scores, "tpo", 1.0, 4000, features=phi).probs[-1]
    torch.testing.assert_close(phi.T @ end, phi.T @ q, atol=1e-9, rtol=0)  # fixed point
    assert _kl(q, end) > 1e-2
    full = random_features(1, 5, feature_dim=8, seed=0)[0]  # rank 5 = K
    end = descend_group(p_old, scores, "tpo", 1.0, 4000, features=full).probs[-1]
    assert _kl(q, end) < 1e-9


def test_random_features_are_the_panels_and_reproducible():
    phi = random_features(3, 4, feature_dim=6, seed=2)
    assert phi.shape == (3, 4, 6) and torch.equal(phi, random_features(3, 4, 6, seed=2))
    panel = group_panel(groups=3, k=4, lrs=[0.1], epochs=2, feature_dim=6, seed=2)
    assert torch.equal(panel.features, phi)
    with pytest.raises(ValueError, match="feature_dim"):
        random_features(2, 4, feature_dim=0)


def test_descend_shared_is_autograd_descent_on_the_shared_parameters():
    p1, s1 = random_group(4, seed=1)
    p2, s2 = random_group(4, seed=2)
    p_old, scores = torch.stack([p1, p2]), torch.stack([s1, s2])
    phi = random_features(2, 4, feature_dim=5, seed=7)
    q = tc.tpo_target(p_old.log(), scores)
    theta = torch.zeros(5, dtype=DOUBLE, requires_grad=True)
    for _ in range(5):
        logits = p_old.log() + phi @ theta  # (G, K)
        (grad,) = torch.autograd.grad(tc.tpo_loss(logits, q), theta)
        theta = (theta - 0.7 * grad).detach().requires_grad_()
    probs, grads = descend_shared(p_old, scores, phi, "tpo", 0.7, 5)
    assert probs.shape == (6, 2, 4) and grads.shape == (5, 2, 4)
    torch.testing.assert_close(probs[-1], torch.softmax(p_old.log() + phi @ theta.detach(), -1))
    torch.testing.assert_close(grads[0], p_old - q)


def test_a_flat_group_moves_through_shared_weights_and_tpo_pulls_it_back():
    p1, s1 = random_group(5, seed=0)
    p2, _ = random_group(5, seed=1)
    p_old, scores = torch.stack([p1, p2]), torch.stack([s1, torch.full((5,), 0.7, dtype=DOUBLE)])
    phi = random_features(2, 5, seed=0)
    for method in ("clipped", "tpo"):
        probs, grads = descend_shared(p_old, scores, phi, method, 1.0, 4)
        assert grads[0, 1].abs().max() == 0  # on the snapshot the flat group is neutral
        assert (probs[1:, 1] - p2).abs().max() > 1e-3  # the other group's steps move it
        if method == "tpo":  # its target is p_old: the gradient p - p_old pulls it back
            torch.testing.assert_close(grads[1:, 1], probs[1:-1, 1] - p2)
            assert grads[1:, 1].abs().max() > 1e-3
        else:  # zero advantages: nothing in the clipped surrogate pulls it back
            assert grads[:, 1].abs().max() == 0
    with pytest.raises(ValueError, match=r"\(G, K\)"):
        descend_shared(p1, s1, phi, "tpo", 1.0, 2)
    with pytest.raises(ValueError, match="features must be a finite"):
        descend_shared(p_old, scores, phi[:1], "tpo", 1.0, 2)


# ---------------------------------------------------------------- simplex


def test_simplex_figure_end_points_equal_the_closed_forms():
    lrs, epochs = [0.05, 0.5, 2.0], 60
    fig = tt.simplex_figure(P_OLD, SCORES, lrs, epochs, start=1)
    view = group_view(P_OLD, SCORES)
    names = [t.name for t in fig.data]
    q_trace = fig.data[3]
    assert "q" in names[3] and [q_trace.a[0], q_trace.b[0], q_trace.c[0]] == pytest.approx(
        view.q.tolist()
    )
    moving = fig.layout.sliders[0].steps
    assert [s.label for s in moving] == [f"{lr:.3g}" for lr in lrs]
    a_ = tc.grpo_advantages(SCORES)
    for lr, step in zip(lrs, moving, strict=True):
        data, traces = step.args
        ends = {
            m: torch.tensor([data[key][2 * i + 1][0] for key in "abc"], dtype=DOUBLE)
            for i, m in enumerate(("pg", "clipped", "tpo"))
        }
        torch.testing.assert_close(ends["pg"], pg_endpoint(P_OLD, SCORES, lr, epochs))
        if lr * epochs >= 100:  # enough total step for TPO to arrive
            torch.testing.assert_close(ends["tpo"], view.q, atol=1e-6, rtol=0)
        ratio = ends["clipped"] / P_OLD
        if lr >= 0.5:  # the brake has engaged on every candidate
            assert ((a_ > 0) & (ratio >= 1.2) | (a_ < 0) & (ratio <= 0.8) | (a_ == 0)).all()
        assert list(traces) == list(range(4, 10))
    # The drawn paths are the slider's starting step.
    start = fig.layout.sliders[0].steps[1].args[0]
    assert list(fig.data[4].a) == pytest.approx(start["a"][0])


def test_simplex_family_passes_through_q_and_box_sits_on_the_ratio_lines():
    view = group_view(P_OLD, SCORES)
    family = target_family(view)
    # q (eta = 1, t = 1) lies on PG's road: some drawn t is within a small step of it.
    assert (family - view.q).abs().max(-1).values.min() < 0.02
    segments = ratio_box(view)
    assert len(segments) == 6  # (1 - eps) and (1 + eps) p_old_i for each i: every bound is < 1 here
    for start, end in segments:
        for point in (torch.tensor(start, dtype=DOUBLE), torch.tensor(end, dtype=DOUBLE)):
            assert math.isclose(float(point.sum()), 1.0)
            assert (point >= 0).all() and (point == 0).sum() == 1  # on an edge of the triangle
        # both ends share the bounded candidate's probability: a line p_i = (1 +- eps) p_old_i
        i = next(i for i in range(3) if start[i] == end[i] and start[i] > 0)
        assert any(math.isclose(start[i] / float(P_OLD[i]), x) for x in (0.8, 1.2))


def test_simplex_needs_three_candidates():
    with pytest.raises(ValueError, match="K = 3"):
        tt.simplex_figure(*random_group(4), [1.0], 5)


# ---------------------------------------------------------------- heatmap


def test_endpoint_map_pg_cells_are_closed_form_and_tpo_cells_sit_on_q():
    lrs, epochs = [0.01, 0.1, 0.5, 1.0, 2.0], [1, 5, 20, 100, 200]
    emap = endpoint_map(P_OLD, SCORES, lrs, epochs)
    q = group_view(P_OLD, SCORES).q
    for i, lr in enumerate(lrs):
        for j, e in enumerate(epochs):
            pg = pg_endpoint(P_OLD, SCORES, lr, e)
            assert math.isclose(float(emap.kl["pg"][i, j]), _kl(q, pg), rel_tol=1e-9, abs_tol=1e-15)
            if lr * e >= 40:
                assert emap.kl["tpo"][i, j] < 1e-8
    # The same cells as separate descents.
    tpo = descend_groups(P_OLD, SCORES, ("tpo",), 0.5, 20)["tpo"]
    assert math.isclose(float(emap.kl["tpo"][2, 2]), float(tpo.kl_to_target[-1]), rel_tol=1e-9)


def test_endpoint_figure_draws_the_map_and_pgs_line():
    lrs, epochs = [0.05, 0.2, 1.0], [1, 10, 100]
    emap = endpoint_map(P_OLD, SCORES, lrs, epochs)
    fig = tt.endpoint_figure(emap, k=3)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert [t.name for t in heatmaps] == ["pg", "clipped", "tpo"]
    for trace in heatmaps:
        z = torch.tensor(trace.z, dtype=DOUBLE)
        torch.testing.assert_close(z, emap.kl[trace.name].clamp_min(KL_FLOOR).log10())
    line = next(t for t in fig.data if t.type == "scatter")
    assert all(math.isclose(x * y, 3.0) for x, y in zip(line.x, line.y, strict=True))


# ---------------------------------------------------------------- panel


def test_group_panel_pg_is_closed_form_per_group_and_tpo_reaches_every_q():
    panel = group_panel(groups=6, k=4, lrs=[0.02, 0.1, 0.5], epochs=30, feature_dim=6, seed=3)
    for g in range(6):
        q = group_view(panel.p_old[g], panel.scores[g]).q
        for i, lr in enumerate(panel.lrs):
            pg = pg_endpoint(panel.p_old[g], panel.scores[g], lr, 30, features=panel.features[g])
            assert math.isclose(float(panel.kl["pg"][g, i]), _kl(q, pg), rel_tol=1e-9)
    # TPO's fixed point is q whatever the (full-rank) features: every group arrives.
    long = group_panel(groups=20, lrs=[2.0], epochs=3000)
    assert long.kl["tpo"].max() < 1e-7


def test_panel_figure_marks_each_groups_best_pg_lr():
    panel = group_panel(groups=5, epochs=50)
    fig = tt.panel_figure(panel)
    assert len(fig.data) == 2 * 5 + 1
    markers = fig.data[-1]
    assert list(markers.x) == panel.best_lr("pg")


def test_simplex_explorer_redraws_the_paths_for_its_sliders():
    from tpo_core.teaching.explorers.group import SimplexExplorer

    explorer = SimplexExplorer(P_OLD, SCORES, lr=0.5, epochs=30)
    explorer.lr_slider.value, explorer.epochs_slider.value = 0.1, 50
    pg_end = explorer.figure.data[SIMPLEX_PATHS[1]]
    expected = pg_endpoint(P_OLD, SCORES, explorer.lr_slider.value, 50)
    assert [pg_end.a[0], pg_end.b[0], pg_end.c[0]] == pytest.approx(expected.tolist())
    assert len(explorer.figure.data[SIMPLEX_PATHS[0]].a) == 51
    assert "lr × epochs = 5" in explorer.figure.layout.title.text
