"""Explorers: ipywidgets controls wired to the figures of :mod:`tpo_core.teaching.viz`.

Each explorer owns a plotly ``FigureWidget`` (attribute ``figure``) whose
traces are updated in place on every control change, and displays itself as
one widget box. All state lives in plain attributes, so a test (or a
notebook without a widget front-end) can set a slider's ``value`` from
Python and read the figure back.
"""

from __future__ import annotations

import math
from html import escape

import ipywidgets as w
import plotly.graph_objects as go
import torch

from tpo_core.group import DESCENT_METHODS, GroupView, descend_groups, group_view, random_group
from tpo_core.objectives import grpo_advantages, tpo_target
from tpo_core.teaching import twins, viz

ETA_RANGE = (0.05, 20.0)
LR_RANGE = (0.01, 100.0)
TWIN_POINTS = 25
"""Slider steps per axis of an explorer's kernel-free twin (its current value is added)."""


def _grid(bounds: tuple[float, float], current: float, log: bool = True) -> tuple[list[float], int]:
    """``TWIN_POINTS`` values over ``bounds`` (log-spaced or even) with ``current``; its index.

    A grid point within rounding of ``current`` is replaced by it, so no two steps share a label.
    """
    lo, hi = (math.log10(b) for b in bounds) if log else bounds
    grid = torch.linspace(lo, hi, TWIN_POINTS, dtype=torch.float64)
    grid = (10**grid if log else grid).tolist()
    current = float(current)
    values = [v for v in grid if not math.isclose(v, current, rel_tol=1e-9, abs_tol=1e-12)]
    values = sorted([*values, current])
    return values, values.index(current)


def _log_slider(description: str, value: float, bounds: tuple[float, float]) -> w.FloatLogSlider:
    """A base-10 log slider whose exponent grid (steps of 0.01 from ``min``) holds 10^0 = 1.

    The browser snaps values to that grid; an exponent range off the grid
    would turn eta = 1 into 0.9977 as soon as the slider renders.
    """
    return w.FloatLogSlider(
        value=value,
        base=10,
        min=round(math.log10(bounds[0]), 2),
        max=round(math.log10(bounds[1]), 2),
        step=0.01,
        description=description,
        readout_format=".3g",
        continuous_update=True,
    )


