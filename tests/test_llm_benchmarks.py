"""The GPU scripts (benchmarks/gpu_check.py, benchmarks/llm_step.py) run at toy size on a CPU,
so they do not rot between the runs on a GPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_script_runs_every_check_at_toy_size(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = (
        "large",
        "small_t4",
        "session",
        "log_probs",
        "generation",
        "sampler",
        "overflow_guard",
        "resume",
        "trl",
        "notebook_flow",
        "token_engine",
    )
    assert all(name in report and "error" not in report[name] for name in checks)
    step = {
        "seconds_per_step",
        "generate_seconds",
        "train_seconds",
        "generate_peak_gib",
        "train_peak_gib",
        "generation_tokens_per_second",
        "truncated",
        "skipped",
        "overflowed_steps",
    }
    predictions = {"predicted_generation_gib", "predicted_training_gib"}
    for loss in ("tpo", "grpo_per_token"):  # TPO against GRPO at the large shape
        run = report["large"][loss]
        assert step | predictions <= set(run) and run["train_seconds"] > 0
        assert run["generate_peak_gib"] is None and run["train_peak_gib"] is None  # GPU only
    assert report["large"]["tpo_over_grpo_train_seconds"] > 0
    assert step <= set(report["small_t4"]) and report["small_t4"]["skipped"] == 0
    session = report["session"]
    assert step <= set(session["measured"]) and session["predicted_step"] is None
    log_probs = report["log_probs"]
    assert log_probs["largest_difference"] < 1e-4
    assert log_probs["chunked"]["peak_gib"] is None and log_probs["whole_logits"]["seconds"] > 0
    generation = report["generation"]
    assert generation["base_weights_identical_after_merging"] is True
    assert generation["merged"]["tokens_per_second"] > 0
    sampler = report["sampler"]
    assert sampler["largest_difference"] < 1e-4 and sampler["mean_log_prob"] < -0.1
    assert sampler["saved_generation_config"]["temperature"] == 0.6
    assert len(sampler["prompt_lengths"]) > 1  # left padding of mixed lengths
    resume = report["resume"]  # on a CPU a resumed run is the uninterrupted one, bit for bit
    assert resume["steps"] == 2 and resume["largest_weight_difference"] == 0.0
    assert resume["largest_metric_difference"] == {"reward": 0.0, "grad_norm": 0.0}
    trl = report["trl"]
    assert trl["steps"] == 2 and trl["losses_finite"] and trl["adapter_moved"]
    flow = report["notebook_flow"]
    assert all(flow[part]["seconds"] > 0 for part in ("first_step", "runs", "replay"))
    assert flow["evaluations"] == {"tpo": 1, "grpo_per_token": 1}
    guard = report["overflow_guard"]
    assert guard["overflowed"] is True and guard["overflowed_without_the_fault"] is False
    assert guard["finite_log_probs"] is True
    assert report["small_t4"]["overflowed_steps"] == 0
    chunked = report["log_probs"]["chunked"]
    assert {"peak_gib", "peak_reserved_gib"} <= set(chunked) and chunked[
        "peak_reserved_gib"
    ] is None
    assert report["token_engine"]["replicas"] == 2
    provenance = report["provenance"]
    assert provenance["git_commit"]
    assert all(provenance["libraries"][name] for name in ("torch", "transformers", "peft"))


def test_gpu_benchmark_script_runs_on_a_toy_shape():
    """benchmarks/llm_step.py is a GPU check; its --tiny mode keeps it from rotting on CPU."""
    script = BENCHMARKS / "llm_step.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--tiny", "--steps", "2", "--max-new-tokens", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    for loss in ("tpo", "grpo_per_token"):
        assert report[loss]["seconds_per_step"] > 0 and report[loss]["loss_seconds"] > 0
        assert report[loss]["generation_tokens_per_second"] > 0
    assert "tpo_loss_overhead_share_of_step" in report


def test_cpu_memory_script_compares_both_variants_on_a_local_model(tiny_model):
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "llm_cpu_memory.py"), "--model", str(tiny_model)]
        + ["--steps", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    for variant in ("keep", "trim"):
        run = report[variant]
        assert run["steps"] == 2 and run["seconds_per_step"] > 0
        assert run["peak_total_mb"] >= run["peak_anon_mb"] > 0
    assert set(report["trim_over_keep"]) == {"peak_total_mb", "peak_anon_mb", "seconds_per_step"}
