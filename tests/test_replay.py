"""One frozen batch, many epochs (tokens.replay), and what each method asks of one prefix state
(tokens.states): exact against the training loop's own update, autograd and closed forms."""

import copy
import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from tpo_core import teaching as tt
from tpo_core.objectives import kl_divergence, tpo_target
from tpo_core.tokens.algorithms import grpo_token, tpo_token
from tpo_core.tokens.model import muon_spectrum
from tpo_core.tokens.replay import group_log_probs, refit, replay
from tpo_core.tokens.rollouts import TokenBatch, sequence_rollouts, token_rollouts
from tpo_core.tokens.states import (
    expected_push,
    final_states,
    state_drift,
    state_push,
    state_summary,
)
from tpo_core.tokens.tasks import correct_answers
from tpo_core.tokens.train import (
    TrainConfig,
    initial_model,
    loss_function,
    optimizers_for,
    train,
    update,
)

BASE = dict(length=4, vocab=2, batch=12, k=6, episodes=1, seed=0, device="cpu")


def _config(method, reward="terminal", **changes):
    return TrainConfig("reverse_copy", reward, method, **(BASE | changes))


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


@pytest.mark.parametrize("method", ["tpo", "grpo", "grpo_per_token"])
def test_all_equal_groups_give_no_gradient_beyond_rounding(model, answers, method):
    """Zero-variance groups are neutral on the snapshot: their gradient is float rounding.

    (The sampled and the recomputed log-probs differ in the last bits, so it is
    not exactly 0; notebook 05 measures what Muon and Adam make of it.)
    """
    config = _config(method)
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


