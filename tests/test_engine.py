"""The token-task engine's shortcuts are exact: the same loss and gradient as doing all the work."""

import math

import pytest
import torch

from tpo_core.tokens.algorithms import ALGORITHMS
from tpo_core.tokens.model import ModelConfig, TinyTransformer
from tpo_core.tokens.rollouts import SequenceBatch, sequence_rollouts
from tpo_core.tokens.tasks import correct_answers, token_rewards


def model_and_repetitive_batch(vocab=2, length=5, b=6, k=4, seed=0):
    """A batch like those of late training: prompts repeat across the batch, answers within
    a group repeat, and some groups hold one answer K times."""
    torch.manual_seed(seed)
    model = TinyTransformer(ModelConfig(vocab=vocab, length=length))
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(vocab, (b // 2, length), generator=g).repeat(2, 1)  # (B, H)
    answers = torch.randint(vocab, (b, 2, length), generator=g).repeat(1, k // 2, 1)  # (B, K, H)
    answers[0] = answers[0, :1]  # one group of K identical answers
    flat = answers.reshape(b * k, length)
    with torch.no_grad():
        old = model.answer_log_probs(prompts, flat).gather(-1, flat[..., None])[..., 0]
    targets = correct_answers("reverse_copy", prompts, vocab).repeat_interleave(k, 0)
    rewards = token_rewards("terminal", flat, targets).view(b, k, length)
    return model, SequenceBatch(prompts, answers, old.view(b, k, length), rewards)


def assert_same_gradients(grads_a, grads_b):
    """Equal up to float32 rounding, which differs when the same sum is taken in another order:
    an error of 1e-5 of the largest gradient entry, where a lost or doubled copy would cost
    O(1) of it. (Some entries, such as the key biases', are zero up to rounding.)"""
    scale = max(float(b.abs().max()) for b in grads_b)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 * scale)


def test_distinct_pairs_are_found_and_cover_the_batch():
    model, batch = model_and_repetitive_batch()
    rows, inverse = batch.distinct
    b, k, h = batch.answers.shape
    pairs = torch.cat([batch.prompts.repeat_interleave(k, 0), batch.answers.view(b * k, h)], 1)
    assert len(rows) == len(torch.unique(pairs, dim=0)) < b * k
    torch.testing.assert_close(pairs[rows][inverse], pairs, rtol=0, atol=0)  # every answer's pair
    assert (rows[inverse] <= torch.arange(b * k)).all()  # rows are first occurrences


def test_distinct_log_probs_equal_one_pass_per_answer():
    model, batch = model_and_repetitive_batch()
    weights = torch.randn(batch.answers.shape, dtype=torch.float32)
    grads = []
    for distinct in (True, False):
        model.zero_grad()
        log_p = batch.new_log_probs(model, distinct=distinct)
        (weights * log_p).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        if distinct:
            with_shortcut = log_p.detach()
    torch.testing.assert_close(with_shortcut, log_p.detach(), rtol=1e-5, atol=1e-6)
    assert_same_gradients(*grads)


@pytest.mark.parametrize("name", [n for n, a in ALGORITHMS.items() if a.rollout != "token"])
def test_every_sequence_method_has_the_same_loss_and_gradient_with_distinct_pairs(
    name, monkeypatch
):
    model, batch = model_and_repetitive_batch()
    if ALGORITHMS[name].rollout == "single":  # K = 1: distinct pairs come from repeated prompts
        batch = SequenceBatch(batch.prompts, batch.answers[:, :1], batch.old_log_probs[:, :1],
                              batch.rewards[:, :1])  # fmt: skip
    results = []
    full = SequenceBatch.new_log_probs
    for distinct in (True, False):
        monkeypatch.setattr(SequenceBatch, "new_log_probs",
                            lambda self, m, d=distinct: full(self, m, distinct=d))  # fmt: skip
        model.zero_grad()
        loss = ALGORITHMS[name].loss(model, batch)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss_a, grad_a), (loss_b, grad_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-7)
    assert_same_gradients(grad_a, grad_b)


def test_rollout_batches_use_distinct_pairs_by_default():
    torch.manual_seed(0)
    model = TinyTransformer(ModelConfig(vocab=2, length=3))
    batch = sequence_rollouts(model, "copy", "terminal", 20, 8, torch.Generator().manual_seed(0))
    rows, _ = batch.distinct
    assert len(rows) < 20 * 8  # 8 prompts x 8 answers exist at H = 3, V = 2


# ---------------------------------------------------------------- devices


def test_device_is_a_setting_and_defaults_to_cuda_only_when_there_is_one():
    from tpo_core.tokens.train import TrainConfig

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert TrainConfig().resolved()["device"] == expected
    assert TrainConfig(device="cpu").resolved()["device"] == "cpu"
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        TrainConfig(device="tpu").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            TrainConfig(device="cuda").validate()


def test_explicit_cpu_device_is_the_same_run_and_keeps_everything_there():
    from tpo_core.tokens.train import TrainConfig, train

    settings = dict(task="copy", reward="terminal", length=3, batch=6, k=4, episodes=3)
    a = train(TrainConfig(device="cpu", **settings), progress=False)
    b = (
        train(TrainConfig(device=None, **settings), progress=False)
        if not torch.cuda.is_available()
        else a
    )
    assert a.error == b.error and a.grad_norm == b.grad_norm
    assert {p.device.type for p in a.model.parameters()} == {"cpu"}
    assert a.to_dict()["resolved"]["device"] == "cpu"


def test_a_grid_run_finished_on_one_device_is_complete_on_another(tmp_path):
    from dataclasses import replace

    from tpo_core.tokens import experiments
    from tpo_core.tokens.train import TrainConfig, TrainResult

    config = TrainConfig(episodes=2, device="cpu")
    path = tmp_path / "run.json"
    experiments.write_json_atomic(path, TrainResult(config, error=[0.5, 0.4]).to_dict())
    assert experiments.is_complete(path, replace(config, device=None))
    assert experiments.is_complete(path, replace(config, device="cuda"))
    assert not experiments.is_complete(path, replace(config, seed=1))


# ---------------------------------------------------------------- Muon


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (64, 2)])
def test_muon_in_bfloat16_is_torch_muon_exactly(shape):
    from tpo_core.tokens.model import Muon

    torch.manual_seed(0)
    ours, theirs = (torch.nn.Parameter(w) for w in torch.randn(shape).repeat(2, 1, 1))
    a = Muon([ours], lr=1e-2, ns_dtype=torch.bfloat16)
    b = torch.optim.Muon([theirs], lr=1e-2, weight_decay=0.0, momentum=0.95, nesterov=True)
    for _ in range(4):
        ours.grad = torch.randn(shape)
        theirs.grad = ours.grad.clone()
        a.step()
        b.step()
    assert torch.equal(ours, theirs)


