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
    endpoint_map,
    group_panel,
    group_view,
    pg_endpoint,
    random_group,
    ratio_box,
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