def test_refit_is_the_training_loops_update_and_leaves_the_model_alone(model):
    states = token_rollouts(model, "reverse_copy", "bag", 8, 6, torch.Generator().manual_seed(2))
    config = _config("grpo_token", reward="bag")
    before = [p.detach().clone() for p in model.parameters()]
    refitted = refit(config, model, states, epochs=4)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    twin = initial_model(config)
    update(twin, optimizers_for(config, twin), loss_function(config), states, 4)
    for a, b in zip(refitted.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_refit_with_a_runs_optimisers_continues_that_run_and_leaves_both_alone(answers):
    """``optimizers``: the run's own Muon and Adam carry their momentum into the refit, which is
    then the training loop's next update; the run's model and optimisers are left as they were."""
    config = _config("tpo", episodes=3)
    run = train(config, progress=False)
    weights = [p.detach().clone() for p in run.model.parameters()]
    moments = copy.deepcopy([opt.state_dict() for opt in run.optimizers])
    carried = refit(config, run.model, answers, epochs=2, optimizers=run.optimizers)
    fresh = refit(config, run.model, answers, epochs=2)
    assert all(torch.equal(a, b) for a, b in zip(weights, run.model.parameters(), strict=True))
    assert str([opt.state_dict() for opt in run.optimizers]) == str(moments)
    twin, optimizers = copy.deepcopy((run.model, run.optimizers))
    update(twin, optimizers, loss_function(config), answers, 2)
    assert all(
        torch.equal(a, b) for a, b in zip(carried.parameters(), twin.parameters(), strict=True)
    )
    assert not all(
        torch.equal(a, b) for a, b in zip(carried.parameters(), fresh.parameters(), strict=True)
    )


# ------------------------------------------------- one prefix state at a time (tokens.states)


class Logits(torch.nn.Module):
    """A stand-in policy whose next-token logits at every prefix state are free parameters."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)  # (B, H, V)
        self.cfg = SimpleNamespace(vocab=logits.shape[-1])

    def answer_log_probs(self, prompts, answers):
        return torch.log_softmax(self.logits, -1)


def _states(b=6, h=5, v=3, k=6, seed=0):
    """A token batch drawn from free logits, with unanimous and all-correct states forced in."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, h, v, generator=g, dtype=torch.float64)
    prompts = torch.randint(0, v, (b, h), generator=g)
    targets = correct_answers("reverse_copy", prompts, v)
    probs = torch.softmax(logits, -1).view(-1, v)
    candidates = torch.multinomial(probs, k, replacement=True, generator=g).view(b, h, k)
    candidates[0, 0] = (targets[0, 0] + 1) % v  # all wrong
    candidates[0, 1] = targets[0, 1]  # all right
    candidates[1, 2, :3] = targets[1, 2]  # half right
    candidates[1, 2, 3:] = (targets[1, 2] + 1) % v
    old = torch.log_softmax(logits, -1).gather(-1, candidates)  # (B, H, K)
    rewards = (candidates == targets[..., None]).double()
    batch = TokenBatch(prompts, candidates[..., 0], candidates, old, rewards, rewards[..., 0])
    return logits, batch


@pytest.mark.parametrize("loss", [tpo_token, grpo_token])
def test_state_push_is_minus_each_states_gradient_on_its_correct_logit(loss):
    logits, batch = _states()
    policy = Logits(logits.clone())
    loss(policy, batch).backward()
    b, h, v = logits.shape
    targets = correct_answers("reverse_copy", batch.prompts, v)
    expected = -b * h * policy.logits.grad.gather(-1, targets[..., None])[..., 0]  # (B, H)
    push = state_push(loss.__name__, batch, "reverse_copy", v)
    torch.testing.assert_close(push, expected, rtol=1e-6, atol=1e-9)
    assert push[0, 0] == 0 and push[0, 1] == 0  # all-wrong and all-right states: no push
    assert push[1, 2] > 0


def _tpo_push_by_hand(pi: float, m: int, k: int) -> float:
    """Q(y) - P(y) at a two-token state with m of k candidates correct (eta = 1)."""
    mu = m / k
    share = m * pi / (m * pi + (k - m) * (1 - pi))  # P(y): the group policy's correct share
    up, down = math.sqrt((1 - mu) / mu), -math.sqrt(mu / (1 - mu))  # z-scores
    target = share * math.exp(up) / (share * math.exp(up) + (1 - share) * math.exp(down))
    return target - share


def test_expected_push_equals_the_binomial_sum_of_closed_forms():
    k = 8
    for pi in (0.1, 0.5, 0.9):
        weights = {m: math.comb(k, m) * pi**m * (1 - pi) ** (k - m) for m in range(1, k)}
        tpo = sum(w * _tpo_push_by_hand(pi, m, k) for m, w in weights.items())
        grpo = sum(w * math.sqrt(m / k * (1 - m / k)) for m, w in weights.items())  # (1/K) m A_y
        assert float(expected_push("tpo_token", [pi], k)) == pytest.approx(tpo, rel=1e-9)
        assert float(expected_push("grpo_token", [pi], k)) == pytest.approx(grpo, rel=1e-6)
    pis = torch.tensor([0.1, 0.3])
    torch.testing.assert_close(
        expected_push("grpo_token", pis), expected_push("grpo_token", 1 - pis)
    )
    tpo = expected_push("tpo_token", torch.tensor([0.1, 0.9]))
    assert tpo[1] < tpo[0] / 5  # TPO's push fades on a state that is mostly right


def test_expected_push_is_the_mean_over_sampled_groups():
    g = torch.Generator().manual_seed(0)
    n, k = 20000, 8
    for pi in (0.25, 0.8):
        correct = torch.rand(n, 1, k, generator=g, dtype=torch.float64) < pi  # (N, H = 1, K)
        prompts = torch.ones(n, 1, dtype=torch.long)  # target token 1 at every state
        candidates = correct.long()
        old = torch.where(correct, math.log(pi), math.log(1 - pi))
        rewards = correct.double()
        batch = TokenBatch(prompts, candidates[..., 0], candidates, old, rewards, rewards[..., 0])
        for method in ("tpo_token", "grpo_token"):
            sampled = state_push(method, batch, "copy", 2)
            se = float(sampled.std()) / math.sqrt(n)
            assert abs(float(sampled.mean()) - float(expected_push(method, [pi], k))) < 4 * se


def test_push_refuses_other_methods_and_bad_probabilities():
    _, batch = _states()
    with pytest.raises(ValueError, match="grpo_token and tpo_token"):
        state_push("ppo", batch, "reverse_copy", 3)
    with pytest.raises(ValueError, match="strictly between"):
        expected_push("tpo_token", [0.0, 0.5])


def test_state_summary_by_hand():
    probs = torch.tensor([[[0.95, 0.03, 0.02], [0.05, 0.92, 0.03], [0.4, 0.3, 0.3]]])  # (1, 3, 3)
    prompts = torch.zeros(1, 3, dtype=torch.long)  # copy: the correct token is 0 everywhere
    batch = TokenBatch(prompts, prompts, prompts[..., None], probs[..., :1].log(), probs, probs)
    summary = state_summary(Logits(probs.log()), batch, "copy")
    assert summary.correct == pytest.approx((0.95 + 0.05 + 0.4) / 3)
    entropy = -(probs * probs.log()).sum(-1).mean()
    assert summary.entropy == pytest.approx(float(entropy))
    assert summary.confident_right == pytest.approx(1 / 3)
    assert summary.confident_wrong == pytest.approx(1 / 3)


def test_unanimous_states_push_nothing_yet_move_with_the_shared_weights(model):
    """A state whose K candidates are one token gives no push of its own, for TPO at every
    epoch; the other states' updates still move its policy through the shared weights."""
    states = token_rollouts(model, "reverse_copy", "bag", 8, 6, torch.Generator().manual_seed(4))
    candidates = states.candidates.clone()
    candidates[:4] = states.answers[:4, :, None]  # the first 4 prompts' states: unanimous
    with torch.no_grad():
        snapshot = model.answer_log_probs(states.prompts, states.answers)  # (B, H, V)
    targets = correct_answers("reverse_copy", states.prompts, 2)
    rewards = (candidates == targets[..., None]).float()
    batch = TokenBatch(
        states.prompts,
        states.answers,
        candidates,
        snapshot.gather(-1, candidates),
        rewards,
        rewards[..., 0],
    )
    assert batch.unanimous[:4].all() and not batch.unanimous[4:].all()
    for method in ("tpo_token", "grpo_token"):
        assert (state_push(method, batch, "reverse_copy", 2)[batch.unanimous] == 0).all()
    moved = refit(_config("tpo_token", reward="bag"), model, batch, epochs=4)
    drift = state_drift(model, moved, batch)  # (B, H)
    assert (state_drift(model, model, batch).abs() < 1e-7).all()
    assert (drift[batch.unanimous] > 1e-8).all()


def test_final_states_of_a_run_and_its_refusals():
    config = TrainConfig(
        "reverse_copy", "bag", "tpo_token", length=3, vocab=2, batch=6, k=4, episodes=1
    )
    result = train(config, progress=False)
    summary = final_states(result, seed=5)
    again = token_rollouts(
        result.model, "reverse_copy", "bag", 6, 2, torch.Generator().manual_seed(5)
    )
    assert summary == state_summary(result.model, again, "reverse_copy")
    assert 0 <= summary.confident_right + summary.confident_wrong <= 1
    with pytest.raises(ValueError, match="no model"):
        final_states(dataclasses.replace(result, model=None))


def test_push_figure_draws_one_line_per_method():
    pis = torch.linspace(0.05, 0.95, 7)
    pushes = {m: expected_push(m, pis).tolist() for m in ("tpo_token", "grpo_token")}
    fig = tt.push_figure(pis.tolist(), pushes, "push")
    assert [t.name for t in fig.data] == ["TPO (token)", "GRPO (token)"]
    assert list(fig.data[1].y) == pytest.approx(pushes["grpo_token"])


def test_a_candidate_whose_probability_underflows_keeps_the_kl_finite():
    """Per-token GRPO can push a sequence's log-probability a thousand nats below its group's
    others: exp() underflows to 0 in float32 and KL(q || p) read from probabilities is inf.
    From the log-probabilities it is the closed form, computed here in float64."""
    from tpo_core.objectives import Replay

    old = torch.tensor([[-2.0, -3.0, -2.5, -4.0]])
    scores = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    later = torch.tensor([[-2.0, -3.0, -2.5, -1004.0]])  # the last success nearly gone
    result = Replay.from_epochs("grpo_per_token", old, scores, [old, later])
    q = tpo_target(old.double(), scores.double()).double()
    log_p = torch.log_softmax(later.double(), -1)
    expected = float((q * (q.log() - log_p)).sum())
    assert math.isfinite(result.kl_to_target[-1])
    assert math.isclose(result.kl_to_target[-1], expected, rel_tol=1e-5)
    assert float(kl_divergence(q.float(), torch.softmax(later, -1))) == math.inf  # the old way
