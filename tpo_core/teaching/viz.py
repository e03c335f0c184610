"""Pure plotting functions: data in, plotly figure out (no widgets, no state).

Every figure the notebooks show is built here, so it can be called from a
test. The explorers in :mod:`tpo_core.teaching.widgets` wrap these figures in a
``FigureWidget`` and update their traces in place.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from tpo_core.bandits.tabular import beta_coefficient, step_budget
from tpo_core.group import (
    CLIP_EPS,
    DESCENT_METHODS,
    EndpointMap,
    GroupPanel,
    GroupView,
    Trajectory,
    descend_groups,
    group_view,
)
from tpo_core.tokens.model import NS_COEFFICIENTS, NS_EPS, NS_STEPS, Muon

COLORS = {
    "p_old": "#9aa5b1",
    "u": "#6c8ebf",
    "q": "#e8710a",
    "gradient": "#b5443b",
    "target": "#e8710a",
    "pg": "#1f77b4",
    "clipped": "#7b4ea3",
    "tpo": "#e8710a",
    "ce": "#444444",
    "dg": "#2ca02c",
    "grpo": "#7b4ea3",
    "group_pg": "#8c564b",
    "ppo": "#17becf",
    "tpo_token": "#e8710a",
    "grpo_token": "#7b4ea3",
    "grpo_no_kl": "#c5b0d5",
    "tpo_no_anchor": "#ffbb78",
    "grpo_masked": "#3b2a57",
    "grpo_per_token": "#9467bd",
}
METHOD_LABELS = {
    "pg": "PG (REINFORCE)",
    "clipped": "PPO/GRPO clipped",
    "tpo": "TPO",
    "ce": "CE (oracle)",
    "dg": "DG",
    "grpo": "GRPO",
    "group_pg": "group-PG",
    "ppo": "PPO",
    "tpo_token": "TPO (token)",
    "grpo_token": "GRPO (token)",
    "grpo_no_kl": "GRPO (no KL)",
    "tpo_no_anchor": "TPO (no anchor)",
    "grpo_masked": "GRPO (flat groups masked)",
    "grpo_per_token": "GRPO (per-token ratio)",
}
KL_FLOOR = 1e-12
"""KL values are floored here so the log axis can show a policy sitting on its target."""
LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=60, b=40))


def candidate_labels(k: int) -> list[str]:
    return [f"y{i + 1}" for i in range(k)]


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


def _ternary(probs) -> dict:
    """Rows of (K = 3) probabilities as plotly's ternary coordinates ``a, b, c``."""
    rows = [r.tolist() if hasattr(r, "tolist") else list(r) for r in probs]
    return dict(a=[r[0] for r in rows], b=[r[1] for r in rows], c=[r[2] for r in rows])


def target_family(view: GroupView, points: int = 60) -> list[list[float]]:
    """The targets ``softmax(log p_old + t u)``, ``t = 1 / eta`` from 0 to 20: the road PG walks."""
    log_p_old = view.p_old.log()
    ts = [20.0 * (i / (points - 1)) ** 2 for i in range(points)]
    return [(log_p_old + t * view.u).softmax(-1).tolist() for t in ts]


def ratio_box(view: GroupView, eps: float = CLIP_EPS) -> dict:
    """The lines ``p_i = (1 +- eps) p_old_i`` across the triangle, as None-separated segments."""
    points = []
    for i in range(3):
        j, k = [x for x in range(3) if x != i]
        for bound in ((1 - eps) * float(view.p_old[i]), (1 + eps) * float(view.p_old[i])):
            if bound < 1:
                for other in (j, k):
                    end = [0.0, 0.0, 0.0]
                    end[i], end[other] = bound, 1 - bound
                    points.append(end)
                points.append([None, None, None])
    return _ternary(points)


SIMPLEX_PATHS = list(range(4, 4 + 2 * len(DESCENT_METHODS)))
"""Indices of :func:`simplex_figure`'s moving traces: each method's path, then its end point."""


