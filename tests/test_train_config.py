"""TrainConfig: what defines a run, its checks, its device, the options that match the paper's
code and the one beyond it (skip_signal_free); the command line built from it."""

import dataclasses
import math

import pytest
import torch

from tpo_core.__main__ import build_parser
from tpo_core.tokens.config import RunSettings
from tpo_core.tokens.grid import load_runs, run_name, shipped_runs
from tpo_core.tokens.model import TRUNCATED_STD, ModelConfig, TinyTransformer
from tpo_core.tokens.rollouts import sequence_rollouts
from tpo_core.tokens.train import (
    TrainConfig,
    TrainResult,
    initial_model,
    is_signal_free,
    learn,
    loss_function,
    optimizers_for,
    train,
)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(lr=math.inf), "lr must be in"),
        (dict(lr=math.nan), "lr must be in"),
        (dict(layernorm_eps=-1.0), "layernorm_eps must be a positive finite"),
        (dict(layernorm_eps=0.0), "layernorm_eps must be a positive finite"),
        (dict(method="pg", k=0), "k must be at least 1"),
        (dict(method="ppo", k=-2, match="interactions"), "k must be at least 1"),
        (dict(seed=-1), "seed must be in"),
        (dict(method="pg", skip_signal_free=True), "has no groups"),
    ],
)
def test_settings_that_would_crash_mid_run_are_refused_up_front(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).validate()


def test_resolved_settings_are_computed_once_as_attributes():
    config = TrainConfig(method="ppo", batch=10, k=8, match="interactions", device="cpu")
    assert config.resolved is config.resolved  # one object per config
    assert config.resolved == RunSettings(
        batch=80, k=1, lr=pytest.approx(1e-3 * math.sqrt(8)), epochs=4, device="cpu"
    )


def test_device_is_a_setting_and_defaults_to_cuda_only_when_there_is_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert TrainConfig().resolved.device == expected
    assert TrainConfig(device="cpu").resolved.device == "cpu"
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        TrainConfig(device="tpu").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            TrainConfig(device="cuda").validate()


def test_explicit_cpu_device_is_the_same_run_and_keeps_everything_there():
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


def test_runs_stored_before_a_setting_existed_load_with_the_value_they_ran_with():
    assert TrainConfig().newton_schulz == "float32"
    assert TrainConfig.from_dict({"method": "grpo"}).newton_schulz == "bfloat16"
    assert TrainConfig.from_dict({"method": "grpo"}).skip_signal_free is False
    for name in ("sparse_h6", "sparse_h7"):
        runs = shipped_runs(name)
        assert [run_name(r.config) for r in runs] == [r.source.rsplit("/", 1)[-1] for r in runs]


def test_results_with_fields_since_removed_still_load(tmp_path):
    """Old files hold per-episode group diagnostics (``groups``) and name the method ``algo``;
    a missing value is null."""
    (tmp_path / "old.json").write_text(
        '{"config": {"algo": "tpo", "episodes": 2}, "error": [0.5, 0.25], "grad_norm": [1.0, null],'
        ' "all_fail": [0.1, 0.0], "seconds_per_episode": null,'
        ' "groups": {"p_success": [null, 0.5], "q_success": [null, 0.7]}}'
    )
    (run,) = load_runs(tmp_path)
    assert run.error == [0.5, 0.25] and run.grad_norm[0] == 1.0 and math.isnan(run.grad_norm[1])
    assert math.isnan(run.seconds_per_episode) and run.skipped == []
    assert "groups" not in run.to_dict() and not hasattr(run, "groups")


def test_model_options_reach_the_model():
    torch.manual_seed(0)
    options = dict(layernorm_eps=1e-6, gelu="tanh", init="truncated_normal", d_model=256)
    model = TinyTransformer(ModelConfig(vocab=2, length=3, **options))
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
    model = initial_model(TrainConfig(length=3))
    batch = sequence_rollouts(model, "copy", "bag", 6, 4, torch.Generator().manual_seed(0))
    mean = loss_function(TrainConfig(method="grpo", k=4))(model, batch)
    summed = loss_function(TrainConfig(method="grpo", k=4, grpo_sum_over_k=True))(model, batch)
    torch.testing.assert_close(summed, 4 * mean)
    with pytest.raises(ValueError, match="sequence-level GRPO"):
        TrainConfig(method="tpo", grpo_sum_over_k=True).validate()


