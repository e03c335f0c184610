"""Kernel-free twins of the notebooks' explorers: plotly figures over precomputed states.

Each twin is a plain plotly figure whose sliders step through states that
:mod:`tpo_core` computed beforehand, so it runs in a browser with no Python
behind it (the course site shows these beside a note that the live version
is in the notebook). A figure with one slider restyles its traces directly;
the group-target twin has two sliders (eta and one score), which
:data:`TWO_SLIDERS_JS` composes from a table of every combination stored in
the figure's ``layout.meta``; :func:`twin_html` adds it where it is needed.

* :func:`target_twin`: the one-group target (notebook 01's first explorer);
* :func:`overshoot_twin`: p(best), KL and gradient norm over epochs, one step per lr;
* :func:`beta_twin`: the exact-update weights beta(p), one step per K;
* the signature triangle is :func:`tpo_core.teaching.simplex_figure` itself.
"""

from __future__ import annotations

import torch

from tpo_core.group import descend_groups, group_view
from tpo_core.teaching.figures.bandits import (
    beta_figure,
    beta_series,
    beta_title,
)
from tpo_core.teaching.figures.group import (
    group_figure,
    group_title,
    overshoot_figure,
    overshoot_series,
)
from tpo_core.teaching.style import candidate_labels

TWO_SLIDERS_JS = """
var gd = document.getElementById('{plot_id}');
var active = {};
gd.on('plotly_sliderchange', function (event) {
  active[event.slider.name] = parseInt(event.step.value, 10);
  var names = gd.layout.meta.sliders, index = [];
  for (var k = 0; k < names.length; k++) {
    index.push(active[names[k]] === undefined ? gd.layout.sliders[k].active : active[names[k]]);
  }
  var state = gd.layout.meta.states[index[0]][index[1]];
  Plotly.restyle(gd, {y: state.y}, gd.layout.meta.traces);
  Plotly.relayout(gd, {'title.text': state.title});
});
"""
"""Composes two sliders: ``layout.meta`` holds ``sliders`` (their names, in order), ``traces``
(the indices restyled) and ``states[i][j]`` (``y`` per trace and a ``title``)."""


def twin_html(fig) -> str:
    """A twin (or any figure) as an HTML fragment for a page that loads plotly.js once itself."""
    two_sliders = bool(fig.layout.meta) and "sliders" in fig.layout.meta
    return fig.to_html(
        include_plotlyjs=False, full_html=False, post_script=TWO_SLIDERS_JS if two_sliders else None
    )


def _steps(labels, restyles=None, traces=None) -> list[dict]:
    if restyles is None:  # the script does the work: these steps only report their index
        return [dict(method="skip", label=label, value=str(i)) for i, label in enumerate(labels)]
    return [
        dict(method="restyle", label=label, value=str(i), args=[restyle, traces])
        for i, (label, restyle) in enumerate(zip(labels, restyles, strict=True))
    ]


def target_twin(p_old, scores, etas, score_index: int, score_values, start=(0, 0)):
    """``group_figure`` with an eta slider and a slider for candidate ``score_index``'s score.

    ``layout.meta["states"][i][j]`` is the group at ``etas[i]`` with that score set to
    ``score_values[j]``: ``y`` for the traces p_old, q, u and p - q, and the title.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if not 0 <= score_index < scores.numel():
        raise ValueError(f"score_index must be in [0, {scores.numel()}), got {score_index}")
    states = []
    for eta in etas:
        row = []
        for value in score_values:
            s = scores.clone()
            s[score_index] = value
            view = group_view(p_old, s, eta)
            y = [v.tolist() for v in (view.p_old, view.q, view.u, view.gradient)]
            row.append(dict(y=y, title=group_title(view)))
        states.append(row)
    i, j = start
    s = scores.clone()
    s[score_index] = score_values[j]
    fig = group_figure(group_view(p_old, s, etas[i]))
    label = candidate_labels(scores.numel())[score_index]
    fig.update_layout(
        meta=dict(sliders=["eta", "score"], traces=[0, 1, 2, 3], states=states),
        sliders=[
            dict(
                name="eta",
                active=i,
                currentvalue=dict(prefix="η = "),
                y=-0.12,
                len=0.45,
                steps=_steps([f"{e:.3g}" for e in etas]),
            ),
            dict(
                name="score",
                active=j,
                currentvalue=dict(prefix=f"score of {label} = "),
                x=0.55,
                y=-0.12,
                len=0.45,
                steps=_steps([f"{v:.3g}" for v in score_values]),
            ),
        ],
        height=620,
        margin=dict(b=140),
    )
    return fig


def overshoot_twin(p_old, scores, lrs, epochs: int = 50, eta: float = 1.0, start: int = 0):
    """``overshoot_figure`` with one slider step per learning rate (epochs on the x axis)."""
    view = group_view(p_old, scores, eta)
    series = []
    for lr in lrs:
        trajectories = list(descend_groups(p_old, scores, lr=lr, epochs=epochs, eta=eta).values())
        series.append(overshoot_series(trajectories, view))
    trajectories = list(
        descend_groups(p_old, scores, lr=lrs[start], epochs=epochs, eta=eta).values()
    )
    fig = overshoot_figure(trajectories, view)
    traces = list(range(len(series[0])))
    restyles = [dict(x=[x for x, _ in s], y=[y for _, y in s]) for s in series]
    fig.update_layout(
        sliders=[
            dict(
                active=start,
                currentvalue=dict(prefix="learning rate = "),
                y=-0.35,
                steps=_steps([f"{lr:.3g}" for lr in lrs], restyles, traces),
            )
        ],
        height=500,
        margin=dict(b=150),
    )
    return fig


def beta_twin(ks, start: int = 0):
    """``beta_figure`` with one slider step per number of actions K."""
    restyles, titles = [], []
    for k in ks:
        _, betas = beta_series(k)
        restyles.append(dict(y=betas))
        titles.append(beta_title(k))
    fig = beta_figure(ks[start])
    steps = _steps([str(k) for k in ks], restyles, list(range(len(fig.data))))
    for step, title in zip(steps, titles, strict=True):
        step["method"] = "update"
        step["args"] = [step["args"][0], {"title.text": title}, step["args"][1]]
    fig.update_layout(sliders=[dict(active=start, currentvalue=dict(prefix="K = "), steps=steps)])
    return fig
