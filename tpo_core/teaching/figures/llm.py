"""Figures of the LLM RLVR loop (notebooks 06-07): reward, pass@K, zero-variance share,
gradient norm and KL per step.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpo_core.teaching.style import COLORS, LAYOUT, METHOD_LABELS

RLVR_PANELS = {
    "reward": "mean reward",
    "pass_at_k": "pass@K (groups with a success)",
    "zero_variance": "share of zero-variance groups",
    "grad_norm": "gradient norm",
    "kl": "KL to the start (k3, per token)",
}


def rlvr_figure(names, histories: dict | None = None, title: str = "") -> go.Figure:
    """RLVR curves per step, one line per run ``name`` in each of the :data:`RLVR_PANELS`.

    Traces are ordered panel by panel, runs within a panel; ``histories``
    (``{name: RLVRResult.history}``) fills them, or leaves them empty to be
    filled live.
    """
    fig = make_subplots(
        rows=1,
        cols=len(RLVR_PANELS),
        subplot_titles=list(RLVR_PANELS.values()),
        horizontal_spacing=0.05,
    )
    for col, metric in enumerate(RLVR_PANELS, start=1):
        for name in names:
            method, _, variant = name.partition(" ")  # e.g. "tpo 4 epochs": dashed
            h = (histories or {}).get(name, {}).get(metric, [])
            label = " ".join([METHOD_LABELS.get(method, method)] + [variant] * bool(variant))
            fig.add_scatter(
                x=list(range(1, len(h) + 1)),
                y=list(h),
                mode="lines",
                name=label,
                legendgroup=name,
                showlegend=col == 1,
                line=dict(color=COLORS.get(method), dash="dash" if variant else None),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, height=330, **LAYOUT)
    return fig


def rlvr_seeds_figure(runs: dict[str, list[dict]], title: str = "") -> go.Figure:
    """Every seed's reward per step, one thin line each, and each method's mean over its
    seeds, thick; ``runs`` is ``{method: [run, ...]}`` as :func:`tpo_core.llm.shipped_runs`
    gives it (a run's ``history["reward"]``)."""
    fig = go.Figure()
    for method, seeds in runs.items():
        color, label = COLORS.get(method), METHOD_LABELS.get(method, method)
        curves = [run["history"]["reward"] for run in seeds]
        for run, curve in zip(seeds, curves, strict=True):
            fig.add_scatter(
                x=list(range(1, len(curve) + 1)),
                y=curve,
                mode="lines",
                line=dict(color=color, width=1),
                opacity=0.35,
                legendgroup=method,
                showlegend=False,
                name=f"{label} seed {run['config']['seed']}",
            )
        steps = min(len(c) for c in curves)
        mean = [sum(c[i] for c in curves) / len(curves) for i in range(steps)]
        fig.add_scatter(
            x=list(range(1, steps + 1)),
            y=mean,
            mode="lines",
            line=dict(color=color, width=3),
            legendgroup=method,
            name=f"{label}, mean of {len(curves)} seeds",
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="mean reward of the step's samples", range=[0, 1])
    fig.update_layout(title=title, height=380, **LAYOUT)
    return fig
