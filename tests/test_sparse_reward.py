"""Sparse terminal reward: all-fail groups, GRPO on whole answers, masked GRPO, TPO's
temperature, and notebook 05's pieces."""

import math
import subprocess
import sys

import pytest
import torch

import tpo_core as tc
from tpo_core import teaching as tt
from tpo_core.tokens.algorithms import ALGORITHMS, informative_groups
from tpo_core.tokens.rollouts import SequenceBatch
from tpo_core.tokens.table3 import table3_line, table3_markdown
from tpo_core.tokens.train import TrainConfig, train

grpo, grpo_masked, grpo_per_token, tpo = (
    ALGORITHMS[name].loss for name in ("grpo", "grpo_masked", "grpo_per_token", "tpo")
)


class FixedBatch(SequenceBatch):
    """A hand-built batch whose 'current policy' is a given leaf tensor, not a model."""

    def new_log_probs(self, model):
        return model


def hand_batch(success, seq_probs, h=2, new_shift=0.0):
    """Groups of K answers of length h; ``success`` (B, K) 0/1, ``seq_probs`` (B, K) p_old(y)."""
    success = torch.tensor(success, dtype=torch.float32)
    b, k = success.shape
    seq = torch.tensor(seq_probs, dtype=torch.float64).log()
    old = (seq / h)[..., None].expand(b, k, h).float()  # tokens share the sequence log-prob
    rewards = success[..., None].expand(b, k, h).clone()
    answers = ((torch.arange(k)[:, None] >> torch.arange(h)) % 2).expand(b, k, h)  # distinct
    batch = FixedBatch(torch.zeros(b, h, dtype=torch.long), answers, old, rewards)
    leaf = (old + new_shift * torch.linspace(-1, 1, b * k * h).view(b, k, h)).requires_grad_()
    return batch, leaf


# ---------------------------------------------------------------- all-fail groups


def test_all_fail_group_contributes_exactly_zero_tpo_gradient_on_the_first_epoch():
    p = [0.4, 0.3, 0.2, 0.1]
    batch, leaf = hand_batch([[0, 1, 0, 0], [0, 0, 0, 0]], [p, p])  # leaf == old: first epoch
    (grad,) = torch.autograd.grad(tpo(leaf, batch), leaf)
    # u = 0 -> q = p_old = p: zero in exact arithmetic, float32 rounding (~1e-8) here.
    assert grad[1].abs().max() < 1e-7
    assert grad[0].abs().max() > 1e-3


# ---------------------------------------------------------------- GRPO on whole answers


def test_grpo_first_epoch_gradient_is_minus_the_advantage_on_every_token():
    # On the snapshot rho = 1 and the KL has zero gradient: d loss / d l_t = -A_i / (B K)
    # for every token of answer i (per token: -A_i / (B K H), the same direction).
    success = [[1, 0, 0, 1], [0, 1, 0, 0]]
    batch, leaf = hand_batch(success, [[0.4, 0.3, 0.2, 0.1]] * 2, h=3)
    a = tc.grpo_advantages(torch.tensor(success, dtype=torch.float32))[..., None].expand(2, 4, 3)
    (whole,) = torch.autograd.grad(grpo(leaf, batch), leaf)
    torch.testing.assert_close(whole, -a / 8)
    (per_token,) = torch.autograd.grad(grpo_per_token(leaf, batch), leaf)
    torch.testing.assert_close(per_token, -a / 24)


def test_grpo_clips_the_answer_ratio_where_per_token_grpo_clips_each_token():
    # Every token 10% more likely than in the snapshot: each token's ratio 1.1 lies
    # inside [0.8, 1.2], the answer's 1.1^3 = 1.33 does not.
    batch, _ = hand_batch([[1, 0]], [[0.5, 0.5]], h=3)
    leaf = (batch.old_log_probs + math.log(1.1)).requires_grad_()
    (whole,) = torch.autograd.grad(grpo(leaf, batch), leaf)
    (per_token,) = torch.autograd.grad(grpo_per_token(leaf, batch), leaf)
    kl_only = 0.04 * (1 - 1.1**-3) / 2  # d k3 / d l at the answer's ratio, mean over 2 answers
    torch.testing.assert_close(whole[0, 0], torch.full((3,), kl_only))  # surrogate clipped
    assert (per_token[0, 0] < 0).all()  # still pushed up


# ---------------------------------------------------------------- masked GRPO


def test_informative_groups():
    scores = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert informative_groups(scores).tolist() == [True, False, False]


def test_masked_grpo_zeros_exactly_the_zero_variance_groups():
    p = [0.4, 0.3, 0.2, 0.1]
    success = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
    batch, leaf = hand_batch(success, [p, p, p], new_shift=0.05)  # a later epoch: KL is nonzero
    (masked,) = torch.autograd.grad(grpo_masked(leaf, batch), leaf)
    assert torch.equal(masked[1:], torch.zeros_like(masked[1:]))
    # The informative group gets GRPO's gradient as if it were the whole batch.
    alone = tc.grpo_loss(
        leaf[:1].sum(-1), batch.old_log_probs[:1].sum(-1), tc.grpo_advantages(batch.scores[:1])
    )
    (expected,) = torch.autograd.grad(alone, leaf)
    torch.testing.assert_close(masked, expected)
    # Plain GRPO still pulls on the flat groups through its KL term.
    (plain,) = torch.autograd.grad(grpo(leaf, batch), leaf)
    assert plain[1:].abs().max() > 0


