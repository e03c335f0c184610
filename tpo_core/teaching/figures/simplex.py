"""The course's signature figure (notebook 01): K = 3 candidates on the probability triangle,
where PG walks the road of targets past q, the clipped surrogate stops at its ratio box, and TPO
stops on q.
"""

from __future__ import annotations

import plotly.graph_objects as go

from tpo_core.group import (
    CLIP_EPS,
    DESCENT_METHODS,
    Trajectory,
    descend_groups,
    group_view,
    ratio_box,
    target_family,
)
from tpo_core.teaching.style import COLORS, METHOD_LABELS, candidate_labels


def ternary(probs) -> dict:
    """Rows of (K = 3) probabilities as plotly's ternary coordinates ``a, b, c`` (a row of
    Nones breaks the line)."""
    rows = [r.tolist() if hasattr(r, "tolist") else list(r) for r in probs]
    return dict(a=[r[0] for r in rows], b=[r[1] for r in rows], c=[r[2] for r in rows])


SIMPLEX_PATHS = list(range(4, 4 + 2 * len(DESCENT_METHODS)))
"""Indices of :func:`simplex_figure`'s moving traces: each method's path, then its end point."""


def simplex_paths(run: dict[str, Trajectory]) -> list[dict]:
    """Ternary data of the traces :data:`SIMPLEX_PATHS` for one descent of every method."""
    return [ternary(probs) for m in DESCENT_METHODS for probs in (run[m].probs, run[m].probs[-1:])]


def simplex_figure(p_old, scores, lrs, epochs: int, eta: float = 1.0, start: int = 0) -> go.Figure:
    """K = 3 on the probability triangle: where each method's E epochs go, one slider step per lr.

    Traces, in order: the target family (PG's road), the clipped surrogate's
    ratio box, ``p_old``, ``q``, then per method of :data:`DESCENT_METHODS` its
    path (E + 1 points) and its end point (:data:`SIMPLEX_PATHS`). The slider
    restyles those from precomputed descents, so it needs no kernel; it starts
    at ``lrs[start]``.
    """
    view = group_view(p_old, scores, eta)
    if view.p_old.numel() != 3:
        raise ValueError(f"the simplex figure needs K = 3 candidates, got {view.p_old.numel()}")
    paths = [
        simplex_paths(descend_groups(p_old, scores, lr=lr, epochs=epochs, eta=eta)) for lr in lrs
    ]
    labels = candidate_labels(3)
    fig = go.Figure()
    fig.add_scatterternary(
        **ternary(target_family(view)),
        mode="lines",
        name="targets q for every η (PG's road)",
        line=dict(color="#bbbbbb", dash="dot"),
        hoverinfo="skip",
    )
    fig.add_scatterternary(
        **ternary(p for segment in ratio_box(view) for p in (*segment, [None] * 3)),
        mode="lines",
        name=f"ratio box ±{CLIP_EPS:g}",
        line=dict(color=COLORS["clipped"], width=1, dash="dash"),
        hoverinfo="skip",
    )
    fig.add_scatterternary(
        **ternary([view.p_old]),
        mode="markers",
        name="p_old (start)",
        marker=dict(color=COLORS["p_old"], size=12, symbol="circle"),
    )
    fig.add_scatterternary(
        **ternary([view.q]),
        mode="markers",
        name=f"q (TPO's destination, η = {eta:g})",
        marker=dict(color=COLORS["q"], size=18, symbol="star", line=dict(color="black", width=1)),
    )
    for m, path, end in zip(DESCENT_METHODS, paths[start][::2], paths[start][1::2], strict=True):
        fig.add_scatterternary(
            **path,
            mode="lines+markers",
            name=METHOD_LABELS[m],
            legendgroup=m,
            line=dict(color=COLORS[m], width=2),
            marker=dict(size=4, color=COLORS[m]),
        )
        fig.add_scatterternary(
            **end,
            mode="markers",
            showlegend=False,
            legendgroup=m,
            name=f"{METHOD_LABELS[m]} at the end",
            marker=dict(size=11, color=COLORS[m], symbol="x"),
        )
    steps = [
        dict(
            method="restyle",
            label=f"{lr:.3g}",
            args=[{key: [d[key] for d in data] for key in "abc"}, SIMPLEX_PATHS],
        )
        for lr, data in zip(lrs, paths, strict=True)
    ]
    fig.update_layout(
        title=f"PG has a direction, TPO has a destination: {epochs} epochs on one group",
        ternary=dict(sum=1, aaxis_title=labels[0], baxis_title=labels[1], caxis_title=labels[2]),
        sliders=[dict(active=start, currentvalue=dict(prefix="learning rate = "), steps=steps)],
        height=560,
        legend=dict(x=0.75, y=1.0),
        template="plotly_white",
        margin=dict(l=40, r=40, t=70, b=40),
    )
    return fig
