"""Figures of the token tasks (notebooks 04-05): a replayed batch (also the LLM loop's replayed
group, notebooks 06-07), each method's push on one prefix state, Muon's step (the refresher's
figure), and the final errors, every seed and per cell, next to the paper's Table 3.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpo_core.stats import bootstrap_interval
from tpo_core.teaching.style import COLORS, KL_FLOOR, LAYOUT, METHOD_LABELS
from tpo_core.tokens.model import muon_spectrum


def replay_figure(replays: dict, title: str = "") -> go.Figure:
    """Epochs on one frozen batch (:func:`tpo_core.tokens.replay.replay`), one line per method.

    Panels: ``KL(q ‖ p)`` over informative groups; the policy's mass on the
    best-scored candidates against the target's (dashed); and the drift
    ``KL(p_0 ‖ p)`` of zero-variance groups, drawn when any of them moved.
    """
    # Zero-variance groups whose candidates all coincide keep p = p_0 trivially (token
    # states of V = 2): their panel is drawn only when some group could and did move.
    flat = any(d > KL_FLOOR for r in replays.values() for d in r.flat_drift if d == d)
    titles = ["KL(q ‖ p): distance to the target", "mass on the best candidates"]
    fig = make_subplots(
        rows=1,
        cols=3 if flat else 2,
        horizontal_spacing=0.08,
        subplot_titles=titles + ["drift of all-equal groups, KL(p₀ ‖ p)"] * flat,
    )
    for name, r in replays.items():
        style = dict(mode="lines", line_color=COLORS.get(r.method, "#333333"), legendgroup=name)
        epochs = list(range(len(r.kl_to_target)))
        kl = [max(v, KL_FLOOR) for v in r.kl_to_target]
        fig.add_scatter(x=epochs, y=kl, name=name, row=1, col=1, **style)
        fig.add_scatter(
            x=epochs, y=r.success_mass, name=name, showlegend=False, row=1, col=2, **style
        )
        if flat:
            drift = [max(v, KL_FLOOR) for v in r.flat_drift]
            fig.add_scatter(x=epochs, y=drift, name=name, showlegend=False, row=1, col=3, **style)
    target = next(iter(replays.values()))
    fig.add_scatter(
        x=[0, len(target.kl_to_target) - 1],
        y=[target.target_success_mass] * 2,
        mode="lines",
        name="target q",
        line=dict(color=COLORS["target"], dash="dash"),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="epochs on the frozen batch")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    if flat:
        fig.update_yaxes(type="log", row=1, col=3)
    fig.update_layout(title=title, height=380, legend=dict(orientation="h", y=-0.25), **LAYOUT)
    return fig


def push_figure(pis, pushes: dict, title: str = "") -> go.Figure:
    """Each method's mean push on a state's correct-token logit (``pushes``: method -> values,
    :func:`tpo_core.tokens.states.expected_push`) against the state's probability of the correct
    token ``pis``, one line per method."""
    fig = go.Figure()
    for method, values in pushes.items():
        fig.add_scatter(
            x=list(pis),
            y=list(values),
            name=METHOD_LABELS.get(method, method),
            mode="lines",
            line_color=COLORS.get(method, "#333333"),
        )
    fig.update_layout(
        title=title,
        xaxis=dict(title="π(correct token | state)", range=[0, 1]),
        yaxis_title="mean push on the correct token's logit",
        height=360,
        **LAYOUT,
    )
    return fig


def muon_figure(gradient, scales=(1.0, 1e-4)) -> go.Figure:
    """Muon in one picture: whatever the gradient's size and spectrum, the step's singular
    values all sit near 1 (the step is roughly ``U V^T`` of the gradient's SVD)."""
    fig = go.Figure()
    for name, values in muon_spectrum(gradient, scales).items():
        muon = name.startswith("Muon")
        fig.add_scatter(
            x=list(range(1, len(values) + 1)),
            y=values,
            name=name,
            mode="lines+markers",
            line=dict(
                color=COLORS["tpo"] if muon else COLORS["pg"],
                dash="solid" if name.endswith("× 1") else "dot",
            ),
        )
    fig.update_layout(
        title="Muon orthogonalises: a gradient's singular values, and its step's",
        xaxis_title="singular value, largest first",
        yaxis=dict(type="log", title="size"),
        height=360,
        **LAYOUT,
    )
    return fig


def paper_bound(value: float | str) -> float:
    """A :func:`~tpo_core.tokens.table3.paper_error` as a number to draw: a bound ("> 95")
    at its value."""
    return float(value.removeprefix("> ")) if isinstance(value, str) else float(value)


def table3_figure(rows: list[dict], title: str = "") -> go.Figure:
    """Our final error (bars: the last episode's mean over seeds, with its 95% bootstrap
    interval) next to the paper's (diamonds), per method and H.

    ``rows`` come from :func:`tpo_core.tokens.table3.table3_rows`; cells the paper
    reports as a bound ("> 95") are drawn at it, and "n/a" not at all.
    """
    x = [f"{METHOD_LABELS.get(r['method'], r['method'])}, H={r['H']}" for r in rows]
    paper = [None if r["paper"] == "n/a" else paper_bound(r["paper"]) for r in rows]
    fig = go.Figure()
    fig.add_bar(
        x=x,
        y=[r["ours"] for r in rows],
        name="ours",
        error_y=dict(
            type="data",
            symmetric=False,
            array=[r["ci"][1] - r["ours"] for r in rows],
            arrayminus=[r["ours"] - r["ci"][0] for r in rows],
        ),
        marker_color=[COLORS.get(r["method"], "#333333") for r in rows],
        text=[f"{r['seeds']} seeds" for r in rows],
    )
    fig.add_scatter(
        x=x,
        y=paper,
        mode="markers",
        name="paper (Table 3, 2,000 episodes)",
        marker=dict(symbol="diamond", size=12, color="#222222"),
    )
    fig.update_layout(title=title, yaxis_title="final exact-match error (%)", height=360, **LAYOUT)
    return fig


def seeds_figure(
    finals: dict[tuple[str, int], list[float]],
    paper: dict[tuple[str, int], float | str] | None = None,
    title: str = "",
    yaxis: str = "final exact-match error (%)",
) -> go.Figure:
    """One dot per seed, per (method, H): every run's final error, not only their mean.

    ``finals`` maps ``(method, H)`` to one value per seed. Beside the dots, a bar marks the
    mean with its 95% bootstrap interval over seeds; ``paper`` adds the paper's value as a
    diamond (:func:`~tpo_core.tokens.table3.paper_error`: a bound such as "> 95" is drawn at
    95). Traces, in order:
    per column its dots (named ``<label>``) and its mean (``<label> mean``), then ``paper``.
    """
    fig = go.Figure()
    labels = []
    for (method, length), values in finals.items():
        label = f"{METHOD_LABELS.get(method, method)}, H={length}"
        labels.append(label)
        color = COLORS.get(method, "#333333")
        n = len(values)
        offsets = [(i - (n - 1) / 2) / max(n, 1) * 0.5 for i in range(n)]  # spread, no randomness
        fig.add_scatter(
            x=[labels.index(label) - 0.15 + o * 0.4 for o in offsets],
            y=list(values),
            mode="markers",
            name=label,
            marker=dict(color=color, size=7, opacity=0.7),
            hovertemplate="%{y:.1f}<extra>" + label + "</extra>",
        )
        mean = sum(values) / n
        lo, hi = bootstrap_interval(values)
        fig.add_scatter(
            x=[labels.index(label) + 0.2],
            y=[mean],
            mode="markers",
            name=f"{label} mean",
            showlegend=False,
            marker=dict(color=color, size=12, symbol="line-ew-open", line_width=3),
            error_y=dict(type="data", symmetric=False, array=[hi - mean], arrayminus=[mean - lo]),
        )
    if paper:
        keys = [k for k in finals if k in paper]
        fig.add_scatter(
            x=[list(finals).index(k) + 0.2 for k in keys],
            y=[paper_bound(paper[k]) for k in keys],
            mode="markers",
            name="paper (Table 3)",
            marker=dict(symbol="diamond", size=11, color="#222222"),
        )
    fig.update_layout(
        title=title,
        yaxis_title=yaxis,
        xaxis=dict(tickvals=list(range(len(labels))), ticktext=labels),
        height=400,
        **LAYOUT,
    )
    return fig