class _Explorer:
    """Shared plumbing: display as ``self.widget``, redraw on any control change."""

    widget: w.Widget

    def _observe(self, *controls: w.Widget) -> None:
        for control in controls:
            control.observe(self._update, names="value")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _update(self, change=None) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class GroupExplorer(_Explorer):
    """Build a target by hand: K candidates, a slider per score, eta, z-scoring on/off.

    The figure has bar traces ``p_old``, ``q``, ``u`` and ``gradient`` (the
    TPO loss gradient ``p - q`` at the snapshot), and ``readout`` shows
    ``KL(q || p_old)`` and the entropy of ``q``.
    """

    def __init__(self, k: int = 5, eta: float = 1.0, seed: int = 0):
        self.seed = seed
        self._draws = 0
        self.p_old, scores = random_group(k, seed)
        self.k_slider = w.IntSlider(value=k, min=2, max=16, description="K")
        self.eta_slider = _log_slider("eta", eta, ETA_RANGE)
        self.standardize_toggle = w.Checkbox(
            value=True, description="standardise scores (z-scores)"
        )
        self.resample_button = w.Button(description="resample p_old", icon="refresh")
        self.score_sliders = [self._score_slider(i, float(s)) for i, s in enumerate(scores)]
        self.readout = w.HTML()
        self.figure = go.FigureWidget(viz.group_figure(self.view))
        self._score_box = w.VBox(self.score_sliders)
        self.widget = w.HBox(
            [
                w.VBox(
                    [
                        self.k_slider,
                        self.eta_slider,
                        self.standardize_toggle,
                        self.resample_button,
                        w.HTML("<b>raw scores</b>"),
                        self._score_box,
                    ],
                    layout=w.Layout(min_width="330px"),
                ),
                w.VBox([self.figure, self.readout]),
            ]
        )
        self.k_slider.observe(self._resize, names="value")
        self.resample_button.on_click(self._resample)
        self._observe(self.eta_slider, self.standardize_toggle, *self.score_sliders)
        self._update()

    def _score_slider(self, i: int, value: float) -> w.FloatSlider:
        return w.FloatSlider(value=value, min=-10, max=10, step=0.1, description=f"s(y{i + 1})")

    @property
    def scores(self) -> list[float]:
        return [s.value for s in self.score_sliders]

    @property
    def view(self) -> GroupView:
        return group_view(
            self.p_old, self.scores, self.eta_slider.value, self.standardize_toggle.value
        )

    def target(self):
        """The current target ``q`` (a float64 tensor over the K candidates)."""
        return self.view.q

    def kernel_free(self, score_index: int = 0):
        """A :func:`~tpo_core.teaching.twins.target_twin` of the current group (z-scored).

        Its two sliders step eta over ``ETA_RANGE`` and candidate ``score_index``'s
        score over the slider's range; it starts at the current values.
        """
        if not self.standardize_toggle.value:
            raise ValueError("the twin shows the z-scored target: switch standardisation on")
        etas, i = _grid(ETA_RANGE, self.eta_slider.value)
        slider = self.score_sliders[score_index]
        values, j = _grid((slider.min, slider.max), slider.value, log=False)
        return twins.target_twin(self.p_old, self.scores, etas, score_index, values, start=(i, j))

    def _resample(self, _button=None) -> None:
        self._draws += 1
        self.p_old, _ = random_group(len(self.score_sliders), self.seed + 1000 * self._draws)
        self._update()

    def _resize(self, change) -> None:
        k = change["new"]
        self.p_old, new_scores = random_group(k, self.seed + 1000 * self._draws)
        kept = self.score_sliders[:k]
        added = [self._score_slider(i, float(new_scores[i])) for i in range(len(kept), k)]
        self._observe(*added)
        self.score_sliders = kept + added
        self._score_box.children = self.score_sliders
        self._update()

    def _update(self, change=None) -> None:
        view = self.view
        x = viz.candidate_labels(len(view.q))
        with self.figure.batch_update():
            for trace, values in zip(
                self.figure.data, (view.p_old, view.q, view.u, view.gradient), strict=True
            ):
                trace.x = x
                trace.y = values.tolist()
            self.figure.layout.title.text = viz.group_title(view)
        self.readout.value = (
            f"KL(q ‖ p_old) = <b>{view.kl_q_p_old:.4f}</b> nats &nbsp;·&nbsp; "
            f"entropy of q = <b>{view.entropy_q:.4f}</b> nats "
            f"(uniform: {math.log(len(view.q)):.4f})"
        )


