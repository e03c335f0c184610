"""Explorers of one scored group (notebook 01): build a target by hand, PG against TPO over
epochs, and the triangle live.
"""

from __future__ import annotations

import math

import ipywidgets as w

from tpo_core.group import (
    DESCENT_METHODS,
    GroupView,
    descend_groups,
    group_view,
    random_group,
)
from tpo_core.teaching.explorers.base import (
    ETA_RANGE,
    LR_RANGE,
    Explorer,
    log_slider,
    twin_grid,
    within,
)
from tpo_core.teaching.explorers.twins import (
    overshoot_twin,
    target_twin,
)
from tpo_core.teaching.figures.group import (
    group_figure,
    group_title,
    overshoot_figure,
    overshoot_series,
)
from tpo_core.teaching.figures.simplex import SIMPLEX_PATHS, simplex_figure, simplex_paths
from tpo_core.teaching.style import METHOD_LABELS, candidate_labels

K_RANGE = (2, 16)  # the GroupExplorer's K slider


class GroupExplorer(Explorer):
    """Build a target by hand: K candidates, a slider per score, eta, z-scoring on/off.

    The figure has bar traces ``p_old``, ``q``, ``u`` and ``gradient`` (the
    TPO loss gradient ``p - q`` at the snapshot), and ``readout`` shows
    ``KL(q || p_old)`` and the entropy of ``q``.
    """

    def __init__(self, k: int = 5, eta: float = 1.0, seed: int = 0):
        within("k", k, K_RANGE)
        within("eta", eta, ETA_RANGE)
        self.seed = seed
        self._draws = 0
        self.p_old, scores = random_group(k, seed)
        self.k_slider = w.IntSlider(value=k, min=K_RANGE[0], max=K_RANGE[1], description="K")
        self.eta_slider = log_slider("eta", eta, ETA_RANGE)
        self.standardize_toggle = w.Checkbox(
            value=True, description="standardise scores (z-scores)"
        )
        self.resample_button = w.Button(description="resample p_old", icon="refresh")
        self.score_sliders = [self._score_slider(i, float(s)) for i, s in enumerate(scores)]
        self.readout = w.HTML()
        self.figure, shown = self._draw(group_figure(self.view))
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
                w.VBox([shown, self.readout]),
            ]
        )
        self.k_slider.observe(self._resize, names="value")
        self.resample_button.on_click(self._resample)
        self._observe(self.eta_slider, self.standardize_toggle, *self.score_sliders)
        self._changed()

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
        """A :func:`~tpo_core.teaching.target_twin` of the current group (z-scored).

        Its two sliders step eta over ``ETA_RANGE`` and candidate ``score_index``'s
        score over the slider's range; it starts at the current values.
        """
        if not self.standardize_toggle.value:
            raise ValueError("the twin shows the z-scored target: switch standardisation on")
        etas, i = twin_grid(ETA_RANGE, self.eta_slider.value)
        slider = self.score_sliders[score_index]
        values, j = twin_grid((slider.min, slider.max), slider.value, log=False)
        return target_twin(self.p_old, self.scores, etas, score_index, values, start=(i, j))

    def _resample(self, _button=None) -> None:
        self._draws += 1
        self.p_old, _ = random_group(len(self.score_sliders), self.seed + 1000 * self._draws)
        self._changed()

    def _resize(self, change) -> None:
        k = change["new"]
        self.p_old, new_scores = random_group(k, self.seed + 1000 * self._draws)
        kept = self.score_sliders[:k]
        added = [self._score_slider(i, float(new_scores[i])) for i in range(len(kept), k)]
        self._observe(*added)
        self.score_sliders = kept + added
        self._score_box.children = self.score_sliders
        self._changed()

    def _update(self, change=None) -> None:
        view = self.view
        x = candidate_labels(len(view.q))
        with self.figure.batch_update():
            for trace, values in zip(
                self.figure.data, (view.p_old, view.q, view.u, view.gradient), strict=True
            ):
                trace.x = x
                trace.y = values.tolist()
            self.figure.layout.title.text = group_title(view)
        self.readout.value = (
            f"KL(q ‖ p_old) = <b>{view.kl_q_p_old:.4f}</b> nats &nbsp;·&nbsp; "
            f"entropy of q = <b>{view.entropy_q:.4f}</b> nats "
            f"(uniform: {math.log(len(view.q)):.4f})"
        )


OVERSHOOT_EPOCHS = 200
SIMPLEX_LR_RANGE = (0.01, 3.0)
SIMPLEX_EPOCHS = 200
"""The overshoot explorer's most epochs: enough for TPO to settle at lr = 0.1 (lr x E = 20)."""


