"""One frozen batch, many epochs (tokens.replay): exact against the training loop's own update."""

import dataclasses
import math

import pytest
import torch

from tpo_core import teaching as tt
from tpo_core.objectives import kl_divergence, tpo_target
from tpo_core.tokens.model import muon_spectrum
from tpo_core.tokens.replay import group_log_probs, replay
from tpo_core.tokens.rollouts import sequence_rollouts, token_rollouts
from tpo_core.tokens.train import TrainConfig, initial_model, loss_function, optimizers_for

BASE = dict(length=4, vocab=2, batch=12, k=6, episodes=1, seed=0, device="cpu")


def _config(algo, reward="terminal", **changes):
    return TrainConfig("reverse_copy", reward, algo, **(BASE | changes))


@pytest.fixture(scope="module")
def model():
    return initial_model(_config("tpo"))


@pytest.fixture(scope="module")
def answers(model):
    return sequence_rollouts(
        model, "reverse_copy", "terminal", 12, 6, torch.Generator().manual_seed(3)
    )


def test_replay_equals_the_training_loops_epochs_and_leaves_the_model_alone(model, answers):
    before = [p.detach().clone() for p in model.parameters()]
    config = _config("grpo")
    result = replay(config, model, answers, epochs=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    twin = initial_model(config)
    optimizers, loss = optimizers_for(config, twin), loss_function(config)
    for _ in range(3):
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss(twin, answers).backward()
        for opt in optimizers:
            opt.step()
    with torch.no_grad():
        p = torch.softmax(group_log_probs(twin, answers), -1)
    q = tpo_target(answers.old_log_probs.sum(-1), answers.scores, config.eta)
    informative = answers.scores.amax(-1) > answers.scores.amin(-1)
    expected = float(kl_divergence(q, p)[informative].mean())
    assert math.isclose(result.kl_to_target[-1], expected, rel_tol=1e-6)
    assert len(result.kl_to_target) == 4
    assert result.informative_groups + result.flat_groups == 12


def test_epoch_zero_is_the_snapshot(model, answers):
    result = replay(_config("tpo"), model, answers, epochs=1)
    old = answers.old_log_probs.sum(-1)
    q = tpo_target(old, answers.scores)
    informative = answers.scores.amax(-1) > answers.scores.amin(-1)
    p_old = torch.softmax(old, -1)
    assert math.isclose(
        result.kl_to_target[0], float(kl_divergence(q, p_old)[informative].mean()), rel_tol=1e-5
    )
    assert abs(result.flat_drift[0]) < 1e-6


def _grad_norm(config, model, batch):
    twin = initial_model(config)
    twin.load_state_dict(model.state_dict())
    loss_function(config)(twin, batch).backward()
    return torch.sqrt(sum((p.grad**2).sum() for p in twin.parameters() if p.grad is not None))


@pytest.mark.parametrize("algo", ["tpo", "grpo", "grpo_per_token"])
def test_all_equal_groups_give_no_gradient_beyond_rounding(model, answers, algo):
    """Zero-variance groups are neutral on the snapshot: their gradient is float rounding.

    (The sampled and the recomputed log-probs differ in the last bits, so it is
    not exactly 0; notebook 05 measures what Muon and Adam make of it.)
    """
    config = _config(algo)
    flat = dataclasses.replace(answers, rewards=torch.zeros_like(answers.rewards))
    mixed = dataclasses.replace(answers, rewards=torch.zeros_like(answers.rewards))
    mixed.rewards[:, 0] = 1.0  # the first answer of every prompt succeeds
    assert _grad_norm(config, model, flat) < 1e-5 * _grad_norm(config, model, mixed)
    result = replay(config, model, flat, epochs=1)
    assert result.informative_groups == 0 and result.flat_groups == 12
    assert math.isnan(result.kl_to_target[0]) and math.isnan(result.success_mass[0])


def test_token_level_tpo_lands_on_its_targets(model):
    """04's claim: replayed long enough, every prefix state's policy reaches its own q."""
    states = token_rollouts(model, "reverse_copy", "bag", 8, 6, torch.Generator().manual_seed(1))
    result = replay(_config("tpo_token", reward="bag", lr=0.003), model, states, epochs=120)
    assert result.kl_to_target[-1] < 0.01 < result.kl_to_target[0]
    assert math.isclose(result.success_mass[-1], result.target_success_mass, abs_tol=0.05)


def test_replay_refuses_the_wrong_batch_or_method(model, answers):
    with pytest.raises(ValueError, match="grouped method"):
        replay(_config("pg"), model, answers, epochs=2)
    with pytest.raises(ValueError, match="TokenBatch"):
        replay(_config("tpo_token", reward="bag"), model, answers, epochs=2)
    with pytest.raises(ValueError, match="epochs"):
        replay(_config("tpo"), model, answers, epochs=0)


def test_replay_figure_draws_each_method_and_the_target(model, answers):
    runs = {a: replay(_config(a), model, answers, epochs=2) for a in ("tpo", "grpo")}
    fig = tt.replay_figure(runs)
    assert [t.name for t in fig.data if t.showlegend is not False][:2] == ["tpo", "grpo"]
    target = fig.data[-1]
    assert list(target.y) == pytest.approx([runs["tpo"].target_success_mass] * 2)


def test_muon_figure_shows_a_step_whose_size_ignores_the_gradients():
    g = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    g[:, :5] *= 100  # an ill-conditioned gradient
    series = muon_spectrum(g, scales=(1.0, 1e-4))
    assert series["gradient × 1"][0] / series["gradient × 0.0001"][0] == pytest.approx(
        1e4, rel=1e-4
    )
    big, small = series["Muon step × 1"], series["Muon step × 0.0001"]
    assert big == pytest.approx(small, rel=1e-3)  # the step does not shrink with the gradient
    assert all(0.5 < s < 1.5 for s in big)  # and its singular values all sit near 1
    assert len(tt.muon_figure(g).data) == 4
