"""Explorers of the LLM RLVR loop (notebook 06): live curves and one prompt's group."""

from __future__ import annotations

from html import escape

import ipywidgets as w

from tpo_core.teaching.explorers.base import (
    Explorer,
)
from tpo_core.teaching.figures.group import candidates_figure
from tpo_core.teaching.figures.llm import RLVR_PANELS, rlvr_figure


class LiveRLVR(Explorer):
    """RLVR curves (:func:`tpo_core.teaching.rlvr_figure`) that training callbacks fill in."""

    def __init__(self, names: list[str], title: str = ""):
        self.names = list(names)
        self.figure, self.widget = self._draw(rlvr_figure(self.names, title=title))
        self._redraw()

    def callback(self, name: str):
        """A ``callback(step, result)`` for :func:`tpo_core.llm.rlvr_train` drawing run ``name``."""
        index = self.names.index(name)

        def update(step, result):
            with self.figure.batch_update():
                for panel, metric in enumerate(RLVR_PANELS):
                    values = result.history[metric]
                    trace = self.figure.data[panel * len(self.names) + index]
                    trace.x, trace.y = list(range(1, len(values) + 1)), list(values)
            self._redraw(last=step + 1 >= result.config.steps)

        return update


class GroupInspector(Explorer):
    """One prompt's group from an RLVR rollout: the K completions as text, their rewards,
    ``p_old`` over the group, ``u``, TPO's ``q`` and GRPO's advantages (notebook 01's
    picture on real text). ``rollout`` needs its snapshot log-probs."""

    def __init__(self, rollout, eta: float = 1.0):
        from tpo_core.llm import group_table

        self.rollout, self.eta, self._table = rollout, eta, group_table
        rewards = rollout.rewards
        mixed = (rewards.amax(-1) != rewards.amin(-1)).nonzero().flatten().tolist()
        last = len(rollout.problems) - 1
        start = mixed[0] if mixed else 0
        self.group_slider = w.IntSlider(value=start, min=0, max=last, description="prompt")
        self.table = w.HTML()
        self.figure, shown = self._draw(candidates_figure(*self._bars(), xaxis="completion"))
        self.widget = w.VBox([self.group_slider, self.table, shown])
        self._observe(self.group_slider)
        self._changed()

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