def test_muon_orthogonalises_and_scales_like_the_reference():
    from tpo_core.tokens.model import Muon

    g = torch.randn(64, 8, dtype=torch.float64)
    x = Muon.orthogonalise(g, 5, (3.4445, -4.7750, 2.0315), 1e-7, torch.float64)
    singular = torch.linalg.svdvals(x)
    assert singular.min() > 0.5 and singular.max() < 1.5  # roughly U V^T (quintic NS)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(x.flatten(), (u @ vh).flatten(), 0) > 0.9
    w = torch.nn.Parameter(torch.zeros(64, 8))
    w.grad = g.float()
    Muon([w], lr=1.0, momentum=0.0, nesterov=False).step()
    expected = -math.sqrt(64 / 8) * Muon.orthogonalise(g.float(), 5, (3.4445, -4.7750, 2.0315),
                                                        1e-7, torch.float32)  # fmt: skip
    torch.testing.assert_close(w.detach(), expected)


def test_muon_treats_a_stack_of_matrices_as_independent_matrices():
    from tpo_core.tokens.model import Muon

    torch.manual_seed(0)
    g = torch.randn(3, 16, 40)
    g[1] *= 100.0  # a replica with far larger gradients must not shrink the others' steps
    stacked = Muon.orthogonalise(g, 5, (3.4445, -4.7750, 2.0315), 1e-7, torch.float32)
    for r in range(3):
        alone = Muon.orthogonalise(g[r], 5, (3.4445, -4.7750, 2.0315), 1e-7, torch.float32)
        torch.testing.assert_close(stacked[r], alone, rtol=1e-4, atol=1e-5)


def test_runs_stored_before_a_setting_existed_load_with_the_value_they_ran_with():
    from tpo_core.tokens import experiments
    from tpo_core.tokens.train import TrainConfig

    assert TrainConfig().newton_schulz == "float32"
    assert TrainConfig.from_dict({"algo": "grpo"}).newton_schulz == "bfloat16"
    for name in ("sparse_h6", "sparse_h7"):
        folder = experiments.Path(experiments.__file__).parent / "results" / name
        for run, path in zip(experiments.load_runs(folder), sorted(folder.glob("*.json")),
                             strict=True):  # fmt: skip
            assert experiments.run_name(run.config) == path.name
