"""Notebook 01's machinery: group anatomy, logit descent, explorers built headless, exercises."""

import math

import pytest
import torch

import tpo_core as tc
from tpo_core import teaching as tt
from tpo_core.group import descend_group, group_view, random_group
from tpo_core.teaching.exercises import nb01
from tpo_core.teaching.explorers.group import GroupExplorer, OvershootExplorer

DOUBLE = torch.float64


# ---------------------------------------------------------------- group_view


def test_group_view_matches_tpo_target_and_gradient():
    p_old, scores = random_group(6, seed=4)
    view = group_view(p_old, scores, eta=0.5)
    torch.testing.assert_close(view.q, tc.tpo_target(p_old.log(), scores, 0.5))
    torch.testing.assert_close(view.u, tc.standardize_scores(scores))
    logits = p_old.log().requires_grad_()
    tc.tpo_loss(logits, view.q).backward()
    torch.testing.assert_close(view.gradient, logits.grad)
    assert math.isclose(view.kl_q_p_old, float((view.q * (view.q / view.p_old).log()).sum()))
    assert math.isclose(view.entropy_q, float(-(view.q * view.q.log()).sum()))


def test_unstandardised_view_uses_raw_scores():
    view = group_view([1 / 3] * 3, [100.0, 0.0, -100.0], standardize=False)
    assert view.q[0] > 1 - 1e-12  # an almost one-hot target
    z_view = group_view([1 / 3] * 3, [100.0, 0.0, -100.0])
    torch.testing.assert_close(z_view.q, group_view([1 / 3] * 3, [1.0, 0.0, -1.0]).q)


def test_random_group_is_reproducible_and_valid():
    a, b = random_group(7, seed=3), random_group(7, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[0] > 0).all() and math.isclose(float(a[0].sum()), 1.0)
    assert not torch.equal(a[0], random_group(7, seed=4)[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: group_view([0.5, 0.5], [1.0, 0.0, 2.0]), "candidates"),
        (lambda: group_view([0.5, 0.0], [1.0, 0.0]), "strictly positive"),
        (lambda: group_view([0.5, 0.5], [math.nan, 0.0]), "finite"),
        (lambda: group_view([1.0], [1.0]), "at least 2"),
        (lambda: group_view([0.5, 0.5], [1.0, 0.0], eta=0), "eta"),
        (lambda: descend_group([0.5, 0.5], [1.0, 0.0], "adam", 1.0, 3), "unknown method"),
        (lambda: descend_group([0.5, 0.5], [1.0, 0.0], "tpo", 0.0, 3), "lr"),
        (lambda: descend_group([0.5, 0.5], [1.0, 0.0], "tpo", 1.0, 0), "epochs"),
        (lambda: random_group(1), "k"),
    ],
)
def test_group_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- descent


def test_descent_first_steps_follow_each_method_closed_form():
    p_old, scores = random_group(5, seed=1)
    k, lr = 5, 0.3
    u = tc.grpo_advantages(scores)
    q = group_view(p_old, scores).q
    pg = descend_group(p_old, scores, "pg", lr, 1)
    # PG with mean reduction: gradient -(A - p sum A) / K = -A / K since sum A = 0.
    torch.testing.assert_close(pg.probs[1], torch.softmax(p_old.log() + lr * u / k, -1))
    tpo = descend_group(p_old, scores, "tpo", lr, 1)
    torch.testing.assert_close(tpo.probs[1], torch.softmax(p_old.log() - lr * (p_old - q), -1))
    # At the snapshot the clipped surrogate's gradient is PG's (ratio 1, inside the clip).
    clipped = descend_group(p_old, scores, "clipped", lr, 1)
    torch.testing.assert_close(clipped.probs[1], pg.probs[1])


def test_tpo_settles_on_target_while_pg_overshoots():
    p_old, scores = random_group(5, seed=0)
    view = group_view(p_old, scores)
    best = int(view.u.argmax())
    tpo = descend_group(p_old, scores, "tpo", lr=2.0, epochs=50)
    pg = descend_group(p_old, scores, "pg", lr=2.0, epochs=50)
    torch.testing.assert_close(tpo.probs[-1], view.q, atol=1e-3, rtol=0)
    assert tpo.grad_norm[-1] < 1e-2 * tpo.grad_norm[0]
    assert pg.probs[-1, best] > view.q[best] + 0.1  # passed the target ...
    assert pg.probs[-1, best] > 0.99  # ... and collapsed onto one candidate
    assert math.isclose(float(pg.grad_norm[-1]), float(pg.grad_norm[0]), rel_tol=1e-6)
    assert pg.kl_to_target[-1] > 10 * tpo.kl_to_target[-1]


