"""Kernel-free twins: every precomputed state equals the library's values; each stays small."""

import pytest
import torch

from tpo_core.bandits.tabular import beta_coefficient
from tpo_core.group import descend_groups, group_view, random_group
from tpo_core.teaching.explorers import twins
from tpo_core.teaching.figures.bandits import BETA_METHODS, beta_series, beta_title
from tpo_core.teaching.figures.group import group_title, overshoot_series

P_OLD, SCORES = random_group(5, 0)
ETAS = torch.logspace(-1.3, 1.3, 27).tolist()
VALUES = [round(-2 + 0.2 * i, 1) for i in range(21)]
LIMIT = 2_000_000  # bytes of HTML per explorer, plotly.js itself loaded once by the page


def test_target_twin_states_are_the_groups_the_library_computes():
    fig = twins.target_twin(P_OLD, SCORES, ETAS, 3, VALUES, start=(13, 10))
    states = fig.layout.meta["states"]
    assert len(states) == len(ETAS) and all(len(row) == len(VALUES) for row in states)
    for i in (0, 13, 26):
        for j in (0, 7, 20):
            s = SCORES.clone()
            s[3] = VALUES[j]
            view = group_view(P_OLD, s, ETAS[i])
            want = [view.p_old, view.q, view.u, view.gradient]
            for got, expected in zip(states[i][j]["y"], want, strict=True):
                assert got == pytest.approx(expected.tolist())
            assert states[i][j]["title"] == group_title(view)
    for trace, y in zip(fig.data, states[13][10]["y"], strict=True):  # drawn = the start state
        assert list(trace.y) == pytest.approx(y)
    assert [s.name for s in fig.layout.sliders] == fig.layout.meta["sliders"] == ["eta", "score"]
    html = fig.to_html(include_plotlyjs=False, post_script=twins.TWO_SLIDERS_JS)
    assert "plotly_sliderchange" in html and "{plot_id}" not in html and len(html) < LIMIT


def test_overshoot_twin_steps_are_the_descents():
    lrs = torch.logspace(-2, 1, 31).tolist()
    fig = twins.overshoot_twin(P_OLD, SCORES, lrs, 50, start=15)
    view = group_view(P_OLD, SCORES)
    for index in (0, 15, 30):
        data, traces = fig.layout.sliders[0].steps[index].args
        runs = list(descend_groups(P_OLD, SCORES, lr=lrs[index], epochs=50).values())
        for trace, (x, y) in enumerate(overshoot_series(runs, view)):
            assert data["y"][trace] == pytest.approx(y) and list(data["x"][trace]) == list(x)
        assert list(traces) == list(range(len(fig.data)))
    assert len(fig.to_html(include_plotlyjs=False)) < LIMIT


def test_beta_twin_steps_are_the_closed_forms():
    ks = list(range(2, 51))
    fig = twins.beta_twin(ks, start=8)
    for index in (0, 8, 48):
        data, layout, _ = fig.layout.sliders[0].steps[index].args
        p, _ = beta_series(ks[index])
        for method, y in zip(BETA_METHODS, data["y"], strict=True):
            assert y == pytest.approx(beta_coefficient(method, p, ks[index]).tolist())
        assert layout["title.text"] == beta_title(ks[index])
    assert len(fig.to_html(include_plotlyjs=False)) < LIMIT


def test_twins_refuse_a_bad_score_index():
    with pytest.raises(ValueError, match="score_index"):
        twins.target_twin(P_OLD, SCORES, ETAS, 7, VALUES)
