"""What every explorer shares: a widget box that redraws on any control change, two ways
of drawing its figures, log sliders, and the slider grids of the kernel-free twins.

Explorers draw in one of two :data:`DRAWINGS`:

* ``"widget"``: each figure is a plotly ``FigureWidget``, updated in place in the browser
  (its front end comes through anywidget, with plotly.js for each figure);
* ``"output"``: each figure is a standard plotly figure redrawn into an
  ``ipywidgets.Output`` after every change, which renders wherever a plain plotly figure
  does (Colab's own widget support and renderer included) and sends only the figure's data.

The default is ``"output"`` on Colab and ``"widget"`` elsewhere; the ``TPO_DRAWING``
environment variable or :func:`set_drawing` chooses either anywhere.
"""

from __future__ import annotations

import math
import os
import sys
import time

import ipywidgets as w
import plotly.graph_objects as go
import torch

ETA_RANGE = (0.05, 20.0)


LR_RANGE = (0.01, 100.0)


TWIN_POINTS = 25
"""Slider steps per axis of an explorer's kernel-free twin (its current value is added)."""


def twin_grid(
    bounds: tuple[float, float], current: float, log: bool = True
) -> tuple[list[float], int]:
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


def within(name: str, value, bounds: tuple) -> None:
    """Raise ValueError if ``value`` lies outside the slider range ``bounds``: a slider would
    clamp it silently, and the explorer would show another setting than the one asked for."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(
            f"{name} must lie in [{low:g}, {high:g}] (the slider's range), got {value!r}"
        )


def log_slider(description: str, value: float, bounds: tuple[float, float]) -> w.FloatLogSlider:
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


DRAWINGS = ("widget", "output")
REDRAW_SECONDS = 2.0  # the fastest a live figure drawn as "output" redraws during training
_chosen: list[str | None] = [None]


def set_drawing(mode: str | None) -> None:
    """Draw the explorers built from now on as ``mode`` (one of :data:`DRAWINGS`); None
    restores the default (``TPO_DRAWING``, else ``"output"`` on Colab, ``"widget"``)."""
    if mode is not None and mode not in DRAWINGS:
        raise ValueError(f"drawing must be one of {DRAWINGS}, got {mode!r}")
    _chosen[0] = mode


def drawing() -> str:
    """How explorers draw their figures now (:data:`DRAWINGS`)."""
    mode = _chosen[0] or os.environ.get("TPO_DRAWING")
    if mode is None:
        return "output" if "google.colab" in sys.modules else "widget"
    if mode not in DRAWINGS:
        raise ValueError(f"TPO_DRAWING must be one of {DRAWINGS}, got {mode!r}")
    return mode


class Explorer:
    """Shared plumbing: display as ``self.widget``, redraw on any control change."""

    widget: w.Widget

    def _draw(self, figure: go.Figure) -> tuple[go.Figure, w.Widget]:
        """The figure an explorer updates in place and the widget that shows it, as
        :func:`drawing` says: a ``FigureWidget`` (both), or a figure and an ``Output`` that
        :meth:`_redraw` fills."""
        if drawing() == "widget":
            live = go.FigureWidget(figure)
            return live, live
        figure, shown = go.Figure(figure), w.Output()
        self.__dict__.setdefault("_outputs", []).append((figure, shown))
        return figure, shown

    def _redraw(self, last: bool = True) -> None:
        """Show each ``"output"`` figure as it now is (a ``FigureWidget`` shows itself). A
        training callback passes ``last=False`` until its run's final step: such redraws are
        then at most one per :data:`REDRAW_SECONDS`, since each sends and draws the whole
        figure again."""
        now = time.monotonic()
        if not last and now - self.__dict__.get("_drawn_at", -math.inf) < REDRAW_SECONDS:
            return
        self._drawn_at = now
        renderer = "colab" if "google.colab" in sys.modules else "plotly_mimetype"
        for figure, shown in self.__dict__.get("_outputs", ()):
            shown.clear_output(wait=True)
            with shown:
                figure.show(renderer=renderer)

    def _changed(self, change=None) -> None:
        self._update(change)
        self._redraw()

    def _observe(self, *controls: w.Widget) -> None:
        for control in controls:
            control.observe(self._changed, names="value")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        """Display ``self.widget``: ipywidgets 7 (Colab's) widgets have no ``_repr_mimebundle_``."""
        from IPython.display import display

        display(self.widget)

    def _update(self, change=None) -> None:  # pragma: no cover - overridden
        raise NotImplementedError