def simplex_paths(run: dict[str, Trajectory]) -> list[dict]:
    """Ternary data of the traces :data:`SIMPLEX_PATHS` for one descent of every method."""
    return [_ternary(probs) for m in DESCENT_METHODS for probs in (run[m].probs, run[m].probs[-1:])]


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
        **_ternary(target_family(view)), mode="lines", name="targets q for every η (PG's road)",
        line=dict(color="#bbbbbb", dash="dot"), hoverinfo="skip",
    )  # fmt: skip
    fig.add_scatterternary(
        **ratio_box(view), mode="lines", name=f"ratio box ±{CLIP_EPS:g}",
        line=dict(color=COLORS["clipped"], width=1, dash="dash"), hoverinfo="skip",
    )  # fmt: skip
    fig.add_scatterternary(
        **_ternary([view.p_old]), mode="markers", name="p_old (start)",
        marker=dict(color=COLORS["p_old"], size=12, symbol="circle"),
    )  # fmt: skip
    fig.add_scatterternary(
        **_ternary([view.q]), mode="markers", name=f"q (TPO's destination, η = {eta:g})",
        marker=dict(color=COLORS["q"], size=18, symbol="star", line=dict(color="black", width=1)),
    )  # fmt: skip
    for m, path, end in zip(DESCENT_METHODS, paths[start][::2], paths[start][1::2], strict=True):
        fig.add_scatterternary(
            **path, mode="lines+markers", name=METHOD_LABELS[m], legendgroup=m,
            line=dict(color=COLORS[m], width=2), marker=dict(size=4, color=COLORS[m]),
        )  # fmt: skip
        fig.add_scatterternary(
            **end, mode="markers", showlegend=False, legendgroup=m,
            name=f"{METHOD_LABELS[m]} at the end",
            marker=dict(size=11, color=COLORS[m], symbol="x"),
        )  # fmt: skip
    steps = [
        dict(
            method="restyle", label=f"{lr:.3g}",
            args=[{key: [d[key] for d in data] for key in "abc"}, SIMPLEX_PATHS],
        )
        for lr, data in zip(lrs, paths, strict=True)
    ]  # fmt: skip
    fig.update_layout(
        title=f"PG has a direction, TPO has a destination: {epochs} epochs on one group",
        ternary=dict(sum=1, aaxis_title=labels[0], baxis_title=labels[1], caxis_title=labels[2]),
        sliders=[dict(active=start, currentvalue=dict(prefix="learning rate = "), steps=steps)],
        height=560, legend=dict(x=0.75, y=1.0), template="plotly_white",
        margin=dict(l=40, r=40, t=70, b=40),
    )  # fmt: skip
    return fig


