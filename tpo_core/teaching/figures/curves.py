"""Learning curves and sweeps, shared by every stage: mean curves with standard-error bands,
final error against one setting, curves filled in live.
"""

from __future__ import annotations

import plotly.graph_objects as go

from tpo_core.teaching.style import COLORS, LAYOUT, METHOD_LABELS, rgba


def curves_figure(
    curves: dict[str, tuple[list, list, list]],
    title: str = "",
    xaxis: str = "step",
    yaxis: str = "error",
    log_y: bool = False,
) -> go.Figure:
    """Mean curves with ± standard-error bands, one per method.

    ``curves`` maps a method name to ``(x, mean, se)``; colours and labels
    follow the method names of :data:`METHOD_LABELS`. Each method adds two
    traces: its band (named ``<method> ± s.e.``), then its mean line.
    """
    fig = go.Figure()
    for method, (x, mean, se) in curves.items():
        x, mean, se = list(x), list(mean), list(se)
        color = COLORS.get(method, "#333333")
        label = METHOD_LABELS.get(method, method)
        upper = [m + e for m, e in zip(mean, se, strict=True)]
        lower = [m - e for m, e in zip(mean, se, strict=True)]
        if log_y:
            lower = [max(v, 1e-12) for v in lower]
        fig.add_scatter(
            x=x + x[::-1],
            y=upper + lower[::-1],
            fill="toself",
            fillcolor=rgba(color, 0.18),
            line=dict(width=0),
            hoverinfo="skip",
            showlegend=False,
            name=f"{label} ± s.e.",
        )
        fig.add_scatter(x=x, y=mean, mode="lines", name=label, line=dict(color=color, width=2))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, height=380, **LAYOUT)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def sweep_figure(sweeps: dict, xaxis: str, title: str = "", log_x: bool = False) -> go.Figure:
    """Final error against one setting, ``{method: (values, mean, s.e.)}``, one line each."""
    fig = go.Figure()
    for method, (xs, mean, se) in sweeps.items():
        fig.add_scatter(
            x=list(xs),
            y=list(mean),
            error_y=dict(type="data", array=list(se)),
            mode="lines+markers",
            name=METHOD_LABELS.get(method, method),
            line=dict(color=COLORS.get(method)),
        )
    fig.update_layout(
        title=title, xaxis_title=xaxis, yaxis_title="final error", height=340, **LAYOUT
    )
    if log_x:
        fig.update_xaxes(type="log", tickvals=[x for xs, _, _ in sweeps.values() for x in xs])
    return fig


def live_curves_figure(names, title: str = "", yaxis: str = "error") -> go.Figure:
    """Empty error-per-episode lines, one per run name, to be filled as training goes."""
    fig = go.Figure()
    for name in names:
        method = name.split(" ")[0]
        fig.add_scatter(
            x=[],
            y=[],
            mode="lines",
            name=METHOD_LABELS.get(method, name),
            line=dict(color=COLORS.get(method)),
        )
    fig.update_layout(
        title=title,
        xaxis_title="episode",
        yaxis_title=yaxis,
        yaxis_type="log",
        height=380,
        **LAYOUT,
    )
    return fig
