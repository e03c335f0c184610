"""Colours, labels and layout shared by every figure: one colour and one label per method."""

from __future__ import annotations

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


def rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