def endpoint_figure(emap: EndpointMap, k: int, eta: float = 1.0) -> go.Figure:
    """One heatmap per method: log10 KL(q ‖ p_final) over learning rate × epochs.

    The dashed line is ``lr E = K / eta``, where PG's closed-form endpoint is
    exactly ``q`` (:func:`tpo_core.group.pg_endpoint`).
    """
    methods = list(emap.kl)
    fig = make_subplots(
        rows=1, cols=len(methods), shared_yaxes=True, horizontal_spacing=0.04,
        subplot_titles=[METHOD_LABELS[m] for m in methods],
    )  # fmt: skip
    for col, m in enumerate(methods, start=1):
        z = emap.kl[m].clamp_min(KL_FLOOR).log10().tolist()
        fig.add_heatmap(
            x=emap.epochs, y=emap.lrs, z=z, coloraxis="coloraxis", name=m,
            hovertemplate="epochs %{x}, lr %{y:.3g}: log10 KL = %{z:.2f}<extra></extra>",
            row=1, col=col,
        )  # fmt: skip
        band = [e for e in emap.epochs if min(emap.lrs) <= k / eta / e <= max(emap.lrs)]
        fig.add_scatter(
            x=band, y=[k / eta / e for e in band], mode="lines", name="lr × E = K / η",
            line=dict(color="white", dash="dash"), showlegend=False, row=1, col=col,
        )  # fmt: skip
    fig.update_xaxes(type="log", title_text="epochs on the batch")
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="learning rate", col=1)
    fig.update_layout(
        title="KL(q ‖ p) after E epochs at learning rate lr: dark is on target, "
        "dashed is lr × E = K / η",
        coloraxis=dict(colorscale="Viridis", cmin=-6, cmax=1, colorbar=dict(title="log10 KL")),
        height=420, **LAYOUT,
    )  # fmt: skip
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
                x=panel.lrs, y=row, mode="lines", legendgroup=m, showlegend=g == 0,
                name=METHOD_LABELS[m], line=dict(color=COLORS[m], width=1), opacity=0.6,
            )  # fmt: skip
    best = panel.kl["pg"].argmin(-1).tolist()
    fig.add_scatter(
        x=panel.best_lr("pg"),
        y=[float(panel.kl["pg"][g, i].clamp_min(KL_FLOOR)) for g, i in enumerate(best)],
        mode="markers", name="each group's best PG lr",
        marker=dict(color=COLORS["pg"], size=9, symbol="diamond", line_color="black"),
    )  # fmt: skip
    groups = panel.kl["pg"].shape[0]
    fig.update_layout(
        title=f"{groups} groups, {panel.epochs} epochs each: where does each learning rate land?",
        xaxis=dict(type="log", title="learning rate"),
        yaxis=dict(type="log", title="KL(q ‖ p_final)"), height=420, **LAYOUT,
    )  # fmt: skip
    return fig


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
        rows=1, cols=3 if flat else 2, horizontal_spacing=0.08,
        subplot_titles=titles + ["drift of all-equal groups, KL(p₀ ‖ p)"] * flat,
    )  # fmt: skip
    for name, r in replays.items():
        style = dict(mode="lines", line_color=COLORS.get(r.algo, "#333333"), legendgroup=name)
        epochs = list(range(len(r.kl_to_target)))
        kl = [max(v, KL_FLOOR) for v in r.kl_to_target]
        fig.add_scatter(x=epochs, y=kl, name=name, row=1, col=1, **style)
        fig.add_scatter(x=epochs, y=r.success_mass, name=name, showlegend=False, row=1, col=2,
                        **style)  # fmt: skip
        if flat:
            drift = [max(v, KL_FLOOR) for v in r.flat_drift]
            fig.add_scatter(x=epochs, y=drift, name=name, showlegend=False, row=1, col=3, **style)
    target = next(iter(replays.values()))
    fig.add_scatter(
        x=[0, len(target.kl_to_target) - 1], y=[target.target_success_mass] * 2, mode="lines",
        name="target q", line=dict(color=COLORS["target"], dash="dash"), row=1, col=2,
    )  # fmt: skip
    fig.update_xaxes(title_text="epochs on the frozen batch")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    if flat:
        fig.update_yaxes(type="log", row=1, col=3)
    fig.update_layout(title=title, height=380, legend=dict(orientation="h", y=-0.25), **LAYOUT)
    return fig


def muon_series(gradient, scales=(1.0, 1e-4)) -> dict[str, list[float]]:
    """Singular values (largest first) of ``scale * gradient`` and of Muon's Newton-Schulz
    orthogonalisation of it, for each scale: ``{"gradient x s": [...], "Muon step x s": [...]}``."""
    g = torch.as_tensor(gradient, dtype=torch.float32)
    if g.dim() != 2:
        raise ValueError(f"gradient must be a matrix, got shape {tuple(g.shape)}")
    series = {}
    for scale in scales:
        step = Muon.orthogonalise(scale * g, NS_STEPS, NS_COEFFICIENTS, NS_EPS, torch.float32)
        series[f"gradient × {scale:g}"] = torch.linalg.svdvals(scale * g).tolist()
        series[f"Muon step × {scale:g}"] = torch.linalg.svdvals(step).tolist()
    return series


def muon_figure(gradient, scales=(1.0, 1e-4)) -> go.Figure:
    """Muon in one picture: whatever the gradient's size and spectrum, the step's singular
    values all sit near 1 (the step is roughly ``U V^T`` of the gradient's SVD)."""
    fig = go.Figure()
    for name, values in muon_series(gradient, scales).items():
        muon = name.startswith("Muon")
        fig.add_scatter(
            x=list(range(1, len(values) + 1)), y=values, name=name, mode="lines+markers",
            line=dict(color=COLORS["tpo"] if muon else COLORS["pg"],
                      dash="solid" if name.endswith("× 1") else "dot"),
        )  # fmt: skip
    fig.update_layout(
        title="Muon orthogonalises: a gradient's singular values, and its step's",
        xaxis_title="singular value, largest first", yaxis=dict(type="log", title="size"),
        height=360, **LAYOUT,
    )  # fmt: skip
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


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
            x=x + x[::-1], y=upper + lower[::-1], fill="toself", fillcolor=_rgba(color, 0.18),
            line=dict(width=0), hoverinfo="skip", showlegend=False, name=f"{label} ± s.e.",
        )  # fmt: skip
        fig.add_scatter(x=x, y=mean, mode="lines", name=label, line=dict(color=color, width=2))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, height=380, **LAYOUT)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


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
        title=beta_title(k), xaxis_title="p = π(correct action)",
        yaxis_title="β(p)", yaxis_range=[0, 2], height=360, **LAYOUT,
    )  # fmt: skip
    return fig


