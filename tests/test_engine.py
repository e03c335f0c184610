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


# ---------------------------------------------------------------- replicas

TINY = dict(task="copy", reward="terminal", length=3, vocab=2, batch=12, k=4, device="cpu")


def test_identical_seeds_as_replicas_give_identical_curves():
    from tpo_core.tokens.replicas import train_replicas
    from tpo_core.tokens.train import TrainConfig

    results = train_replicas(TrainConfig(episodes=4, **TINY), [3, 3, 3], progress=False)
    assert [r.config.seed for r in results] == [3, 3, 3]
    assert results[0].error == results[1].error == results[2].error
    assert results[0].grad_norm == results[1].grad_norm == results[2].grad_norm


def test_a_replica_is_the_run_its_seed_makes_alone():
    """Same initial model, same generator stream: the first episodes sample the same batches
    (the probabilities agree to float rounding), and the gradients agree to rounding."""
    from tpo_core.tokens.replicas import train_replicas
    from tpo_core.tokens.train import TrainConfig, train

    config = TrainConfig(episodes=3, algo="grpo", **TINY)
    together = train_replicas(config, [0, 1], progress=False)
    for seed, replica in zip((0, 1), together, strict=True):
        alone = train(TrainConfig(**{**config.__dict__, "seed": seed}), progress=False)
        assert replica.error == alone.error and replica.all_fail == alone.all_fail
        assert replica.grad_norm == pytest.approx(alone.grad_norm, rel=1e-4)
        # the same policy (parameters such as the key biases, whose gradient is zero up to
        # rounding, take Adam steps of rounding noise that no output depends on)
        tokens = torch.randint(2, (16, 5), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            torch.testing.assert_close(replica.model(tokens), alone.model(tokens), atol=1e-4,
                                       rtol=1e-4)  # fmt: skip


def test_replicas_match_separate_runs_in_distribution():
    """Over several seeds and a run long enough for trajectories to part, the replicas' mean
    final error and stuck share are the separate runs'."""
    from tpo_core.tokens import experiments
    from tpo_core.tokens.replicas import train_replicas
    from tpo_core.tokens.train import TrainConfig, train

    config = TrainConfig(episodes=25, algo="tpo", **TINY)
    seeds = [0, 1, 2, 3]
    together = train_replicas(config, seeds, progress=False)
    alone = [train(TrainConfig(**{**config.__dict__, "seed": s}), progress=False) for s in seeds]
    mean = [sum(r.final_error(5) for r in rs) / len(rs) for rs in (together, alone)]
    assert mean[0] == pytest.approx(mean[1], abs=0.05)
    stuck = [sum(experiments.is_stuck(r, last=5) for r in rs) for rs in (together, alone)]
    assert stuck[0] == stuck[1]


def test_one_replica_gradient_ignores_the_others():
    from tpo_core.tokens.algorithms import get_algorithm
    from tpo_core.tokens.replicas import Replicas
    from tpo_core.tokens.train import TrainConfig

    loss_fn = get_algorithm("grpo").loss
    grads = []
    for other in (1, 7):  # replica 0 next to two different neighbours
        replicas = Replicas(TrainConfig(algo="grpo", **TINY), [0, other])
        batches = replicas.rollouts("copy", "terminal", 12, 4)
        replicas.loss(batches, loss_fn).backward()
        grads.append([p.grad[0].clone() for p in replicas.params.values()])
        with torch.no_grad():  # a wild neighbour: scale replica 1's parameters
            for p in replicas.params.values():
                p[1] *= 3.0
                p.grad = None
        replicas.loss(batches, loss_fn).backward()
        grads.append([p.grad[0].clone() for p in replicas.params.values()])
    for g in grads[1:]:
        assert_same_gradients(g, grads[0])


def test_replica_optimisers_do_not_couple_replicas():
    """Muon orthogonalises matrix by matrix: a neighbour with 100x larger gradients leaves a
    replica's step as it was."""
    from tpo_core.tokens.replicas import Replicas
    from tpo_core.tokens.train import TrainConfig

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


def test_token_level_methods_are_refused_as_replicas():
    from tpo_core.tokens.replicas import train_replicas
    from tpo_core.tokens.train import TrainConfig

    with pytest.raises(ValueError, match="one seed at a time"):
        train_replicas(TrainConfig(algo="tpo_token", reward="bag", length=3), [0, 1])


def test_grid_with_replicas_writes_one_file_per_seed_with_provenance(tmp_path):
    from tpo_core.tokens import experiments

    configs = experiments.grid_configs(["tpo", "tpo_token"], [3], [0, 1, 2], task="copy",
                                       reward="bag", batch=6, k=3, episodes=2)  # fmt: skip
    paths = experiments.run_grid(configs, tmp_path, ["grid"], progress=False, replicas=2)
    assert all(experiments.is_complete(p, c) for p, c in zip(paths, configs, strict=True))
    runs = {r.config.seed: r for r in experiments.load_runs(tmp_path) if r.config.algo == "tpo"}
    assert [runs[s].provenance.get("replicas") for s in (0, 1, 2)] == [2, 2, None]
    token = [r for r in experiments.load_runs(tmp_path) if r.config.algo == "tpo_token"]
    assert len(token) == 3 and all("replicas" not in r.provenance for r in token)


# ---------------------------------------------------------------- options matching the paper's code


def test_nesterov_adam_is_optax_nesterov_adam():
    from tpo_core.tokens.model import NesterovAdam

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    expected = w.detach().clone()
    opt = NesterovAdam([w], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    m = v = torch.zeros(5, dtype=torch.float64)
    for t in range(1, 4):
        g = torch.randn(5, dtype=torch.float64)
        w.grad = g
        opt.step()
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g  # optax scale_by_adam, nesterov
        m_hat = 0.9 * m / (1 - 0.9 ** (t + 1)) + 0.1 * g / (1 - 0.9**t)
        expected -= 0.1 * m_hat / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
        torch.testing.assert_close(w.detach(), expected)


def test_muon_takes_qkv_biases_as_head_matrices_with_the_reference_scale():
    from tpo_core.tokens.model import ModelConfig, Muon, TinyTransformer, make_optimizers

    model = TinyTransformer(ModelConfig(vocab=2, length=3))
    muon, adam = make_optimizers(model, lr=1.0, muon_qkv_bias=True)
    bias = model.blocks[0].q.bias
    assert any(p is bias for g in muon.param_groups for p in g["params"])
    assert not any(p is bias for g in adam.param_groups for p in g["params"])
    before = bias.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    bias.grad = torch.randn(64)
    muon.step()
    matrix = bias.grad.view(2, 32).T  # (head_dim, heads), scale sqrt(max(1, 32 / 2)) = 4
    # first step: momentum buffer 0.05 g, Nesterov update 0.05 g + 0.95 * 0.05 g
    ortho = Muon.orthogonalise(0.0975 * matrix, 5, (3.4445, -4.7750, 2.0315), 1e-7, torch.float32)
    torch.testing.assert_close(bias.detach() - before, -4.0 * ortho.T.flatten())


def test_model_options_reach_the_model():
    from tpo_core.tokens.model import TRUNCATED_STD, ModelConfig, TinyTransformer

    torch.manual_seed(0)
    model = TinyTransformer(ModelConfig(vocab=2, length=3, layernorm_eps=1e-6, gelu="tanh",
                                        init="truncated_normal", d_model=256))  # fmt: skip
    w = model.blocks[0].up.weight  # fan_in 256: std 1/16, cut at 2 / (16 * 0.8796)
    assert w.abs().max() <= 2 / 16 / TRUNCATED_STD + 1e-6
    assert w.std().item() == pytest.approx(1 / 16, rel=0.02)
    assert model.blocks[0].ln1.eps == 1e-6 and model.ln_f.eps == 1e-6
    x = torch.randn(3, 1024)
    block = model.blocks[0]
    assert block.gelu == "tanh"
    torch.testing.assert_close(
        torch.nn.functional.gelu(x, approximate=block.gelu),
        0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    )
    with pytest.raises(ValueError, match="gelu"):
        ModelConfig(vocab=2, length=3, gelu="relu")


def test_grpo_summed_over_k_is_k_times_the_mean_and_only_for_grpo():
    from tpo_core.tokens.train import TrainConfig, loss_function

    model, batch = model_and_repetitive_batch()
    mean = loss_function(TrainConfig(algo="grpo", k=4))(model, batch)
    summed = loss_function(TrainConfig(algo="grpo", k=4, grpo_sum_over_k=True))(model, batch)
    torch.testing.assert_close(summed, 4 * mean)
    with pytest.raises(ValueError, match="sequence-level GRPO"):
        TrainConfig(algo="tpo", grpo_sum_over_k=True).validate()


def test_cli_builds_boolean_and_choice_options_from_the_config():
    from tpo_core.__main__ import build_parser

    args = build_parser().parse_args(
        ["train", "--out", "x", "--muon-qkv-bias", "--gelu", "tanh", "--newton-schulz", "bfloat16"]
    )
    assert args.muon_qkv_bias is True and args.adam_nesterov is False
    assert args.gelu == "tanh" and args.newton_schulz == "bfloat16"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--init", "uniform"])