class OvershootExplorer(_Explorer):
    """Gradient descent on one group's logits under PG, the clipped surrogate and TPO.

    Move ``lr_slider`` and ``epochs_slider``: PG's endpoint is set by
    ``lr x epochs`` alone (too little undershoots, too much collapses onto one
    candidate), the clipped surrogate stops wherever its ratio leaves
    ``[0.8, 1.2]``, and TPO settles on its target ``q`` with a vanishing
    gradient. ``trajectories`` maps each method to its :class:`Trajectory`.
    """

    def __init__(
        self, k: int = 5, lr: float = 1.0, epochs: int = 20, eta: float = 1.0, seed: int = 0
    ):
        self.k = k
        self.seed = seed
        self.p_old, self.scores = random_group(k, seed)
        self.lr_slider = _log_slider("lr", lr, LR_RANGE)
        self.epochs_slider = w.IntSlider(value=epochs, min=1, max=50, description="epochs")
        self.eta_slider = _log_slider("eta", eta, ETA_RANGE)
        self.resample_button = w.Button(description="new group", icon="refresh")
        self.readout = w.HTML()
        self._run()
        self.figure = go.FigureWidget(
            viz.overshoot_figure(list(self.trajectories.values()), self.view)
        )
        controls = w.HBox(
            [
                w.VBox([self.lr_slider, self.epochs_slider]),
                w.VBox([self.eta_slider, self.resample_button]),
            ]
        )
        self.widget = w.VBox([controls, self.figure, self.readout])
        self.resample_button.on_click(self._resample)
        self._observe(self.lr_slider, self.epochs_slider, self.eta_slider)
        self._update()

    def _run(self) -> None:
        self.view = group_view(self.p_old, self.scores, self.eta_slider.value)
        self.trajectories = descend_groups(
            self.p_old,
            self.scores,
            DESCENT_METHODS,
            self.lr_slider.value,
            self.epochs_slider.value,
            self.eta_slider.value,
        )

    def _resample(self, _button=None) -> None:
        self.seed += 1
        self.p_old, self.scores = random_group(self.k, self.seed)
        self._update()

    def kernel_free(self):
        """An :func:`~tpo_core.teaching.twins.overshoot_twin` of the current group and epochs.

        Its slider steps lr over ``LR_RANGE``, starting at the current lr.
        """
        lrs, start = _grid(LR_RANGE, self.lr_slider.value)
        epochs, eta = self.epochs_slider.value, self.eta_slider.value
        return twins.overshoot_twin(self.p_old, self.scores, lrs, epochs, eta, start=start)

    def _update(self, change=None) -> None:
        self._run()
        series = viz.overshoot_series(list(self.trajectories.values()), self.view)
        with self.figure.batch_update():
            for trace, (x, y) in zip(self.figure.data, series, strict=True):
                trace.x, trace.y = x, y
        best = int(self.view.u.argmax())
        ends = " · ".join(
            f"{viz.METHOD_LABELS[m]}: p(best) = {t.probs[-1, best]:.3f}"
            for m, t in self.trajectories.items()
        )
        self.readout.value = (
            f"target q(best) = <b>{self.view.q[best]:.3f}</b> &nbsp;|&nbsp; "
            f"after {self.epochs_slider.value} epochs: {ends}"
        )


class SimplexExplorer(_Explorer):
    """Notebook 01's signature figure, live: K = 3 paths on the probability triangle.

    Move ``lr_slider`` and ``epochs_slider``: PG walks along the road of
    targets and past ``q`` (its end is set by ``lr x epochs``), the clipped
    surrogate stops at its ratio box, and TPO stops on the star.
    """

    def __init__(self, p_old, scores, lr: float = 0.5, epochs: int = 30, eta: float = 1.0):
        self.p_old, self.scores, self.eta = p_old, scores, eta
        self.lr_slider = _log_slider("lr", lr, (0.01, 3.0))
        self.epochs_slider = w.IntSlider(value=epochs, min=1, max=200, description="epochs")
        self.readout = w.HTML()
        figure = viz.simplex_figure(p_old, scores, [lr], epochs, eta)
        figure.layout.sliders = []
        self.figure = go.FigureWidget(figure)
        self.widget = w.VBox(
            [w.HBox([self.lr_slider, self.epochs_slider]), self.figure, self.readout]
        )
        self._observe(self.lr_slider, self.epochs_slider)
        self._update()

    def _update(self, change=None) -> None:
        lr, epochs = self.lr_slider.value, self.epochs_slider.value
        run = descend_groups(self.p_old, self.scores, lr=lr, epochs=epochs, eta=self.eta)
        with self.figure.batch_update():
            for index, data in zip(viz.SIMPLEX_PATHS, viz.simplex_paths(run), strict=True):
                self.figure.data[index].update(**data)
            self.figure.layout.title.text = (
                f"{epochs} epochs at lr = {lr:.3g}: lr × epochs = {lr * epochs:.3g} "
                f"(PG lands on q when it is K / η = {3 / self.eta:.3g})"
            )
        ends = " · ".join(
            f"{viz.METHOD_LABELS[m]}: {float(t.kl_to_target[-1]):.2e}" for m, t in run.items()
        )
        self.readout.value = f"KL(q ‖ p) at the end: {ends}"


