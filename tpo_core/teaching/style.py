"""Colours, labels and layout shared by every figure: one colour and one label per method."""

from __future__ import annotations

from tpo_core import methods

COLORS = {
    "p_old": "#9aa5b1",
    "u": "#6c8ebf",
    "q": "#e8710a",
    "gradient": "#b5443b",
    "target": "#e8710a",
    **methods.COLORS,  # one colour per method, from the catalogue
}


METHOD_LABELS = methods.LABELS


KL_FLOOR = 1e-12
"""KL values are floored here so the log axis can show a policy sitting on its target."""


LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=60, b=40))


def candidate_labels(k: int) -> list[str]:
    return [f"y{i + 1}" for i in range(k)]


def rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