def test_clipped_surrogate_stops_with_zero_gradient():
    p_old, scores = random_group(5, seed=0)
    traj = descend_group(p_old, scores, "clipped", lr=1.0, epochs=40)
    assert traj.grad_norm[-1] == 0
    ratio = traj.probs[-1] / p_old
    a = tc.grpo_advantages(scores)
    # Every candidate ends outside the trust region in its advantage's direction.
    assert ((a > 0) & (ratio > 1.2) | (a < 0) & (ratio < 0.8) | (a == 0)).all()


# ---------------------------------------------------------------- figures


def test_group_figure_traces_equal_the_view():
    view = group_view(*random_group(4, seed=2))
    fig = tt.group_figure(view)
    assert [t.name for t in fig.data] == ["p_old", "q", "u", "gradient"]
    for trace, values in zip(fig.data, (view.p_old, view.q, view.u, view.gradient), strict=True):
        assert list(trace.y) == pytest.approx(values.tolist())


def test_overshoot_figure_series_and_target_line():
    p_old, scores = random_group(4, seed=2)
    view = group_view(p_old, scores)
    trajs = [descend_group(p_old, scores, m, 1.0, 7) for m in ("pg", "clipped", "tpo")]
    fig = tt.overshoot_figure(trajs, view)
    assert len(fig.data) == 3 * 3 + 1 and fig.data[-1].name == "target"
    best = int(view.u.argmax())
    assert list(fig.data[-1].y) == pytest.approx([float(view.q[best])] * 2)
    assert list(fig.data[6].y) == pytest.approx(trajs[2].probs[:, best].tolist())
    assert len(fig.data[2].y) == 7 and len(fig.data[0].y) == 8


# ---------------------------------------------------------------- explorers


def test_group_explorer_updates_traces_from_sliders():
    ex = GroupExplorer(k=5, seed=0)
    for slider, value in zip(ex.score_sliders, [2.0, -1.0, 0.5, 0.0, 3.0], strict=True):
        slider.value = value
    ex.eta_slider.value = 0.4
    expected = tc.tpo_target(ex.p_old.log(), torch.tensor(ex.scores, dtype=DOUBLE), 0.4)
    torch.testing.assert_close(ex.target(), expected)
    by_name = {t.name: list(t.y) for t in ex.figure.data}
    assert by_name["q"] == pytest.approx(expected.tolist())
    assert by_name["gradient"] == pytest.approx((ex.p_old - expected).tolist())
    assert f"{tc.kl_divergence(expected, ex.p_old):.4f}" in ex.readout.value


def test_group_explorer_standardise_toggle_and_resample():
    ex = GroupExplorer(k=3, seed=1)
    for slider, value in zip(ex.score_sliders, [100.0, 0.0, -100.0], strict=True):
        slider.value = min(max(value, slider.min), slider.max)  # sliders clamp to [-10, 10]
    z_q = ex.target()
    ex.standardize_toggle.value = False
    raw_q = torch.softmax(ex.p_old.log() + torch.tensor(ex.scores, dtype=DOUBLE), -1)
    torch.testing.assert_close(ex.target(), raw_q)
    assert raw_q.max() > z_q.max()
    old = ex.p_old.clone()
    ex.resample_button.click()
    assert not torch.equal(old, ex.p_old)
    assert list(ex.figure.data[0].y) == pytest.approx(ex.p_old.tolist())


def test_group_explorer_changes_k():
    ex = GroupExplorer(k=4)
    ex.k_slider.value = 9
    assert len(ex.score_sliders) == 9 and len(ex.figure.data[1].y) == 9
    before = list(ex.figure.data[1].y)
    ex.score_sliders[8].value = 9.5  # new sliders are wired up too
    assert ex.scores[8] == 9.5 and list(ex.figure.data[1].y) != before
    assert list(ex.figure.data[1].y) == pytest.approx(group_view(ex.p_old, ex.scores).q.tolist())
    ex.k_slider.value = 2
    assert len(ex.target()) == 2 and len(ex.figure.data[3].x) == 2


