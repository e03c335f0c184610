"""The beta(p) and step-budget explorer (notebook 02)."""

from __future__ import annotations

import ipywidgets as w

from tpo_core.teaching.explorers.base import (
    Explorer,
    within,
)
from tpo_core.teaching.explorers.twins import (
    beta_twin,
)
from tpo_core.teaching.figures.bandits import (
    beta_figure,
    beta_series,
    beta_title,
    budget_figure,
    budget_series,
)


class BetaExplorer(Explorer):
    """How each method weighs a context by how well it is already solved.

    Left: ``beta(p)`` for every method at the chosen K (``k_slider``). Right:
    the share of one normalised step that each context gets, for contexts
    whose correct-action probabilities are set by ``p_sliders``.
    """

    def __init__(self, k: int = 10, contexts: dict[str, float] | None = None):
        contexts = contexts or {"hard": 0.02, "medium": 0.3, "easy": 0.9}
        within("k", k, (2, 100))
        for name, p in contexts.items():
            within(f"p({name})", p, (0.01, 0.99))
        self.k_slider = w.IntSlider(value=k, min=2, max=100, description="K")
        self.p_sliders = {
            name: w.FloatSlider(value=p, min=0.01, max=0.99, step=0.01, description=f"p({name})")
            for name, p in contexts.items()
        }
        self.beta_figure, beta_shown = self._draw(beta_figure(k))
        self.budget_figure, budget_shown = self._draw(
            budget_figure(self.p_values, list(contexts), k)
        )
        self.widget = w.VBox(
            [
                w.HBox([self.k_slider, *self.p_sliders.values()]),
                w.HBox([beta_shown, budget_shown]),
            ]
        )
        self._observe(self.k_slider, *self.p_sliders.values())
        self._redraw()

    @property
    def p_values(self) -> list[float]:
        return [s.value for s in self.p_sliders.values()]

    def kernel_free(self):
        """A :func:`~tpo_core.teaching.beta_twin`: one step per K of the slider's range."""
        ks = list(range(self.k_slider.min, self.k_slider.max + 1))
        return beta_twin(ks, start=ks.index(self.k_slider.value))

    def _update(self, change=None) -> None:
        k = self.k_slider.value
        _, betas = beta_series(k)
        shares = budget_series(self.p_values, k)
        with self.beta_figure.batch_update(), self.budget_figure.batch_update():
            for trace, beta in zip(self.beta_figure.data, betas, strict=True):
                trace.y = beta
            for trace, share in zip(self.budget_figure.data, shares, strict=True):
                trace.y = share
            self.beta_figure.layout.title.text = beta_title(k)