class BetaExplorer(_Explorer):
    """How each method weighs a context by how well it is already solved.

    Left: ``beta(p)`` for every method at the chosen K (``k_slider``). Right:
    the share of one normalised step that each context gets, for contexts
    whose correct-action probabilities are set by ``p_sliders``.
    """

    def __init__(self, k: int = 10, contexts: dict[str, float] | None = None):
        contexts = contexts or {"hard": 0.02, "medium": 0.3, "easy": 0.9}
        self.k_slider = w.IntSlider(value=k, min=2, max=100, description="K")
        self.p_sliders = {
            name: w.FloatSlider(value=p, min=0.01, max=0.99, step=0.01, description=f"p({name})")
            for name, p in contexts.items()
        }
        self.beta_figure = go.FigureWidget(viz.beta_figure(k))
        self.budget_figure = go.FigureWidget(viz.budget_figure(self.p_values, list(contexts), k))
        self.widget = w.VBox(
            [
                w.HBox([self.k_slider, *self.p_sliders.values()]),
                w.HBox([self.beta_figure, self.budget_figure]),
            ]
        )
        self._observe(self.k_slider, *self.p_sliders.values())

    @property
    def p_values(self) -> list[float]:
        return [s.value for s in self.p_sliders.values()]

    def kernel_free(self):
        """A :func:`~tpo_core.teaching.twins.beta_twin`: one step per K of the slider's range."""
        ks = list(range(self.k_slider.min, self.k_slider.max + 1))
        return twins.beta_twin(ks, start=ks.index(self.k_slider.value))

    def _update(self, change=None) -> None:
        k = self.k_slider.value
        _, betas = viz.beta_series(k)
        shares = viz.budget_series(self.p_values, k)
        with self.beta_figure.batch_update(), self.budget_figure.batch_update():
            for trace, beta in zip(self.beta_figure.data, betas, strict=True):
                trace.y = beta
            for trace, share in zip(self.budget_figure.data, shares, strict=True):
                trace.y = share
            self.beta_figure.layout.title.text = viz.beta_title(k)


class LiveCurves(_Explorer):
    """A figure of error per episode that training callbacks fill in as runs progress."""

    def __init__(self, names: list[str], title: str = "", every: int = 5):
        self.every = every
        self.names = list(names)
        self.figure = go.FigureWidget(viz.live_curves_figure(self.names, title))
        self.widget = self.figure

    def callback(self, name: str):
        """A ``callback(episode, result)`` for :func:`~tpo_core.tokens.train.train`."""
        trace = self.figure.data[self.names.index(name)]

        def update(episode, result):
            if (episode + 1) % self.every == 0 or episode + 1 == result.config.episodes:
                trace.x, trace.y = list(range(1, len(result.error) + 1)), list(result.error)

        return update


class TokenStateExplorer(_Explorer):
    """One prefix state of a token-level batch: the K candidates, their rewards, the group
    policy ``p_old``, TPO's target ``q`` and GRPO's advantages, for a chosen prompt and position."""

    def __init__(self, batch):
        self.batch = batch
        b, h, _ = batch.candidates.shape
        # Start on the first state whose candidates disagree, if there is one: that is
        # where the target moves mass (a trained model makes most groups unanimous).
        mixed = (batch.rewards.amax(-1) != batch.rewards.amin(-1)).nonzero().tolist()
        i, t = mixed[0] if mixed else (0, 0)
        self.prompt_slider = w.IntSlider(value=i, min=0, max=b - 1, description="prompt")
        self.position_slider = w.IntSlider(value=t, min=0, max=h - 1, description="position")
        self.readout = w.HTML()
        self.figure = go.FigureWidget(viz.state_figure(*self.state()))
        self.widget = w.VBox(
            [w.HBox([self.prompt_slider, self.position_slider]), self.readout, self.figure]
        )
        self._observe(self.prompt_slider, self.position_slider)
        self._update()

    def state(self):
        """(labels, rewards, p_old over the group, q, GRPO advantages) at the chosen state."""
        i, t = self.prompt_slider.value, self.position_slider.value
        old, rewards = self.batch.old_log_probs[i, t], self.batch.rewards[i, t]
        return (
            [f"#{j} → {c}" for j, c in enumerate(self.batch.candidates[i, t].tolist())],
            rewards.tolist(),
            torch.softmax(old, -1).tolist(),
            tpo_target(old, rewards).tolist(),
            grpo_advantages(rewards).tolist(),
        )

    def _update(self, change=None) -> None:
        i, t = self.prompt_slider.value, self.position_slider.value
        _, rewards, p_old, q, adv = self.state()
        with self.figure.batch_update():
            for trace, y in zip(self.figure.data, (p_old, q, rewards, adv), strict=True):
                trace.y = y
            self.figure.layout.title.text = f"prompt {i}, answer position {t}"
        prompt = " ".join(map(str, self.batch.prompts[i].tolist()))
        answer = " ".join(map(str, self.batch.answers[i, :t].tolist()))
        self.readout.value = (
            f"prompt <code>{prompt}</code> &nbsp; answer so far <code>{answer or '∅'}</code>"
        )