def test_overshoot_explorer_pg_ends_farther_from_q_than_tpo_at_large_lr():
    ex = OvershootExplorer(k=5, seed=0)
    ex.epochs_slider.value = 30
    ex.lr_slider.value = 3.0
    kl = {m: float(t.kl_to_target[-1]) for m, t in ex.trajectories.items()}
    assert kl["pg"] > 100 * kl["tpo"]
    assert list(ex.figure.data[2].y) == pytest.approx(ex.trajectories["pg"].grad_norm.tolist())
    assert len(ex.figure.data[0].y) == 31
    ex.lr_slider.value = 0.01  # undershoot: PG barely moves
    best = int(ex.view.u.argmax())
    moved = abs(float(ex.trajectories["pg"].probs[-1, best] - ex.p_old[best]))
    assert moved < 0.1 * abs(float(ex.view.q[best] - ex.p_old[best]))


def test_overshoot_explorer_reaches_200_epochs_where_more_epochs_cure_only_tpo():
    ex = OvershootExplorer(k=5, lr=0.1, epochs=20, seed=0)
    best = int(ex.view.u.argmax())
    target = float(ex.view.q[best])
    short = {m: float(t.probs[-1, best]) for m, t in ex.trajectories.items()}
    assert short["pg"] < target and short["tpo"] < target  # lr x E = 2 < K / eta = 5
    ex.epochs_slider.value = ex.epochs_slider.max
    assert ex.epochs_slider.max == 200 and len(ex.figure.data[0].y) == 201
    long = {m: float(t.probs[-1, best]) for m, t in ex.trajectories.items()}
    assert abs(long["tpo"] - target) < 0.01 and long["pg"] > target + 0.2


def test_overshoot_explorer_new_group_redraws_target():
    ex = OvershootExplorer(seed=0)
    before = list(ex.figure.data[-1].y)
    ex.resample_button.click()
    assert list(ex.figure.data[-1].y) != before
    best = int(ex.view.u.argmax())
    assert list(ex.figure.data[-1].y) == pytest.approx([float(ex.view.q[best])] * 2)


def test_explorers_display_as_widgets():
    bundle = GroupExplorer()._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


# ---------------------------------------------------------------- exercises


def test_exercises_accept_the_computed_answer_and_reject_others():
    q = group_view(**{k: v for k, v in nb01.PREDICT_Q.items()}).q.tolist()
    assert tt.check("01-predict-q", q).correct
    assert not tt.check("01-predict-q", [1 / 3] * 3).correct
    raw = group_view(nb01.PREDICT_Q["p_old"], nb01.PREDICT_Q["scores"], standardize=False)
    assert "standardise" in tt.check("01-predict-q", raw.q.tolist()).message
    assert not tt.check("01-predict-q", [0.5, 0.5]).correct  # wrong length, graded not crashed

    assert not tt.check("01-half-mass-eta", 1.0).correct
    assert "raise" in tt.check("01-half-mass-eta", 1.0).message

    assert tt.check("01-pg-overshoot", "Above").correct
    assert not tt.check("01-pg-overshoot", "below").correct
    assert tt.check("01-tiny-variance", math.sqrt(3)).correct
    assert not tt.check("01-tiny-variance", 0.001).correct


def test_half_mass_eta_exists_and_is_accepted():
    lo, hi = 0.05, 20.0  # q_best falls as eta grows: bisect for q_best = 1/2
    for _ in range(60):
        mid = (lo + hi) / 2
        q_best = group_view(nb01.HALF_MASS["p_old"], nb01.HALF_MASS["scores"], mid).q[0]
        lo, hi = (mid, hi) if q_best > 0.5 else (lo, mid)
    assert tt.check("01-half-mass-eta", lo).correct
    assert f"{lo:.2f}" in tt.solution("01-half-mass-eta")


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match="01-predict-q"):
        tt.check("nope", 1)


def test_feedback_renders_without_the_solution():
    fb = tt.check("01-tiny-variance", 0.0)
    assert "❌" in repr(fb) and "Not yet" in fb._repr_html_()
    assert tt.solution("01-tiny-variance") not in fb._repr_html_()