def beta_title(k: int) -> str:
    return f"exact update = β(p)·(e_y − π), K = {k}"


def budget_series(p_values, k: int, methods=BUDGET_METHODS) -> list[list[float]]:
    """For each method, the share of a normalised step's ``||g||^2`` that each context gets."""
    return [step_budget(m, p_values, k).tolist() for m in methods]


def budget_figure(p_values, labels, k: int, methods=BUDGET_METHODS) -> go.Figure:
    """Grouped bars of :func:`budget_series`, one trace per method, contexts on the x axis."""
    fig = go.Figure()
    for m, share in zip(methods, budget_series(p_values, k, methods), strict=True):
        fig.add_bar(x=list(labels), y=share, name=METHOD_LABELS[m], marker_color=COLORS[m])
    fig.update_layout(
        barmode="group", title="who gets the step? share of ‖g‖² per context",
        yaxis_title="share of the step", yaxis_range=[0, 1], height=360, **LAYOUT,
    )  # fmt: skip
    return fig


def binned_figure(centres, means, counts, title: str, xaxis: str, yaxis: str) -> go.Figure:
    """Bars of a binned mean (hover shows how many examples fell in each bin)."""
    fig = go.Figure()
    fig.add_bar(
        x=list(centres), y=list(means), customdata=list(counts), name=yaxis,
        marker_color=COLORS["tpo"], hovertemplate="%{x:.2f}: %{y:.4f} (%{customdata} examples)",
    )  # fmt: skip
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=yaxis, height=360, **LAYOUT)
    return fig


def state_figure(
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


def live_curves_figure(names, title: str = "", yaxis: str = "error") -> go.Figure:
    """Empty error-per-episode lines, one per run name, to be filled as training goes."""
    fig = go.Figure()
    for name in names:
        method = name.split(" ")[0]
        fig.add_scatter(x=[], y=[], mode="lines", name=METHOD_LABELS.get(method, name),
                        line=dict(color=COLORS.get(method)))  # fmt: skip
    fig.update_layout(title=title, xaxis_title="episode", yaxis_title=yaxis, yaxis_type="log",
                      height=380, **LAYOUT)  # fmt: skip
    return fig


# ---------------------------------------------------------------- sparse reward (notebook 05)


def moving_average(values, window: int) -> list[float]:
    """Trailing mean over the last ``window`` values, skipping NaNs (NaN if all are)."""
    out = []
    for i in range(len(values)):
        chunk = [v for v in values[max(0, i - window + 1) : i + 1] if v == v]
        out.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return out


def mechanism_figure(runs: dict, window: int = 10) -> go.Figure:
    """Per run (``{label: TrainResult}``), over episodes: the first-epoch gradient norm (log
    axis) and the share of all-fail groups, both smoothed over ``window`` episodes.
    Trace names: ``<label>`` in each panel, the gradient panel first."""
    titles = ("gradient norm (first epoch)", "share of all-fail groups")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=titles)
    seen: dict[str, int] = {}
    for label, run in runs.items():
        method = run.config.algo
        dash = ("solid", "dot", "dash", "dashdot")[seen.get(method, 0) % 4]  # seeds of one method
        seen[method] = seen.get(method, 0) + 1
        line = dict(color=COLORS.get(method), dash=dash)
        for col, values in ((1, run.grad_norm), (2, run.all_fail)):
            x = list(range(1, len(values) + 1))
            fig.add_scatter(x=x, y=moving_average(values, window), mode="lines", name=label,
                            line=line, legendgroup=label, showlegend=col == 1,
                            row=1, col=col)  # fmt: skip
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="episode")
    fig.update_layout(height=380, **LAYOUT)
    return fig


