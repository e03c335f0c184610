"""Figures of one scored group (notebooks 00-01): bars of p_old, u, q and p - q; PG, the clipped
surrogate and TPO over epochs, on the triangle, over lr x epochs and over twenty groups.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpo_core.group import (
    EndpointMap,
    GroupPanel,
    GroupView,
    Trajectory,
)
from tpo_core.teaching.style import COLORS, KL_FLOOR, LAYOUT, METHOD_LABELS, candidate_labels


def group_figure(view: GroupView, title: str | None = None) -> go.Figure:
    """Bars of one group: ``p_old`` and ``q`` (top), ``u`` (middle), gradient ``p - q`` (bottom).

    Trace names are ``p_old``, ``q``, ``u`` and ``gradient``, in that order.
    """
    x = candidate_labels(len(view.q))
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.5, 0.25, 0.25],
        subplot_titles=(
            "old policy p_old and target q",
            "standardised score u",
            "TPO gradient p - q at the snapshot",
        ),
    )
    fig.add_bar(
        x=x, y=view.p_old.tolist(), name="p_old", marker_color=COLORS["p_old"], row=1, col=1
    )
    fig.add_bar(x=x, y=view.q.tolist(), name="q", marker_color=COLORS["q"], row=1, col=1)
    fig.add_bar(x=x, y=view.u.tolist(), name="u", marker_color=COLORS["u"], row=2, col=1)
    fig.add_bar(
        x=x,
        y=view.gradient.tolist(),
        name="gradient",
        marker_color=COLORS["gradient"],
        row=3,
        col=1,
    )
    fig.update_layout(
        barmode="group",
        height=520,
        title=title or group_title(view),
        legend=dict(orientation="h", y=-0.08),
        **LAYOUT,
    )
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    return fig


def targets_figure(views: dict[str, GroupView], title: str = "") -> go.Figure:
    """Grouped bars: the shared ``p_old``, then one target ``q`` per label."""
    first = next(iter(views.values()))
    x = candidate_labels(len(first.q))
    fig = go.Figure()
    fig.add_bar(x=x, y=first.p_old.tolist(), name="p_old", marker_color=COLORS["p_old"])
    for label, view in views.items():
        fig.add_bar(x=x, y=view.q.tolist(), name=label)
    fig.update_layout(barmode="group", height=330, title=title, yaxis_range=[0, 1], **LAYOUT)
    return fig


def candidates_figure(
    labels, rewards, p_old, q, advantages, title: str = "", xaxis: str = "candidate → next token"
) -> go.Figure:
    """One group's K candidates (named by ``labels``): ``p_old`` and TPO's ``q`` (top), reward
    and GRPO's advantage (bottom). Trace names: ``p_old``, ``q``, ``reward``, ``GRPO advantage``.
    """
    x = list(labels)
    titles = ("group policy p_old and TPO target q", "reward and GRPO advantage")
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=titles
    )
    fig.add_bar(x=x, y=list(p_old), name="p_old", marker_color=COLORS["p_old"], row=1, col=1)
    fig.add_bar(x=x, y=list(q), name="q", marker_color=COLORS["q"], row=1, col=1)
    fig.add_bar(x=x, y=list(rewards), name="reward", marker_color=COLORS["u"], row=2, col=1)
    fig.add_bar(
        x=x, y=list(advantages), name="GRPO advantage", marker_color=COLORS["grpo"], row=2, col=1
    )
    fig.update_layout(barmode="group", height=460, title=title, **LAYOUT)
    fig.update_xaxes(title_text=xaxis, row=2, col=1)
    return fig


def group_title(view: GroupView) -> str:
    return f"KL(q ‖ p_old) = {view.kl_q_p_old:.3f} nats · entropy of q = {view.entropy_q:.3f} nats"


def overshoot_series(trajectories: list[Trajectory], view: GroupView) -> list[tuple[list, list]]:
    """The (x, y) data of every trace of :func:`overshoot_figure`, in trace order.

    Per method: p(best) by epoch, KL(q ‖ p) by epoch (floored at ``KL_FLOOR``)
    and the gradient norm by epoch; last, the target's p(best) as a line.
    """
    best = int(view.u.argmax())
    epochs = len(trajectories[0].grad_norm)
    steps = list(range(epochs + 1))
    series = []
    for traj in trajectories:
        series.append((steps, traj.probs[:, best].tolist()))
        series.append((steps, traj.kl_to_target.clamp_min(KL_FLOOR).tolist()))
        series.append((steps[1:], traj.grad_norm.tolist()))
    series.append(([0, epochs], [float(view.q[best])] * 2))
    return series


def overshoot_figure(trajectories: list[Trajectory], view: GroupView) -> go.Figure:
    """Three panels over epochs: p(best candidate) against the target's, KL(q ‖ p), gradient norm.

    One trace per method and panel, named by the method, in the order given;
    the target's p(best) is a dashed line named ``target``.
    """
    fig = make_subplots(
        rows=1,
        cols=3,
        horizontal_spacing=0.08,
        subplot_titles=("p(best candidate)", "KL(q ‖ p): distance to the target", "gradient norm"),
    )
    series = iter(overshoot_series(trajectories, view))
    for traj in trajectories:
        style = dict(
            mode="lines",
            line_color=COLORS[traj.method],
            legendgroup=traj.method,
            name=METHOD_LABELS[traj.method],
        )
        for col in (1, 2, 3):
            x, y = next(series)
            fig.add_scatter(x=x, y=y, row=1, col=col, showlegend=col == 1, **style)
    x, y = next(series)
    fig.add_scatter(
        x=x,
        y=y,
        mode="lines",
        name="target",
        line=dict(color=COLORS["target"], dash="dash"),
        row=1,
        col=1,
    )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(height=380, legend=dict(orientation="h", y=-0.2), **LAYOUT)
    return fig


def endpoint_figure(emap: EndpointMap, k: int, eta: float = 1.0) -> go.Figure:
    """One heatmap per method: log10 KL(q ‖ p_final) over learning rate × epochs.

    The dashed line is ``lr E = K / eta``, where PG's closed-form endpoint is
    exactly ``q`` (:func:`tpo_core.group.pg_endpoint`).
    """
    methods = list(emap.kl)
    fig = make_subplots(
        rows=1,
        cols=len(methods),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[METHOD_LABELS[m] for m in methods],
    )
    for col, m in enumerate(methods, start=1):
        z = emap.kl[m].clamp_min(KL_FLOOR).log10().tolist()
        fig.add_heatmap(
            x=emap.epochs,
            y=emap.lrs,
            z=z,
            coloraxis="coloraxis",
            name=m,
            hovertemplate="epochs %{x}, lr %{y:.3g}: log10 KL = %{z:.2f}<extra></extra>",
            row=1,
            col=col,
        )
        band = [e for e in emap.epochs if min(emap.lrs) <= k / eta / e <= max(emap.lrs)]
        fig.add_scatter(
            x=band,
            y=[k / eta / e for e in band],
            mode="lines",
            name="lr × E = K / η",
            line=dict(color="white", dash="dash"),
            showlegend=False,
            row=1,
            col=col,
        )
    fig.update_xaxes(type="log", title_text="epochs on the batch")
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="learning rate", col=1)
    fig.update_layout(
        title="KL(q ‖ p) after E epochs at learning rate lr: dark is on target, "
        "dashed is lr × E = K / η",
        coloraxis=dict(colorscale="Viridis", cmin=-6, cmax=1, colorbar=dict(title="log10 KL")),
        height=420,
        **LAYOUT,
    )
    return fig


def panel_figure(panel: GroupPanel) -> go.Figure:
    """KL(q ‖ p_final) against learning rate, one thin line per group and method.

    Markers show each group's own best PG learning rate: they scatter, while
    TPO's lines all fall together as the learning rate grows, towards each group's own q.
    """
    fig = go.Figure()
    for m, kl in panel.kl.items():
        for g, row in enumerate(kl.clamp_min(KL_FLOOR).tolist()):
            fig.add_scatter(
                x=panel.lrs,
                y=row,
                mode="lines",
                legendgroup=m,
                showlegend=g == 0,
                name=METHOD_LABELS[m],
                line=dict(color=COLORS[m], width=1),
                opacity=0.6,
            )
    best = panel.kl["pg"].argmin(-1).tolist()
    fig.add_scatter(
        x=panel.best_lr("pg"),
        y=[float(panel.kl["pg"][g, i].clamp_min(KL_FLOOR)) for g, i in enumerate(best)],
        mode="markers",
        name="each group's best PG lr",
        marker=dict(color=COLORS["pg"], size=9, symbol="diamond", line_color="black"),
    )
    groups = panel.kl["pg"].shape[0]
    fig.update_layout(
        title=f"{groups} groups, {panel.epochs} epochs each: where does each learning rate land?",
        xaxis=dict(type="log", title="learning rate"),
        yaxis=dict(type="log", title="KL(q ‖ p_final)"),
        height=420,
        **LAYOUT,
    )
    return fig
