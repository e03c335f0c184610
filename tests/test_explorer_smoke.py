"""Every explorer, built through ``tpo_core.teaching`` as a notebook builds it: it displays as a
widget, and moving its controls redraws it to the library's values.

CI also runs this file in a second environment holding the oldest ipywidgets, plotly and
anywidget that pyproject.toml allows (Colab's ipywidgets 7 among them): it needs only the
package's runtime dependencies and pytest.
"""

from types import SimpleNamespace

import plotly.graph_objects as go
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.display import display
from IPython.utils.capture import capture_output

from tpo_core import teaching as tt
from tpo_core.group import DESCENT_METHODS, descend_groups, group_view, random_group
from tpo_core.objectives import grpo_advantages, tpo_target
from tpo_core.tokens.rollouts import token_rollouts
from tpo_core.tokens.train import TrainConfig, initial_model

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture(autouse=True, params=tt.DRAWINGS)
def drawing(request):
    """Every test here runs with the explorers drawn both ways."""
    tt.set_drawing(request.param)
    yield request.param
    tt.set_drawing(None)


def shown(explorer) -> dict:
    """What a notebook gets when the explorer ends a cell: one output's mime bundle."""
    InteractiveShell.instance()
    with capture_output() as captured:
        display(explorer)
    assert len(captured.outputs) == 1, captured.stderr[-2000:]
    return captured.outputs[0].data


def ys(figure) -> list[list[float]]:
    return [list(trace.y) for trace in figure.data]


def assert_same_figure(got, want):
    """Same traces, with the same numbers on every axis (x, y, and a, b, c on a triangle)."""
    assert len(got.data) == len(want.data)
    for a, b in zip(got.data, want.data, strict=True):
        a, b = a.to_plotly_json(), b.to_plotly_json()
        for axis in ("x", "y", "a", "b", "c"):
            values = b.get(axis)
            if values is not None and len(values) and not isinstance(values[0], str):
                assert list(a[axis]) == pytest.approx(list(values)), axis


def test_group_explorer_moves_to_the_library_target():
    explorer = tt.GroupExplorer(k=5, eta=1.0, seed=0)
    assert WIDGET_VIEW in shown(explorer)
    explorer.eta_slider.value = 0.3
    explorer.score_sliders[1].value = 2.5
    by_name = {trace.name: list(trace.y) for trace in explorer.figure.data}
    view = group_view(explorer.p_old, explorer.scores, 0.3)
    assert by_name["q"] == pytest.approx(view.q.tolist())
    assert by_name["p_old"] == pytest.approx(view.p_old.tolist())
    explorer.k_slider.value = 7
    assert len(explorer.figure.data[1].y) == 7
    p_old = explorer.p_old.clone()
    explorer.resample_button.click()
    assert not torch.equal(explorer.p_old, p_old)
    q = group_view(explorer.p_old, explorer.scores, 0.3).q
    assert list(explorer.figure.data[1].y) == pytest.approx(q.tolist())


def test_overshoot_explorer_redraws_the_descents():
    explorer = tt.OvershootExplorer(k=5, lr=1.0, epochs=20, seed=0)
    assert WIDGET_VIEW in shown(explorer)
    explorer.lr_slider.value, explorer.epochs_slider.value = 0.3, 12
    p_old, scores = random_group(5, 0)
    runs = descend_groups(p_old, scores, DESCENT_METHODS, 0.3, 12, 1.0)
    want = tt.overshoot_figure(list(runs.values()), group_view(p_old, scores, 1.0))
    assert_same_figure(explorer.figure, want)
    assert "after 12 epochs" in explorer.readout.value


def test_simplex_explorer_redraws_the_paths():
    p_old = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    scores = torch.tensor([-1.0, 0.0, 1.0])
    explorer = tt.SimplexExplorer(p_old, scores, lr=0.5, epochs=30)
    assert WIDGET_VIEW in shown(explorer)
    explorer.lr_slider.value, explorer.epochs_slider.value = 0.2, 80
    assert_same_figure(explorer.figure, tt.simplex_figure(p_old, scores, [0.2], 80))
    assert "80 epochs" in explorer.figure.layout.title.text


def test_beta_explorer_redraws_both_panels():
    explorer = tt.BetaExplorer(k=10)
    assert WIDGET_VIEW in shown(explorer)
    explorer.k_slider.value = 25
    explorer.p_sliders["hard"].value = 0.1
    names = list(explorer.p_sliders)
    assert_same_figure(explorer.beta_figure, tt.beta_figure(25))
    assert_same_figure(explorer.budget_figure, tt.budget_figure(explorer.p_values, names, 25))


