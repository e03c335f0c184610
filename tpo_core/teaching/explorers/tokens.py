"""Explorers of the token tasks (notebook 04): live training curves and one prefix state's group."""

from __future__ import annotations

import ipywidgets as w

from tpo_core.objectives import group_policy, grpo_advantages, tpo_target
from tpo_core.teaching.explorers.base import (
    Explorer,
)
from tpo_core.teaching.figures.curves import live_curves_figure
from tpo_core.teaching.figures.group import candidates_figure


class LiveCurves(Explorer):
    """A figure of error per episode that training callbacks fill in as runs progress."""

    def __init__(self, names: list[str], title: str = "", every: int = 5):
        self.every = every
        self.names = list(names)
        self.figure, self.widget = self._draw(live_curves_figure(self.names, title))
        self._redraw()

    def callback(self, name: str):
        """A ``callback(episode, result)`` for :func:`~tpo_core.tokens.train.train`."""
        trace = self.figure.data[self.names.index(name)]

        def update(episode, result):
            if (episode + 1) % self.every == 0 or episode + 1 == result.config.episodes:
                trace.x, trace.y = list(range(1, len(result.error) + 1)), list(result.error)
                self._redraw(last=episode + 1 == result.config.episodes)

        return update


class TokenStateExplorer(Explorer):
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
        self.figure, shown = self._draw(candidates_figure(*self.state()))
        self.widget = w.VBox(
            [w.HBox([self.prompt_slider, self.position_slider]), self.readout, shown]
        )
        self._observe(self.prompt_slider, self.position_slider)
        self._changed()

    def state(self):
        """(labels, rewards, p_old over the group, q, GRPO advantages) at the chosen state."""
        i, t = self.prompt_slider.value, self.position_slider.value
        old, rewards = self.batch.old_log_probs[i, t], self.batch.rewards[i, t]
        return (
            [f"#{j} → {c}" for j, c in enumerate(self.batch.candidates[i, t].tolist())],
            rewards.tolist(),
            group_policy(old).tolist(),
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
