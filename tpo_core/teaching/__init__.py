"""The teaching layer on top of the course stages: what the notebooks import.

One import gives a notebook every figure, explorer and exercise helper::

    from tpo_core import teaching as tt

    tt.simplex_figure(p_old, scores, lrs=[0.5], epochs=30)   # a figure: data in, plotly out
    tt.GroupExplorer(k=5)                                    # an explorer: live sliders
    tt.set_drawing("output")                                 # explorers as plain figures
    tt.check("01-predict-q", [0.84, 0.12, 0.04])             # an exercise: graded, with why

Figures are plain functions (data in, plotly figure out, no widgets);
explorers wire ipywidgets controls to those figures and each can hand back a
kernel-free twin (a figure whose sliders step through precomputed states);
exercises grade an answer and name the misconception. This layer may import
any stage; no stage imports it.
"""

from tpo_core.teaching.exercises import EXERCISES, check, question, solution
from tpo_core.teaching.explorers.bandits import BetaExplorer
from tpo_core.teaching.explorers.base import (
    DRAWINGS,
    ETA_RANGE,
    LR_RANGE,
    drawing,
    set_drawing,
    twin_grid,
)
from tpo_core.teaching.explorers.group import GroupExplorer, OvershootExplorer, SimplexExplorer
from tpo_core.teaching.explorers.llm import GroupInspector, LiveRLVR
from tpo_core.teaching.explorers.tokens import LiveCurves, TokenStateExplorer
from tpo_core.teaching.explorers.twins import beta_twin, overshoot_twin, target_twin, twin_html
from tpo_core.teaching.figures.bandits import (
    beta_figure,
    budget_figure,
    concentration_share_figure,
    update_size_figure,
)
from tpo_core.teaching.figures.curves import (
    curves_figure,
    live_curves_figure,
    sweep_figure,
)
from tpo_core.teaching.figures.group import (
    candidates_figure,
    endpoint_figure,
    group_figure,
    overshoot_figure,
    panel_figure,
    targets_figure,
)
from tpo_core.teaching.figures.llm import rlvr_figure, rlvr_seeds_figure
from tpo_core.teaching.figures.simplex import simplex_figure
from tpo_core.teaching.figures.tokens import (
    muon_figure,
    push_figure,
    replay_figure,
    seeds_figure,
    table3_figure,
)
from tpo_core.teaching.style import COLORS, METHOD_LABELS

__all__ = [
    "COLORS",
    "ETA_RANGE",
    "EXERCISES",
    "LR_RANGE",
    "DRAWINGS",
    "drawing",
    "set_drawing",
    "METHOD_LABELS",
    "BetaExplorer",
    "GroupExplorer",
    "GroupInspector",
    "LiveCurves",
    "LiveRLVR",
    "OvershootExplorer",
    "SimplexExplorer",
    "TokenStateExplorer",
    "beta_figure",
    "beta_twin",
    "budget_figure",
    "check",
    "concentration_share_figure",
    "curves_figure",
    "endpoint_figure",
    "group_figure",
    "live_curves_figure",
    "muon_figure",
    "overshoot_figure",
    "overshoot_twin",
    "panel_figure",
    "push_figure",
    "question",
    "replay_figure",
    "rlvr_figure",
    "rlvr_seeds_figure",
    "seeds_figure",
    "simplex_figure",
    "solution",
    "candidates_figure",
    "sweep_figure",
    "table3_figure",
    "target_twin",
    "targets_figure",
    "twin_grid",
    "twin_html",
    "update_size_figure",
]