def test_cli_builds_boolean_and_choice_options_from_the_config():
    args = build_parser().parse_args(
        ["train", "--out", "x", "--muon-qkv-bias", "--gelu", "tanh", "--newton-schulz", "bfloat16"]
    )
    assert args.muon_qkv_bias is True and args.adam_nesterov is False
    assert args.gelu == "tanh" and args.newton_schulz == "bfloat16"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--init", "uniform"])


def test_cli_takes_seed_ranges_and_the_skip_option():
    args = build_parser().parse_args(
        ["grid", "--methods", "tpo", "--lengths", "10", "--seeds", "0..19", "3"]
        + ["--episodes", "2000", "--skip-signal-free", "--out", "x"]
    )
    assert args.seeds == [list(range(20)), [3]] and args.skip_signal_free is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["grid", "--seeds", "0..x", "--out", "x"])


# ---------------------------------------------------------------- skip_signal_free


def two_updates(skip: bool, scores: str):
    """A model and its optimisers after one update on an informative batch (so that they have
    momentum), then a second update on a batch whose groups are ``scores``: "mixed" or
    "flat" (every answer fails). Returns the state before and after the second update."""
    config = TrainConfig(task="copy", length=3, batch=8, k=4, device="cpu", skip_signal_free=skip)
    model = initial_model(config)
    optimizers, loss = optimizers_for(config, model), loss_function(config)
    generator = torch.Generator().manual_seed(0)
    result = TrainResult(config)
    learn(
        config,
        model,
        optimizers,
        loss,
        sequence_rollouts(model, "copy", "bag", 8, 4, generator),
        result,
    )
    batch = sequence_rollouts(model, "copy", "bag", 8, 4, generator)  # from the current policy
    if scores == "flat":
        batch = dataclasses.replace(batch, rewards=torch.zeros_like(batch.rewards))
    assert is_signal_free(batch) == (scores == "flat")

    def state():
        params = [p.detach().clone() for p in model.parameters()]
        states = [s for opt in optimizers for s in opt.state.values()]
        moments = [torch.as_tensor(v).clone() for s in states for v in s.values()]
        return params, moments

    before = state()
    learn(config, model, optimizers, loss, batch, result)
    return before, state(), result


def unchanged(before: list, after: list) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_skip_signal_free_leaves_parameters_and_optimiser_state_untouched():
    (params, moments), (params_after, moments_after), result = two_updates(True, "flat")
    assert unchanged(params, params_after) and unchanged(moments, moments_after)
    assert result.skipped == [0, 1]
    assert result.grad_norm[1] < 1e-3 * result.grad_norm[0]  # rounding level, still recorded


@pytest.mark.parametrize(("skip", "scores"), [(False, "flat"), (True, "mixed")])
def test_without_the_option_or_with_signal_the_step_is_taken(skip, scores):
    (params, moments), (params_after, moments_after), result = two_updates(skip, scores)
    assert not unchanged(params, params_after) and not unchanged(moments, moments_after)
    assert result.skipped == [0, 0]


def test_skip_signal_free_is_recorded_named_and_stored():
    config = TrainConfig(length=10, batch=4, k=2, episodes=3, device="cpu", skip_signal_free=True)
    result = train(config, progress=False)
    start = initial_model(config)
    assert result.skipped == [1, 1, 1]  # 8 answers among 2^10: every group fails
    assert unchanged(list(start.parameters()), list(result.model.parameters()))
    assert result.to_dict()["skipped"] == [1, 1, 1]
    assert "-skip-signal-free-" in run_name(config) and "skip" not in run_name(TrainConfig())