class OvershootExplorer(Explorer):
    """Gradient descent on one group's logits under PG, the clipped surrogate and TPO.

    Move ``lr_slider`` and ``epochs_slider`` (1 to :data:`OVERSHOOT_EPOCHS`): PG's
    endpoint is set by ``lr x epochs`` alone (too little undershoots, too much
    collapses onto one candidate), the clipped surrogate stops wherever its ratio
    leaves ``[0.8, 1.2]``, and TPO settles on its target ``q`` with a vanishing
    gradient. ``trajectories`` maps each method to its :class:`Trajectory`.
    """

    def __init__(
        self, k: int = 5, lr: float = 1.0, epochs: int = 20, eta: float = 1.0, seed: int = 0
    ):
        within("lr", lr, LR_RANGE)
        within("epochs", epochs, (1, OVERSHOOT_EPOCHS))
        within("eta", eta, ETA_RANGE)
        self.k = k
        self.seed = seed
        self.p_old, self.scores = random_group(k, seed)
        self.lr_slider = log_slider("lr", lr, LR_RANGE)
        self.epochs_slider = w.IntSlider(
            value=epochs, min=1, max=OVERSHOOT_EPOCHS, description="epochs"
        )
        self.eta_slider = log_slider("eta", eta, ETA_RANGE)
        self.resample_button = w.Button(description="new group", icon="refresh")
        self.readout = w.HTML()
        self._run()
        self.figure, shown = self._draw(
            overshoot_figure(list(self.trajectories.values()), self.view)
        )
        controls = w.HBox(
            [
                w.VBox([self.lr_slider, self.epochs_slider]),
                w.VBox([self.eta_slider, self.resample_button]),
            ]
        )
        self.widget = w.VBox([controls, shown, self.readout])
        self.resample_button.on_click(self._resample)
        self._observe(self.lr_slider, self.epochs_slider, self.eta_slider)
        self._changed()

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
        self._changed()

    def kernel_free(self):
        """An :func:`~tpo_core.teaching.overshoot_twin` of the current group and epochs.

        Its slider steps lr over ``LR_RANGE``, starting at the current lr.
        """
        lrs, start = twin_grid(LR_RANGE, self.lr_slider.value)
        epochs, eta = self.epochs_slider.value, self.eta_slider.value
        return overshoot_twin(self.p_old, self.scores, lrs, epochs, eta, start=start)

    def _update(self, change=None) -> None:
        self._run()
        series = overshoot_series(list(self.trajectories.values()), self.view)
        with self.figure.batch_update():
            for trace, (x, y) in zip(self.figure.data, series, strict=True):
                trace.x, trace.y = x, y
        best = int(self.view.u.argmax())
        ends = " · ".join(
            f"{METHOD_LABELS[m]}: p(best) = {t.probs[-1, best]:.3f}"
            for m, t in self.trajectories.items()
        )
        self.readout.value = (
            f"target q(best) = <b>{self.view.q[best]:.3f}</b> &nbsp;|&nbsp; "
            f"after {self.epochs_slider.value} epochs: {ends}"
        )


class SimplexExplorer(Explorer):
    """Notebook 01's signature figure, live: K = 3 paths on the probability triangle.

    Move ``lr_slider`` and ``epochs_slider``: PG walks along the road of
    targets and past ``q`` (its end is set by ``lr x epochs``), the clipped
    surrogate stops at its ratio box, and TPO stops on the star.
    """

    def __init__(self, p_old, scores, lr: float = 0.5, epochs: int = 30, eta: float = 1.0):
        within("lr", lr, SIMPLEX_LR_RANGE)
        within("epochs", epochs, (1, SIMPLEX_EPOCHS))
        self.p_old, self.scores, self.eta = p_old, scores, eta
        self.lr_slider = log_slider("lr", lr, SIMPLEX_LR_RANGE)
        self.epochs_slider = w.IntSlider(
            value=epochs, min=1, max=SIMPLEX_EPOCHS, description="epochs"
        )
        self.readout = w.HTML()
        figure = simplex_figure(p_old, scores, [lr], epochs, eta)
        figure.layout.sliders = []
        self.figure, shown = self._draw(figure)
        self.widget = w.VBox([w.HBox([self.lr_slider, self.epochs_slider]), shown, self.readout])
        self._observe(self.lr_slider, self.epochs_slider)
        self._changed()

    def _update(self, change=None) -> None:
        lr, epochs = self.lr_slider.value, self.epochs_slider.value
        run = descend_groups(self.p_old, self.scores, lr=lr, epochs=epochs, eta=self.eta)
        with self.figure.batch_update():
            for index, data in zip(SIMPLEX_PATHS, simplex_paths(run), strict=True):
                self.figure.data[index].update(**data)
            self.figure.layout.title.text = (
                f"{epochs} epochs at lr = {lr:.3g}: lr × epochs = {lr * epochs:.3g} "
                f"(PG lands on q when it is K / η = {3 / self.eta:.3g})"
            )
        ends = " · ".join(
            f"{METHOD_LABELS[m]}: {float(t.kl_to_target[-1]):.2e}" for m, t in run.items()
        )
        self.readout.value = f"KL(q ‖ p) at the end: {ends}"