class LiveRLVR(_Explorer):
    """RLVR curves (:func:`tpo_core.teaching.viz.rlvr_figure`) that training callbacks fill in."""

    def __init__(self, names: list[str], title: str = ""):
        self.names = list(names)
        self.figure = go.FigureWidget(viz.rlvr_figure(self.names, title=title))
        self.widget = self.figure

    def callback(self, name: str):
        """A ``callback(step, result)`` for :func:`tpo_core.llm.rlvr_train` drawing run ``name``."""
        index = self.names.index(name)

        def update(step, result):
            with self.figure.batch_update():
                for panel, metric in enumerate(viz.RLVR_PANELS):
                    values = result.history[metric]
                    trace = self.figure.data[panel * len(self.names) + index]
                    trace.x, trace.y = list(range(1, len(values) + 1)), list(values)

        return update


class GroupInspector(_Explorer):
    """One prompt's group from an RLVR rollout: the K completions as text, their rewards,
    ``p_old`` over the group, ``u``, TPO's ``q`` and GRPO's advantages (notebook 01's
    picture on real text). ``rollout`` needs its snapshot log-probs."""

    def __init__(self, rollout, eta: float = 1.0):
        from tpo_core.llm.rlvr import group_table

        self.rollout, self.eta, self._table = rollout, eta, group_table
        rewards = rollout.rewards
        mixed = (rewards.amax(-1) != rewards.amin(-1)).nonzero().flatten().tolist()
        last = len(rollout.problems) - 1
        start = mixed[0] if mixed else 0
        self.group_slider = w.IntSlider(value=start, min=0, max=last, description="prompt")
        self.table = w.HTML()
        self.figure = go.FigureWidget(viz.state_figure(*self._bars(), xaxis="completion"))
        self.widget = w.VBox([self.group_slider, self.table, self.figure])
        self._observe(self.group_slider)
        self._update()

    def group(self) -> dict:
        return self._table(self.rollout, self.group_slider.value, self.eta)

    def _bars(self):
        g = self.group()
        labels = [f"#{i}" for i in range(len(g["completions"]))]
        return labels, g["rewards"], g["p_old"], g["q"], g["advantages"]

    def _update(self, change=None) -> None:
        g = self.group()
        _, rewards, p_old, q, adv = self._bars()
        with self.figure.batch_update():
            for trace, y in zip(self.figure.data, (p_old, q, rewards, adv), strict=True):
                trace.y = y
            self.figure.layout.title.text = f"prompt {self.group_slider.value}"
        rows = "".join(
            f"<tr><td>#{i}</td><td><code>{escape(text) or '∅'}</code></td><td>{r:g}</td>"
            f"<td>{p:.3f}</td><td>{u:+.2f}</td><td>{qi:.3f}</td><td>{a:+.2f}</td></tr>"
            for i, (text, r, p, u, qi, a) in enumerate(
                zip(g["completions"], rewards, p_old, g["u"], q, adv, strict=True)
            )
        )
        self.table.value = (
            f"<b>prompt</b> <code>{escape(g['prompt'])}</code>"
            "<table><tr><th></th><th>completion</th><th>reward</th><th>p_old</th><th>u</th>"
            f"<th>q</th><th>GRPO A</th></tr>{rows}</table>"
        )
