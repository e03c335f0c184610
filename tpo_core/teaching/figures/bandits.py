"""Figures of the bandits (notebooks 02-03): the exact-update weight beta(p) and the update's
length, who gets a normalised step, and how that share follows where the mistakes go.
"""

from __future__ import annotations

import plotly.graph_objects as go

from tpo_core.bandits.tabular import beta_coefficient, step_budget, update_size
from tpo_core.teaching.style import COLORS, LAYOUT, METHOD_LABELS

BETA_METHODS = ("ce", "tpo", "grpo", "dg", "pg")


BUDGET_METHODS = ("ce", "tpo", "grpo", "dg")


def beta_series(k: int, methods=BETA_METHODS, points: int = 199) -> tuple[list, list[list]]:
    """``p`` on a grid in (0, 1) and ``beta(p)`` for each method, for K actions."""
    p = [(i + 1) / (points + 1) for i in range(points)]
    return p, [beta_coefficient(m, p, k).tolist() for m in methods]


def beta_figure(k: int, methods=BETA_METHODS) -> go.Figure:
    """The exact-update weights ``beta(p)`` of each method against ``p = pi(y)``, for K actions."""
    p, betas = beta_series(k, methods)
    fig = go.Figure()
    for m, beta in zip(methods, betas, strict=True):
        fig.add_scatter(
            x=p, y=beta, mode="lines", name=METHOD_LABELS[m], line=dict(color=COLORS[m])
        )
    fig.update_layout(
        title=beta_title(k),
        xaxis_title="p = π(correct action)",
        yaxis_title="β(p)",
        yaxis_range=[0, 2],
        height=360,
        **LAYOUT,
    )
    return fig


def beta_title(k: int) -> str:
    return f"exact update = β(p)·(e_y − π), K = {k}"


def update_size_series(k: int, methods=BETA_METHODS, points: int = 199) -> tuple[list, list]:
    """``p`` on a grid in (0, 1) and the exact update's length for each method, for K actions."""
    p = [(i + 1) / (points + 1) for i in range(points)]
    return p, [update_size(m, p, k).tolist() for m in methods]


def update_size_figure(k: int, methods=BETA_METHODS) -> go.Figure:
    """The length ``||beta(p) (e_y - pi)||`` of each method's exact update against ``p``."""
    p, sizes = update_size_series(k, methods)
    fig = go.Figure()
    for m, size in zip(methods, sizes, strict=True):
        fig.add_scatter(
            x=p, y=size, mode="lines", name=METHOD_LABELS[m], line=dict(color=COLORS[m])
        )
    fig.update_layout(
        title=f"length of the exact update ‖β(p)·(e_y − π)‖, K = {k}",
        xaxis_title="p = π(correct action)",
        yaxis_title="‖β(p)·(e_y − π)‖",
        height=360,
        **LAYOUT,
    )
    return fig


def budget_series(p_values, k: int, methods=BUDGET_METHODS) -> list[list[float]]:
    """For each method, the share of a normalised step's ``||g||^2`` that each context gets."""
    return [step_budget(m, p_values, k).tolist() for m in methods]


def budget_figure(p_values, labels, k: int, methods=BUDGET_METHODS) -> go.Figure:
    """Grouped bars of :func:`budget_series`, one trace per method, contexts on the x axis."""
    fig = go.Figure()
    for m, share in zip(methods, budget_series(p_values, k, methods), strict=True):
        fig.add_bar(x=list(labels), y=share, name=METHOD_LABELS[m], marker_color=COLORS[m])
    fig.update_layout(
        barmode="group",
        title="who gets the step? share of ‖g‖² per context",
        yaxis_title="share of the step",
        yaxis_range=[0, 1],
        height=360,
        **LAYOUT,
    )
    return fig


def concentration_share_figure(concentrations, shares: dict, p_label: float) -> go.Figure:
    """Lines of each method's relative share of a normalised step against concentration.

    ``shares`` maps a method to one value per concentration (1 = the share of an example
    with the same ``p(label)`` whose mistakes are spread evenly).
    """
    fig = go.Figure()
    for m, share in shares.items():
        fig.add_scatter(
            x=list(concentrations),
            y=list(share),
            mode="lines+markers",
            name=METHOD_LABELS[m],
            line=dict(color=COLORS[m]),
        )
    fig.update_layout(
        title=f"share of a normalised step, against spread mistakes (p(label) = {p_label})",
        xaxis_title="wrong-class concentration (largest wrong mass / all wrong mass)",
        yaxis_title="relative share",
        yaxis_type="log",
        height=360,
        **LAYOUT,
    )
    return fig