def success_weight_figure(run, window: int = 10) -> go.Figure:
    """How one sequence run's informative groups are weighted, per episode (smoothed).

    Left: mass on the successful answers under ``p_old`` and under TPO's
    target ``q``. Right: GRPO's mean ``|A|`` on successes and on failures.
    Trace names: ``p_old``, ``q``, ``|A| success``, ``|A| failure``.
    """
    g = run.groups
    x = list(range(1, len(g["p_success"]) + 1))
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("TPO: mass on successes", "GRPO: |advantage|"))  # fmt: skip
    for col, name, key, color in [
        (1, "p_old", "p_success", COLORS["p_old"]),
        (1, "q", "q_success", COLORS["q"]),
        (2, "|A| success", "adv_success", COLORS["grpo"]),
        (2, "|A| failure", "adv_failure", COLORS["grpo_no_kl"]),
    ]:
        fig.add_scatter(x=x, y=moving_average(g[key], window), mode="lines", name=name,
                        line=dict(color=color), row=1, col=col)  # fmt: skip
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_xaxes(title_text="episode")
    fig.update_layout(height=360, **LAYOUT)
    return fig


def sweep_figure(sweeps: dict, xaxis: str, title: str = "", log_x: bool = False) -> go.Figure:
    """Final error against one setting, ``{method: (values, mean, s.e.)}``, one line each."""
    fig = go.Figure()
    for method, (xs, mean, se) in sweeps.items():
        fig.add_scatter(x=list(xs), y=list(mean), error_y=dict(type="data", array=list(se)),
                        mode="lines+markers", name=METHOD_LABELS.get(method, method),
                        line=dict(color=COLORS.get(method)))  # fmt: skip
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title="final error", height=340,
                      **LAYOUT)  # fmt: skip
    if log_x:
        fig.update_xaxes(type="log", tickvals=[x for xs, _, _ in sweeps.values() for x in xs])
    return fig


def table3_figure(rows: list[dict], title: str = "") -> go.Figure:
    """Our final error (bars: the last episode's mean over seeds, with its 95% bootstrap
    interval) next to the paper's (diamonds), per method and H.

    ``rows`` come from :func:`tpo_core.tokens.experiments.table3_rows`; cells the paper
    reports as "> 95" are drawn at 95.
    """
    x = [f"{METHOD_LABELS.get(r['method'], r['method'])}, H={r['H']}" for r in rows]
    paper = [95.0 if r["paper"] == "> 95" else r["paper"] for r in rows]
    fig = go.Figure()
    fig.add_bar(x=x, y=[r["ours"] for r in rows], name="ours",
                error_y=dict(type="data", symmetric=False,
                             array=[r["ci"][1] - r["ours"] for r in rows],
                             arrayminus=[r["ours"] - r["ci"][0] for r in rows]),
                marker_color=[COLORS.get(r["method"], "#333333") for r in rows],
                text=[f"{r['seeds']} seeds" for r in rows])  # fmt: skip
    fig.add_scatter(x=x, y=paper, mode="markers", name="paper (20 seeds, 2,000 episodes)",
                    marker=dict(symbol="diamond", size=12, color="#222222"))  # fmt: skip
    fig.update_layout(title=title, yaxis_title="final exact-match error (%)", height=360,
                      **LAYOUT)  # fmt: skip
    return fig


# ---------------------------------------------------------------- LLM RLVR (notebook 06)

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
    fig = make_subplots(rows=1, cols=len(RLVR_PANELS), subplot_titles=list(RLVR_PANELS.values()),
                        horizontal_spacing=0.05)  # fmt: skip
    for col, metric in enumerate(RLVR_PANELS, start=1):
        for name in names:
            method, _, variant = name.partition(" ")  # e.g. "tpo 4 epochs": dashed
            h = (histories or {}).get(name, {}).get(metric, [])
            label = " ".join([METHOD_LABELS.get(method, method)] + [variant] * bool(variant))
            fig.add_scatter(x=list(range(1, len(h) + 1)), y=list(h), mode="lines",
                            name=label, legendgroup=name, showlegend=col == 1,
                            line=dict(color=COLORS.get(method), dash="dash" if variant else None),
                            row=1, col=col)  # fmt: skip
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, height=330, **LAYOUT)
    return fig
