"""Implement-it exercises: the worked solution passes, and each usual mistake is named."""

import math

import pytest
import torch

from tpo_core.teaching import exercises

IMPLEMENT = {
    "01-my-tpo-target": "my_tpo_target",
    "01-my-tpo-loss": "my_tpo_loss",
    "05-my-grpo-advantages": "my_grpo_advantages",
    "02-my-beta-tpo": "my_beta_tpo",
    "06-my-rlvr-loss": "my_rlvr_loss",
}


def solved(name):
    namespace = {"torch": torch, "math": math}
    exec(exercises.solution(name), namespace)
    return namespace[IMPLEMENT[name]]


@pytest.mark.parametrize("name", sorted(IMPLEMENT))
def test_worked_solution_passes_and_a_stub_is_told_what_is_missing(name):
    assert exercises.check(name, solved(name)).correct, exercises.check(name, solved(name))
    stub = exercises.check(name, lambda *args: None)
    assert not stub.correct and "returned None" in stub.message
    assert "function itself" in exercises.check(name, 0.5).message


def _zscore(s, unbiased=False):
    std = s.std(-1, unbiased=unbiased, keepdim=True)
    centred = s - s.mean(-1, keepdim=True)
    return torch.where(std > 1e-6, centred / std.clamp_min(1e-6), torch.zeros_like(s))


@pytest.mark.parametrize(
    ("mistake", "named"),
    [
        (lambda old, s, eta: torch.softmax(_zscore(s) / eta, -1), "anchor"),
        (lambda old, s, eta: torch.softmax(torch.log_softmax(old, -1) + s / eta, -1), "raw scores"),
        (lambda old, s, eta: torch.softmax(old + _zscore(s, True) / eta, -1), "Bessel"),
        (lambda old, s, eta: torch.softmax(old + _zscore(s) * eta, -1), "u / eta"),
        (lambda old, s, eta: old.exp() * torch.exp(_zscore(s) / eta), "normalised"),
    ],
)
def test_tpo_target_mistakes_are_named(mistake, named):
    feedback = exercises.check("01-my-tpo-target", mistake)
    assert not feedback.correct and named in feedback.message


def test_loss_mistakes_are_named():
    def summed(logits, q):
        return -(q * torch.log_softmax(logits, -1)).sum()

    def detached(logits, q):
        return -(q * torch.log_softmax(logits.detach(), -1)).sum(-1).mean()

    assert "average them" in exercises.check("01-my-tpo-loss", summed).message
    assert "no gradient" in exercises.check("01-my-tpo-loss", detached).message

    def token_mean(new, old, rewards, mask, eta):
        g, k = rewards.shape
        mean = lambda x: (x.masked_fill(~mask, 0).sum(-1) / mask.sum(-1)).view(g, k)  # noqa: E731
        q = exercises.tpo_target(mean(old), rewards, eta)
        return -(q * torch.log_softmax(mean(new), -1)).sum(-1).mean()

    def target_from_new(new, old, rewards, mask, eta):
        return solved("06-my-rlvr-loss")(new, new.detach(), rewards, mask, eta)

    assert "sum" in exercises.check("06-my-rlvr-loss", token_mean).message
    assert "snapshot" in exercises.check("06-my-rlvr-loss", target_from_new).message


def test_advantage_and_beta_mistakes_are_named():
    def bessel(r):
        return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-8)

    def no_epsilon(r):
        return (r - r.mean(-1, keepdim=True)) / r.std(-1, unbiased=False, keepdim=True)

    assert "population" in exercises.check("05-my-grpo-advantages", bessel).message
    assert "NaN" in exercises.check("05-my-grpo-advantages", no_epsilon).message
    grpo = exercises.check("02-my-beta-tpo", lambda p, k: torch.sqrt(p / (1 - p)))
    assert not grpo.correct and "GRPO" in grpo.message