def test_live_curves_and_live_rlvr_fill_in_from_callbacks():
    live = tt.LiveCurves(["a", "b"], every=2)
    assert WIDGET_VIEW in shown(live)
    run = SimpleNamespace(error=[0.9, 0.5], config=SimpleNamespace(episodes=2))
    live.callback("b")(1, run)
    assert ys(live.figure) == [[], [0.9, 0.5]]

    rlvr = tt.LiveRLVR(["tpo", "grpo_per_token"])
    assert WIDGET_VIEW in shown(rlvr)
    metrics = ("reward", "pass_at_k", "zero_variance", "grad_norm", "kl")
    history = {m: [0.1 * i, 0.2 * i] for i, m in enumerate(metrics, start=1)}
    rlvr.callback("tpo")(1, SimpleNamespace(history=history, config=SimpleNamespace(steps=2)))
    for panel, metric in enumerate(metrics):
        assert list(rlvr.figure.data[2 * panel].y) == pytest.approx(history[metric])
        assert list(rlvr.figure.data[2 * panel + 1].y) == []


def test_token_state_explorer_shows_the_chosen_state():
    config = TrainConfig(task="copy", reward="bag", method="tpo_token", length=4, vocab=2)
    batch = token_rollouts(
        initial_model(config), "copy", "bag", 3, 5, torch.Generator().manual_seed(0)
    )
    explorer = tt.TokenStateExplorer(batch)
    assert WIDGET_VIEW in shown(explorer)
    explorer.prompt_slider.value, explorer.position_slider.value = 2, 3
    old, rewards = batch.old_log_probs[2, 3], batch.rewards[2, 3]
    by_name = {trace.name: list(trace.y) for trace in explorer.figure.data}
    assert by_name["q"] == pytest.approx(tpo_target(old, rewards).tolist())
    assert by_name["GRPO advantage"] == pytest.approx(grpo_advantages(rewards).tolist())


def test_group_inspector_shows_one_prompts_group():
    from tpo_core.llm import Rollout, group_table
    from tpo_core.llm.verifiers import Problem

    g, k, t = 3, 4, 5
    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(g * k, t, dtype=torch.bool)
    mask[::3, 3:] = False  # some completions end early
    rollout = Rollout(
        problems=[Problem(f"{i} + 1 =", str(i + 1), "sums") for i in range(g)],
        prompts=[f"{i} + 1 =" for i in range(g)],
        completions=[f"answer {j}" for j in range(g * k)],
        rewards=torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1]]),
        input_ids=torch.zeros(g * k, 2 + t, dtype=torch.long),
        attention_mask=torch.ones(g * k, 2 + t, dtype=torch.long),
        completion_mask=mask,
        old_log_probs=-torch.rand(g * k, t, generator=gen),
    )
    inspector = tt.GroupInspector(rollout)
    assert WIDGET_VIEW in shown(inspector)
    inspector.group_slider.value = 2
    table = group_table(rollout, 2)
    by_name = {trace.name: list(trace.y) for trace in inspector.figure.data}
    assert by_name["q"] == pytest.approx(table["q"])
    assert by_name["p_old"] == pytest.approx(table["p_old"])
    assert rollout.prompts[2] in inspector.table.value


def test_an_output_drawn_explorer_redraws_a_plain_figure_of_the_library_values(drawing):
    """In "output" drawing each change shows a standard plotly figure (no custom widget front
    end), holding the library's target; a FigureWidget instead updates itself."""
    explorer = tt.GroupExplorer(k=5, eta=1.0, seed=0)
    with capture_output() as captured:
        explorer.eta_slider.value = 0.3
    figures = [o.data[PLOTLY] for o in captured.outputs if PLOTLY in o.data]
    if drawing == "widget":
        assert figures == [] and isinstance(explorer.figure, go.FigureWidget)
        return
    (figure,) = figures
    q = next(t["y"] for t in figure["data"] if t["name"] == "q")
    assert list(q) == pytest.approx(group_view(explorer.p_old, explorer.scores, 0.3).q.tolist())


def test_a_live_figure_drawn_as_output_redraws_sparingly_and_always_shows_the_end(drawing):
    """Each "output" redraw sends the whole figure: during a run at most one per
    REDRAW_SECONDS, and always the final episode's."""
    live = tt.LiveCurves(["a"], every=1)
    update = live.callback("a")
    result = SimpleNamespace(error=[], config=SimpleNamespace(episodes=50))
    with capture_output() as captured:
        for episode in range(50):
            result.error.append(1.0 - episode / 50)
            update(episode, result)
    figures = [o.data[PLOTLY] for o in captured.outputs if PLOTLY in o.data]
    if drawing == "widget":
        assert figures == [] and list(live.figure.data[0].y) == result.error
        return
    assert 1 <= len(figures) < 10  # fifty episodes in well under REDRAW_SECONDS
    assert list(figures[-1]["data"][0]["y"]) == result.error
