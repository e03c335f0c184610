"""Many seeds trained together (tokens.replicas): each replica is the run its seed makes alone."""

from dataclasses import replace

import pytest
import torch

from tpo_core.tokens import grid
from tpo_core.tokens.algorithms import get_algorithm
from tpo_core.tokens.replicas import Replicas, train_replicas
from tpo_core.tokens.table3 import is_stuck
from tpo_core.tokens.train import TrainConfig, train

TINY = dict(task="copy", reward="terminal", length=3, vocab=2, batch=12, k=4, device="cpu")


def test_identical_seeds_as_replicas_give_identical_curves():
    results = train_replicas(TrainConfig(episodes=4, **TINY), [3, 3, 3], progress=False)
    assert [r.config.seed for r in results] == [3, 3, 3]
    assert results[0].error == results[1].error == results[2].error
    assert results[0].grad_norm == results[1].grad_norm == results[2].grad_norm


def test_a_replica_is_the_run_its_seed_makes_alone():
    """Same initial model, same generator stream: the first episodes sample the same batches
    (the probabilities agree to float rounding), and the gradients agree to rounding."""
    config = TrainConfig(episodes=3, method="grpo", **TINY)
    together = train_replicas(config, [0, 1], progress=False)
    for seed, replica in zip((0, 1), together, strict=True):
        alone = train(replace(config, seed=seed), progress=False)
        assert replica.error == alone.error and replica.all_fail == alone.all_fail
        assert replica.grad_norm == pytest.approx(alone.grad_norm, rel=1e-4)
        # the same policy (parameters such as the key biases, whose gradient is zero up to
        # rounding, take Adam steps of rounding noise that no output depends on)
        tokens = torch.randint(2, (16, 5), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ours, theirs = replica.model(tokens), alone.model(tokens)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_replicas_match_separate_runs_in_distribution():
    """Over several seeds and a run long enough for trajectories to part, the replicas' mean
    final error and stuck share are the separate runs'."""
    config = TrainConfig(episodes=25, method="tpo", **TINY)
    seeds = [0, 1, 2, 3]
    together = train_replicas(config, seeds, progress=False)
    alone = [train(replace(config, seed=s), progress=False) for s in seeds]
    mean = [sum(r.final_error(5) for r in rs) / len(rs) for rs in (together, alone)]
    assert mean[0] == pytest.approx(mean[1], abs=0.05)
    stuck = [sum(is_stuck(r, last=5) for r in rs) for rs in (together, alone)]
    assert stuck[0] == stuck[1]


def test_one_replica_gradient_ignores_the_others():
    loss_fn = get_algorithm("grpo").loss
    grads = []
    for other in (1, 7):  # replica 0 next to two different neighbours
        replicas = Replicas(TrainConfig(method="grpo", **TINY), [0, other])
        batches = replicas.rollouts("copy", "terminal", 12, 4)
        replicas.loss(batches, loss_fn).backward()
        grads.append([p.grad[0].clone() for p in replicas.params.values()])
        with torch.no_grad():  # a wild neighbour: scale replica 1's parameters
            for p in replicas.params.values():
                p[1] *= 3.0
                p.grad = None
        replicas.loss(batches, loss_fn).backward()
        grads.append([p.grad[0].clone() for p in replicas.params.values()])
    scale = max(float(g.abs().max()) for g in grads[0])
    for g in grads[1:]:  # equal up to float32 rounding, summed in another order
        for a, b in zip(g, grads[0], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 * scale)


def test_replica_optimisers_do_not_couple_replicas():
    """Muon orthogonalises matrix by matrix: a neighbour with 100x larger gradients leaves a
    replica's step as it was."""
    steps = []
    for scale in (1.0, 100.0):
        replicas = Replicas(TrainConfig(**TINY), [0, 1])
        before = {n: p.detach().clone() for n, p in replicas.params.items()}
        torch.manual_seed(0)
        for p in replicas.params.values():
            p.grad = torch.randn_like(p)
            p.grad[1] *= scale
        for opt in replicas.optimizers:
            opt.step()
        steps.append([(p.detach() - before[n])[0] for n, p in replicas.params.items()])
    for a, b in zip(*steps, strict=True):
        torch.testing.assert_close(a, b)


def test_token_level_methods_and_skipped_updates_are_refused_as_replicas():
    with pytest.raises(ValueError, match="one seed at a time"):
        train_replicas(TrainConfig(method="tpo_token", reward="bag", length=3), [0, 1])
    with pytest.raises(ValueError, match="one seed at a time"):
        train_replicas(TrainConfig(skip_signal_free=True, length=3), [0, 1])


def test_grid_with_replicas_writes_one_file_per_seed_with_provenance(tmp_path):
    configs = grid.grid_configs(
        ["tpo", "tpo_token"], [3], [0, 1, 2], task="copy", reward="bag", batch=6, k=3, episodes=2
    )
    small = dict(task="copy", batch=6, k=3, episodes=2, skip_signal_free=True)
    skipping = grid.grid_configs(["tpo"], [3], [0, 1], **small)
    paths = grid.run_grid(configs + skipping, tmp_path, ["grid"], progress=False, replicas=2)
    assert all(grid.is_complete(p, c) for p, c in zip(paths, configs + skipping, strict=True))
    runs = grid.load_runs(tmp_path)
    tpo = {r.config.seed: r for r in runs if r.config.method == "tpo" and r.config.reward == "bag"}
    assert [tpo[s].provenance.get("replicas") for s in (0, 1, 2)] == [2, 2, None]
    alone = [r for r in runs if r.config.method == "tpo_token" or r.config.skip_signal_free]
    assert len(alone) == 5 and all("replicas" not in r.provenance for r in alone)