def test_masked_grpo_with_no_informative_group_is_a_zero_loss_with_a_graph():
    batch, leaf = hand_batch([[0, 0], [1, 1]], [[0.5, 0.5]] * 2)
    loss = grpo_masked(leaf, batch)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(leaf.grad, torch.zeros_like(leaf))


# ---------------------------------------------------------------- TPO's temperature


def test_eta_is_validated_and_reaches_the_tpo_target():
    with pytest.raises(ValueError, match="eta must be finite and at least"):
        TrainConfig(eta=0.0).validate()
    with pytest.raises(ValueError, match="no temperature"):
        TrainConfig(method="grpo", eta=0.5).validate()
    cold = TrainConfig(length=3, batch=16, k=4, episodes=2, eta=0.25)
    warm = TrainConfig(length=3, batch=16, k=4, episodes=2, eta=4.0)
    # Same seed, same first batch: only the temperature differs, so the first gradient does.
    assert train(cold, progress=False).grad_norm[0] != train(warm, progress=False).grad_norm[0]


# ---------------------------------------------------------------- notebook 05 pieces


def test_chance_of_a_success_matches_simulation():
    from tpo_core.tokens.tasks import chance_of_a_success

    g = torch.Generator().manual_seed(0)
    h, v, k, n = 4, 2, 8, 20000
    answers = torch.randint(0, v, (n, k, h), generator=g)
    targets = torch.randint(0, v, (n, 1, h), generator=g)
    simulated = (answers == targets).all(-1).any(-1).float().mean().item()
    assert simulated == pytest.approx(chance_of_a_success(h, v, k), abs=0.01)


def test_notebook_05_exercises():
    check = tt.check
    assert check("05-one-success-mass", 0.746).correct
    assert not check("05-one-success-mass", 1 / 8).correct
    assert check("05-masked-step", 10).correct and not check("05-masked-step", 0.1).correct


def test_sparse_figures_plot_the_rows_they_are_given():
    sweep = tt.sweep_figure({"tpo": ([4, 8], [0.2, 0.1], [0.01, 0.02])}, "K", log_x=True)
    assert list(sweep.data[0].y) == [0.2, 0.1]
    common = dict(seeds=3, episodes=[1000], last20=6.0, last20_se=1.0, stuck=1 / 3)
    rows = [
        dict(method="tpo", H=7, ours=5.0, ci=(2.0, 9.0), paper=6.9, **common),
        dict(method="dg", H=9, ours=99.0, ci=(98.5, 99.5), paper="> 95", **common),
        dict(method="tpo_no_anchor", H=10, ours=99.0, ci=(98.5, 99.5), paper="> 99", **common),
        dict(method="tpo", H=6, ours=1.0, ci=(0.5, 1.5), paper="n/a", **common),
    ]
    table = tt.table3_figure(rows)
    assert list(table.data[0].y) == [5.0, 99.0, 99.0, 1.0]
    assert list(table.data[1].y) == [6.9, 95.0, 99.0, None]  # bounds at their value
    assert list(table.data[0].error_y.array) == [4.0, 0.5, 0.5, 0.5]  # to the interval's top
    assert list(table.data[0].error_y.arrayminus) == [3.0, 0.5, 0.5, 0.5]
    line = "| tpo | 7 | 3 | 1000 | 5.0 [2.0, 9.0] | 6.0 ± 1.0 | 1 of 3 | 6.9 |"
    assert line in table3_markdown(rows)
    assert "paper 6.9" in table3_line(rows[0], "prompts")


def test_seeds_figure_shows_every_seed_its_mean_interval_and_the_paper():
    from tpo_core.stats import bootstrap_interval

    finals = {("tpo", 10): [0.0, 1.0, 80.0], ("grpo", 10): [5.0, 99.0, 100.0, 97.0]}
    fig = tt.seeds_figure(finals, {("tpo", 10): 7.4, ("grpo", 10): "> 95"})
    dots, mean = fig.data[0], fig.data[1]
    assert list(dots.y) == finals[("tpo", 10)] and len(fig.data[2].y) == 4
    assert list(mean.y) == [pytest.approx(27.0)]
    lo, hi = bootstrap_interval(finals[("tpo", 10)])
    assert list(mean.error_y.array) == [pytest.approx(hi - 27.0)]
    assert list(mean.error_y.arrayminus) == [pytest.approx(27.0 - lo)]
    assert list(fig.data[-1].y) == [7.4, 95.0]  # the paper's "> 95" drawn at 95
    assert all(x < 0.5 for x in dots.x) and all(x > 0.5 for x in fig.data[2].x)  # own columns


@pytest.mark.parametrize("per_token", [False, True])
def test_grpo_kl_pull_benchmark_trains_exactly_like_grpo(per_token):
    args = ["--length", "3", "--episodes", "3", "--every", "1"] + (
        ["--per-token"] if per_token else []
    )
    command = [sys.executable, "benchmarks/grpo_kl_pull.py", *args]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    printed = [float(line.split("error")[1].split()[0]) for line in out.splitlines()[1:]]
    method = "grpo_per_token" if per_token else "grpo"
    expected = train(TrainConfig(method=method, length=3, episodes=3), progress=False).error
    assert printed == pytest.approx(expected, abs=5e-4)
    assert "|" in out.splitlines()[1]  # per-epoch gradient figures follow