@pytest.mark.parametrize("seed", range(5))
def test_group_gradient_closed_forms_equal_autograd_of_library_losses(seed):
    from tpo_core.group import group_gradient

    p_old, scores = random_group(6, seed)
    log_p_old = p_old.log()
    q = group_view(p_old, scores).q
    a = tc.grpo_advantages(scores)
    # A point away from the snapshot, so some ratios sit outside the clip region.
    g = torch.Generator().manual_seed(seed)
    logits = log_p_old + 0.4 * torch.randn(6, generator=g, dtype=DOUBLE)
    losses = {
        "pg": lambda z: tc.pg_loss(torch.log_softmax(z, -1), a),
        "clipped": lambda z: tc.grpo_loss(torch.log_softmax(z, -1), log_p_old, a, beta=0.0),
        "tpo": lambda z: tc.tpo_loss(z, q),
    }
    for method, loss in losses.items():
        z = logits.clone().requires_grad_()
        (auto,) = torch.autograd.grad(loss(z), z)
        torch.testing.assert_close(group_gradient(method, logits, log_p_old, q, a), auto)


@pytest.mark.parametrize("eta", [0.05, 0.3, 1.0, 7.0])
def test_mirror_ascent_finds_the_tpo_target(eta):
    from tpo_core.group import maximise_kl_objective

    p_old, scores = random_group(6, seed=9)
    view = group_view(p_old, scores, eta)
    torch.testing.assert_close(maximise_kl_objective(p_old, view.u, eta), view.q, atol=1e-6, rtol=0)


def test_targets_figure_has_one_trace_per_target():
    views = {
        "z": group_view([0.5, 0.5], [1.0, 0.0]),
        "raw": group_view([0.5, 0.5], [1.0, 0.0], standardize=False),
    }
    fig = tt.targets_figure(views)
    assert [t.name for t in fig.data] == ["p_old", "z", "raw"]
    assert list(fig.data[2].y) == pytest.approx(views["raw"].q.tolist())


def test_log_slider_grids_hold_the_default_values():
    # Front-ends snap a log slider to min + n * step in the exponent: 1.0 must be on that grid.
    ex = OvershootExplorer()
    for slider in (ex.eta_slider, ex.lr_slider):
        n = (math.log10(1.0) - slider.min) / slider.step
        assert abs(n - round(n)) < 1e-9
        assert 10**slider.min <= 1.0 <= 10**slider.max


# ---------------------------------------------------------------- bandit figures and explorer


def test_curves_figure_draws_band_and_mean_per_method():
    fig = tt.curves_figure({"tpo": ([0, 1, 2], [0.5, 0.3, 0.1], [0.1, 0.05, 0.0])}, log_y=True)
    band, line = fig.data
    assert line.name == "TPO" and list(line.y) == [0.5, 0.3, 0.1]
    assert list(band.y) == pytest.approx([0.6, 0.35, 0.1, 0.1, 0.25, 0.4])
    assert fig.layout.yaxis.type == "log"


def test_beta_and_budget_figures_follow_the_closed_forms():
    from tpo_core.bandits import beta_coefficient, step_budget

    fig = tt.beta_figure(10)
    tpo = next(t for t in fig.data if t.name == "TPO")
    assert list(tpo.y) == pytest.approx(beta_coefficient("tpo", list(tpo.x), 10).tolist())
    bars = tt.budget_figure([0.02, 0.5], ["hard", "easy"], 10)
    grpo = next(t for t in bars.data if t.name == "GRPO")
    assert list(grpo.y) == pytest.approx(step_budget("grpo", [0.02, 0.5], 10).tolist())


def test_beta_explorer_updates_in_place():
    from tpo_core.bandits import beta_coefficient, step_budget
    from tpo_core.teaching.explorers.bandits import BetaExplorer

    ex = BetaExplorer(k=10)
    ex.k_slider.value = 40
    tpo = ex.beta_figure.data[1]
    assert list(tpo.y) == pytest.approx(beta_coefficient("tpo", list(tpo.x), 40).tolist())
    assert "K = 40" in ex.beta_figure.layout.title.text
    ex.p_sliders["hard"].value = 0.2
    share = step_budget("tpo", ex.p_values, 40).tolist()
    assert list(ex.budget_figure.data[1].y) == pytest.approx(share)
